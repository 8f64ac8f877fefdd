import pytest
import torch

from llm_finetune.evaluation.generation import generate_responses
from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from tests.conftest import alpaca_record


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    records = [alpaca_record("Add the numbers.", "5", "2 + 3"), alpaca_record("Say hi", "hi"),
               alpaca_record("Convert the date 1999-06-15 to the format 'day month year'.", "15 June 1999")]
    batched, timing = generate_responses(model, tokenizer, records, "alpaca", batch_size=3, max_new_tokens=12)
    single = [generate_responses(model, tokenizer, [r], "alpaca", batch_size=1, max_new_tokens=12)[0][0]
              for r in records]
    assert batched == single
    assert timing["rows"] == 3 and timing["new_tokens"] > 0


def test_stop_strings_cut_the_response_and_sampling_is_seeded(tiny_model_dir):
    from llm_finetune.evaluation.generation import Decoding, generate_from_ids

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    prompts = [tokenizer("Add the numbers 2 and 3").input_ids, tokenizer("Say hi").input_ids]
    greedy, _ = generate_from_ids(model, tokenizer, prompts, 2, Decoding(max_new_tokens=10))
    stop = greedy[0].split()[1] if len(greedy[0].split()) > 1 else greedy[0][:2]
    cut, _ = generate_from_ids(model, tokenizer, prompts, 2, Decoding(max_new_tokens=10, stop_strings=(stop,)))
    assert stop not in cut[0] and greedy[0].startswith(cut[0])
    sampled = Decoding(max_new_tokens=10, do_sample=True, temperature=1.5, seed=5)
    first, _ = generate_from_ids(model, tokenizer, prompts, 2, sampled)
    assert generate_from_ids(model, tokenizer, prompts, 2, sampled)[0] == first


def test_decoding_parameters_are_validated():
    from llm_finetune.evaluation.generation import Decoding

    assert Decoding.from_params({"max_new_tokens": 8, "batch_size": 4, "stop_strings": ["###"]}).stop_strings == ("###",)
    with pytest.raises(ValueError, match="Bad decoding"):
        Decoding.from_params({"max_new_tokens": 0})


def test_generation_stops_at_every_end_id_of_the_models_generation_config(tiny_model_dir):
    """Before, eos_token_id=tokenizer.eos_token_id overrode the model's own end ids (Llama-3's <|eot_id|>)."""
    from llm_finetune.evaluation.generation import Decoding, end_token_ids, generate_from_ids

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    prompt = tokenizer("Add the numbers 2 and 3").input_ids
    with torch.no_grad():
        free = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                              eos_token_id=None, pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
    turn_end = next(t for t in free[1:] if t != tokenizer.eos_token_id)  # a token the model does emit
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, turn_end]
    assert end_token_ids(model, tokenizer) == [tokenizer.eos_token_id, turn_end]
    (response,), timing = generate_from_ids(model, tokenizer, [prompt], 1, Decoding(max_new_tokens=6))
    assert timing["new_tokens"] == free.index(turn_end) + 1 < 6
    assert response == tokenizer.decode(free[: free.index(turn_end)], skip_special_tokens=True).strip()


def test_generation_stops_at_the_templates_end_of_turn_token(tiny_model_dir):
    """A template's single-token stop (chatml's <|im_end|>, llama3's <|eot_id|>) ends generation as an id;
    before, only EOS and generation_config ended it, so such a model generated to max_new_tokens."""
    from llm_finetune.evaluation.generation import Decoding
    from llm_finetune.tokens.conversations import encode_prompts
    from llm_finetune.tokens.templates import ChatTemplate, stop_token_ids

    model = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    record = alpaca_record("Add the numbers 2 and 3", "5")
    plain = ChatTemplate.from_yaml("user: '{content}\n'\nanswer_suffix: '{eos}'", "plain")
    prompt = encode_prompts([record], plain, tokenizer)[0]
    with torch.no_grad():
        free = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                              eos_token_id=None, pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
    position, marker = next((i, t) for i, t in enumerate(free) if i > 0 and t != tokenizer.eos_token_id
                            and tokenizer(tokenizer.decode([t]), add_special_tokens=False).input_ids == [t])
    stopping = ChatTemplate.from_yaml(plain.source + f"\nstop: [{tokenizer.decode([marker])!r}]", "stopping")
    assert stop_token_ids(stopping, tokenizer) == [marker]
    (response,), timing = generate_responses(model, tokenizer, [record], stopping, 1,
                                             decoding=Decoding(max_new_tokens=8))
    assert timing["new_tokens"] == free.index(marker) + 1 <= position + 1 < 8
    assert response == tokenizer.decode(free[: free.index(marker)], skip_special_tokens=True).strip()
