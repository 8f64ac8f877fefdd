"""The trained-token loss equals the model's own loss, in value and in gradients."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from llm_finetune.tokens.conversations import IGNORE_INDEX
from llm_finetune.tokens.packing import PadCollator, pack_rows
from llm_finetune.training.numerics import supports_trained_token_loss, trained_token_loss

LORA = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")


def rows(vocab: int, lengths=(9, 14, 5, 11)) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=generator).tolist()
        prompt = n // 2  # the first half is the prompt: not trained
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def lora_llama(tiny_model_dir):
    torch.manual_seed(1)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), LORA)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # non-zero B so every LoRA weight gets a gradient
            torch.nn.init.normal_(parameter, std=0.02)
    return model


def loss_and_gradients(model, batch: dict, gathered: bool, num_items=None):
    model.zero_grad()
    if gathered:
        loss = trained_token_loss(model, batch, num_items)
    else:
        loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(expected, actual):
    torch.testing.assert_close(actual[0], expected[0], atol=1e-6, rtol=1e-5)
    assert expected[1] and expected[1].keys() == actual[1].keys()
    for name, gradient in expected[1].items():
        torch.testing.assert_close(actual[1][name], gradient, atol=1e-6, rtol=1e-4, msg=name)


def test_padded_batch_same_loss_and_gradients_as_the_model(tiny_model_dir):
    model = lora_llama(tiny_model_dir)
    batch = PadCollator(pad_token_id=0)(rows(model.config.vocab_size))
    assert supports_trained_token_loss(model)
    assert_same(loss_and_gradients(model, batch, gathered=False), loss_and_gradients(model, batch, gathered=True))


def test_right_padding_needs_no_attention_mask(tiny_model_dir):
    model = lora_llama(tiny_model_dir)
    data = rows(model.config.vocab_size)
    masked = PadCollator(pad_token_id=0)(data)
    unmasked = PadCollator(pad_token_id=0, attention_mask=False)(data)
    assert "attention_mask" in masked and "attention_mask" not in unmasked
    assert_same(loss_and_gradients(model, masked, gathered=False), loss_and_gradients(model, unmasked, gathered=True))


def test_packed_rows_same_loss_as_the_model(tiny_model_dir):
    model = lora_llama(tiny_model_dir)
    batch = PadCollator(pad_token_id=0)(pack_rows(rows(model.config.vocab_size), "greedy", 24))
    assert "position_ids" in batch
    assert_same(loss_and_gradients(model, batch, gathered=False), loss_and_gradients(model, batch, gathered=True))


def test_divides_by_the_accumulated_trained_token_count(tiny_model_dir):
    model = lora_llama(tiny_model_dir)
    batch = PadCollator(pad_token_id=0)(rows(model.config.vocab_size))
    trained = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    mean = trained_token_loss(model, batch)
    torch.testing.assert_close(trained_token_loss(model, batch, num_items_in_batch=3 * trained), mean / 3)


def test_gemma_final_soft_capping_is_applied(tiny_model_dir):
    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                              final_logit_softcapping=0.5, sliding_window=8)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).float()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(100)  # logits large enough for the cap to bite
    batch = PadCollator(pad_token_id=0)(rows(64))
    assert supports_trained_token_loss(model)
    assert_same(loss_and_gradients(model, batch, gathered=False), loss_and_gradients(model, batch, gathered=True))
    capped = trained_token_loss(model, batch).detach()
    model.config.final_logit_softcapping = None  # the cap matters here, so the equality above tested it
    assert abs(trained_token_loss(model, batch).item() - capped.item()) > 1e-3


def test_other_architectures_keep_their_own_loss():
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    assert not supports_trained_token_loss(model)
