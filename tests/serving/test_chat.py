"""`llm-finetune chat`: multi-turn prompts in the training template, streamed replies, /reset, /exit.

On the tiny random Llama (its replies are noise; this checks the conversation's rendering, the
streaming and the commands) and, where one was trained in the test, an sft adapter with its template.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llm_finetune.commands import main
from llm_finetune.evaluation.generation import Decoding
from llm_finetune.serving.chat import ChatModel, Conversation, latest_folder


@pytest.fixture(scope="module")
def chat(tiny_model_dir):
    # sampled (seeded): the tiny random model's greedy reply is blank lines
    return ChatModel.load(model=tiny_model_dir, template="alpaca",
                          decoding=Decoding(max_new_tokens=6, do_sample=True, temperature=1.0, seed=5))


def test_a_second_turn_is_the_first_exchange_then_the_new_message(chat):
    conversation = Conversation()
    first_prompt = conversation.prompt_ids("Name a colour.", chat)
    reply = conversation.reply("Name a colour.", chat)
    second_prompt = conversation.prompt_ids("And another?", chat)
    assert second_prompt[: len(first_prompt)] == first_prompt
    second_text = chat.tokenizer.decode(second_prompt[len(first_prompt):])
    assert reply.strip() and reply in second_text and second_text.rstrip().endswith("And another?\n\n### Response:")
    assert [m["role"] for m in conversation.messages] == ["user", "assistant"]
    conversation.reset()
    assert conversation.prompt_ids("Name a colour.", chat) == first_prompt


def test_seeded_replies_repeat_and_the_history_changes_them(chat):
    one, two = Conversation(), Conversation()
    assert one.reply("Say hi.", chat) == two.reply("Say hi.", chat) != ""
    one.reply("Say hi.", chat)
    assert one.prompt_ids("Again.", chat) != two.prompt_ids("Again.", chat)


def test_the_chat_command_streams_replies_and_obeys_reset_and_exit(tiny_model_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["chat", "--model", str(tiny_model_dir), "--template", "alpaca",
                                  "--max-new-tokens", "6", "--temperature", "1.0", "--seed", "5"],
                           input="Hello\n/reset\nHello\n/exit\nignored\n")
    assert result.exit_code == 0, result.output
    conversation = Conversation()  # the same sampled reply (seeded), as the command streamed it
    expected = conversation.reply("Hello", ChatModel.load(model=tiny_model_dir, template="alpaca", decoding=Decoding(
        max_new_tokens=6, do_sample=True, temperature=1.0, seed=5)))
    # streamed twice: /reset made the second turn a first turn again; nothing after /exit was answered
    assert expected.strip() and result.stdout.count(expected) == 2
    assert "(conversation reset)" in result.stderr


def test_latest_adapter_and_missing_folders_are_named(tmp_path):
    for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
        (tmp_path / "sft" / "adapter" / version / "adapter").mkdir(parents=True)
    assert latest_folder("sft", tmp_path).parent.name == "2026-02-01T00.00.00.000Z"
    with pytest.raises(FileNotFoundError, match="kedro run --pipeline dpo"):
        latest_folder("dpo", tmp_path)
    result = CliRunner().invoke(main, ["chat", "--adapter", "latest", "--stage", "kto"])
    assert result.exit_code != 0 and "holds no adapter yet" in result.output


def test_an_adapter_chats_in_the_template_it_was_trained_with(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from llm_finetune.models.loading import load_causal_lm, load_tokenizer
    from llm_finetune.tokens.settings import TEMPLATE_FILE, saved_template

    tokenizer = load_tokenizer(tiny_model_dir)
    model = get_peft_model(load_causal_lm(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    tokenize = {"template": "chatml", "cutoff_len": 64, "loss_on": "assistant", "truncation": "truncate_response",
                "packing": "none"}
    (adapter / TEMPLATE_FILE).write_text(json.dumps(saved_template(tokenize, tokenizer)))
    chat = ChatModel.load(adapter=adapter, decoding=Decoding(max_new_tokens=3))
    assert "<|im_start|>user\nHi" in chat.tokenizer.decode(Conversation().prompt_ids("Hi", chat))
    with pytest.raises(ValueError, match="trained with 'chatml'"):
        ChatModel.load(adapter=adapter, template="alpaca")


def test_chat_is_a_command_of_python_m_llm_finetune_commands_too():
    """The module's ``__main__`` block runs after every command is defined (it once ran before ``chat``)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run([sys.executable, "-m", "llm_finetune.commands", "chat", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "/reset" in result.stdout, result.stderr[-2000:]
