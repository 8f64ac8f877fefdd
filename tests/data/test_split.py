import json

import pytest

from llm_finetune.data.split import split_records
from tests.conftest import real_data


def rows(n):
    return [{"id": i} for i in range(n)]


def test_book_proportions_on_1100_rows():
    train, val, test = split_records(rows(1100), 0.85, 0.10, seed=123)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    ids = [r["id"] for r in train + val + test]
    assert sorted(ids) == list(range(1100))


def test_seeded_and_reproducible():
    assert split_records(rows(200), 0.85, 0.1, seed=1) == split_records(rows(200), 0.85, 0.1, seed=1)
    assert split_records(rows(200), 0.85, 0.1, seed=1) != split_records(rows(200), 0.85, 0.1, seed=2)


def test_unshuffled_split_is_the_books():
    train, val, test = split_records(rows(1100), 0.85, 0.10, seed=0, shuffle=False)
    assert train == rows(935) and test == rows(1100)[935:1045] and val == rows(1100)[1045:]


def test_bad_fractions_and_too_few_rows():
    with pytest.raises(ValueError, match="fractions"):
        split_records(rows(10), 0.95, 0.1, seed=0)
    with pytest.raises(ValueError, match="too few"):
        split_records(rows(5), 0.85, 0.1, seed=0)


def test_the_books_own_data_splits_935_55_110():
    data = json.loads(real_data("book_instruction_data.json").read_text())
    train, val, test = split_records(data, 0.85, 0.10, seed=0, shuffle=False)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
