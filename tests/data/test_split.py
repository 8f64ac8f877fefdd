import json

import pytest

from llm_finetune.data.split import hash_fraction, split_records
from tests.conftest import real_data


def rows(n, start=0):
    return [{"messages": [{"role": "user", "content": f"q{i}"}], "meta": {"row": i}} for i in range(start, start + n)]


def ids(records):
    return [r["messages"][0]["content"] for r in records]


def test_hash_split_is_close_to_the_fractions_and_reproducible():
    train, val, test = split_records(rows(2000), 0.85, 0.10, seed=123)
    assert abs(len(train) - 1700) < 60 and abs(len(test) - 200) < 45 and len(train) + len(val) + len(test) == 2000
    assert (train, val, test) == split_records(rows(2000), 0.85, 0.10, seed=123)
    assert ids(split_records(rows(2000), 0.85, 0.10, seed=7)[2]) != ids(test)


def test_adding_rows_never_moves_an_existing_row():
    before = split_records(rows(500), 0.85, 0.10, seed=123)
    after = split_records(rows(500) + rows(10, start=500), 0.85, 0.10, seed=123)
    for old, new in zip(before, after):
        assert set(ids(old)) <= set(ids(new))
    assert sum(len(part) for part in after) == 510


def test_meta_does_not_move_a_row_and_identical_rows_share_a_split():
    record = rows(1)[0]
    assert hash_fraction(record, 1) == hash_fraction(record | {"meta": {"row": 99}}, 1)
    train, val, test = split_records(rows(300) + rows(300), 0.85, 0.10, seed=5)
    for part in (train, val, test):
        assert len(part) % 2 == 0 and len(set(ids(part))) * 2 == len(part)


def test_ordered_mode_is_the_books_split_and_shuffle_is_seeded():
    train, val, test = split_records(rows(1100), 0.85, 0.10, seed=0, mode="ordered")
    assert train == rows(935) and test == rows(1100)[935:1045] and val == rows(1100)[1045:]
    shuffled = split_records(rows(200), 0.85, 0.1, seed=1, mode="shuffle")
    assert shuffled == split_records(rows(200), 0.85, 0.1, seed=1, mode="shuffle")
    assert [len(p) for p in shuffled] == [170, 10, 20] and ids(shuffled[0]) != ids(rows(170))


def test_bad_fractions_mode_and_too_few_rows():
    with pytest.raises(ValueError, match="fractions"):
        split_records(rows(10), 0.95, 0.1, seed=0)
    with pytest.raises(ValueError, match="mode 'random' is not one of"):
        split_records(rows(10), 0.85, 0.1, seed=0, mode="random")
    with pytest.raises(ValueError, match="too few"):
        split_records(rows(5), 0.85, 0.1, seed=0, mode="ordered")


def test_the_books_own_data_splits_935_55_110():
    data = json.loads(real_data("book_instruction_data.json").read_text())
    train, val, test = split_records(data, 0.85, 0.10, seed=0, mode="ordered")
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert train[0] == data[0] and test[0] == data[935] and val[-1] == data[-1]
