from llm_finetune.evaluation.judging.local_judge import encode_judge_prompt, judge_with_local_model


def test_local_model_judges_every_record_with_the_http_judges_result_shape(tiny_model_dir):
    records = [{"prompt_input": "Add 2 and 3.", "reference": "5", "response": answer} for answer in ("5", "6", "five")]
    results = judge_with_local_model(records, tiny_model_dir, max_new_tokens=6)
    assert len(results) == 3
    for result in results:
        assert set(result) == {"score", "raw", "error", "attempts"}
        assert isinstance(result["raw"], str) and result["error"] is None
        assert result["score"] is None or 0 <= result["score"] <= 100
    assert judge_with_local_model(records, tiny_model_dir, max_new_tokens=6) == results


def test_judge_prompt_uses_the_chat_template(tiny_tokenizer):
    ids = encode_judge_prompt(tiny_tokenizer, "Rate this.")
    assert tiny_tokenizer.decode(ids) == "<|im_start|>user\nRate this.<|im_end|>\n<|im_start|>assistant\n"
