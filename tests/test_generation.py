import torch

from llm_finetune.generation import generate_responses
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
