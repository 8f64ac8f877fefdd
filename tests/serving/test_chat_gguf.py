"""`llm-finetune chat --gguf`: the GGUF export served by llama.cpp, the conversation rendered by the folder's
tokenizer and training template, replies streamed from the server. On the smol-vocab tiny model (its
replies are noise; greedy f32 makes them the transformers replies here, which the test checks)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from llm_finetune.commands import main
from llm_finetune.evaluation.generation import Decoding
from llm_finetune.pipelines.export.nodes import export_gguf, merge_adapter
from llm_finetune.serving.chat import ChatModel, Conversation, gguf_file_of

pytestmark = [pytest.mark.slow, pytest.mark.llm_server]
EXPORT = {"dtype": "float32", "format": "gguf", "gguf": {"types": ["f32"]}}


@pytest.fixture(scope="module")
def exported(smol_vocab_model_dir, smol_vocab_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("chat-export")
    merge_adapter(smol_vocab_model_dir, smol_vocab_adapter, None, EXPORT).write(out / "merged")
    export_gguf(out / "merged", EXPORT).write(out / "gguf")
    return out / "merged", out / "gguf"


class Collect:
    """A streamer that keeps what it is given (the prompt first, as transformers' streamers get it)."""

    def __init__(self):
        self.pieces, self.ended = [], False

    def put(self, value):
        self.pieces.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def test_a_gguf_chat_streams_the_transformers_reply_over_two_turns(exported):
    merged, gguf = exported
    decoding = Decoding(max_new_tokens=6)
    served = ChatModel.load_gguf(gguf, decoding, n_threads=2)
    local = ChatModel.load(model=merged, decoding=decoding)
    try:
        over_llama, over_torch, streamer = Conversation(), Conversation(), Collect()
        first = over_llama.reply("Name a colour.", served, streamer)
        assert streamer.ended and streamer.pieces[0] == Conversation().prompt_ids("Name a colour.", served)
        streamed = [t for t in sum(streamer.pieces[1:], []) if t not in served.end_ids]
        assert streamed and served.tokenizer.decode(streamed, skip_special_tokens=True).strip() == first
        assert first == over_torch.reply("Name a colour.", local)
        second = over_llama.reply("And another?", served)
        assert second == over_torch.reply("And another?", local)
        assert over_llama.prompt_ids("Thanks", served) == over_torch.prompt_ids("Thanks", local)
    finally:
        served.close()
    assert served.source.endswith("model-f32.gguf (llama.cpp)") and gguf_file_of(gguf)[1].name == "model-f32.gguf"


def test_the_chat_command_talks_to_a_gguf_and_names_a_folder_that_is_not_one(exported, tmp_path):
    _, gguf = exported
    result = CliRunner().invoke(main, ["chat", "--gguf", str(gguf), "--max-new-tokens", "4"], input="Hello\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "model-f32.gguf (llama.cpp)" in result.stderr
    result = CliRunner().invoke(main, ["chat", "--gguf", str(tmp_path)], input="Hello\n")
    assert result.exit_code != 0 and "holds no .gguf file" in result.output
