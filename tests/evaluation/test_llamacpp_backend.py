"""``generate.backend: llamacpp``: the tuned model (base + adapter) exported to GGUF on the fly, served
by llama.cpp, prompted with the same training-template ids, answers decoded the same way; the
response rows match the transformers backend's layout. Mistakes fail in the sft preflight."""

from __future__ import annotations

import pytest

from llm_finetune.evaluation.generation import check_generate_params
from llm_finetune.models.gguf_export import GgufExportError
from llm_finetune.pipelines.evaluation.nodes import generate_tuned_responses
from tests.conftest import alpaca_record

GENERATE = {"batch_size": 4, "max_new_tokens": 6, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
            "seed": 123, "stop_strings": [], "template": None, "max_rows": None, "precision": "fp32"}
LLAMACPP = {"gguf_type": "f32", "concurrency": 2, "n_threads": 2, "converter_dir": None}


@pytest.mark.slow
@pytest.mark.llm_server
def test_llamacpp_backend_answers_like_transformers_in_the_same_rows(smol_vocab_model_dir, smol_vocab_adapter):
    records = [alpaca_record(f"Name colour number {i}.", "Red") for i in range(4)] + [
        alpaca_record("Translate to French.", "Bonjour", user_input="Hello")]
    ours, our_timing = generate_tuned_responses(records, smol_vocab_model_dir, smol_vocab_adapter, GENERATE)
    served, timing = generate_tuned_responses(records, smol_vocab_model_dir, smol_vocab_adapter,
                                              GENERATE | {"backend": "llamacpp", "llamacpp": LLAMACPP})
    assert timing["backend"] == "llamacpp" and our_timing["backend"] == "transformers"
    assert timing["gguf_type"] == "f32" and timing["rows"] == 5 and timing["concurrency"] == 2
    assert [set(r) for r in served] == [set(r) for r in ours]
    assert [r["instruction"] for r in served] == [r["instruction"] for r in ours]
    same = sum(a["model_response"] == b["model_response"] for a, b in zip(ours, served))
    assert same >= 4, [(a["model_response"], b["model_response"]) for a, b in zip(ours, served)]


@pytest.mark.parametrize("change, error, message", [
    ({"backend": "vllm"}, ValueError, "generate.backend must be one of"),
    ({"backend": "llamacpp", "llamacpp": {"gguf_type": "q2"}}, GgufExportError, "export.gguf.types must name"),
    ({"backend": "llamacpp", "llamacpp": {"converter_dir": "/nowhere"}}, GgufExportError, "--target /nowhere"),
    ({"backend": "llamacpp", "llamacpp": {"concurrency": 0}}, ValueError, "concurrency must be at least 1"),
])
def test_generation_backend_mistakes_fail_in_preflight(change, error, message):
    with pytest.raises(error, match=message):
        check_generate_params(GENERATE | change)
    assert check_generate_params(GENERATE) == {"backend": "transformers"}
