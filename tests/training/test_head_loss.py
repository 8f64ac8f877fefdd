"""The chunked cross-entropy over a frozen head: the plain path's numbers, one chunk's memory, compiled too."""

import pytest
import torch
import torch.nn.functional as F

from llm_finetune.training.head_loss import compiled_head_loss, fusable_head_weight, head_cross_entropy
from llm_finetune.training.numerics import trained_token_loss
from tests.training.test_numerics import lora_llama, rows

VOCAB, HIDDEN = 300, 24


def inputs(n: int, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, HIDDEN, generator=generator).to(dtype)
    weight = (torch.randn(VOCAB, HIDDEN, generator=generator) * 0.3).to(dtype)
    return hidden, weight, torch.randint(0, VOCAB, (n,), generator=generator)


def plain(hidden, weight, targets, divisor):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum") / divisor


def loss_and_grad(loss_fn, hidden, *args, autocast=False):
    hidden = hidden.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(hidden, *args)
    loss.backward()
    return loss.detach(), hidden.grad


@pytest.mark.parametrize("chunk", [None, 1, 4, 7])
@pytest.mark.parametrize("dtype,autocast", [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True)])
def test_same_loss_and_gradient_as_the_plain_cross_entropy(chunk, dtype, autocast):
    hidden, weight, targets = inputs(23, dtype)
    expected = loss_and_grad(plain, hidden, weight, targets, 17, autocast=autocast)
    actual = loss_and_grad(lambda h, *a: head_cross_entropy(h, *a, chunk_tokens=chunk), hidden, weight, targets, 17,
                           autocast=autocast)
    assert actual[1].dtype == hidden.dtype
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-6 if dtype == torch.float32 and not autocast else 1e-2,
                               atol=1e-7)


def test_backward_scales_by_the_upstream_gradient_and_divisor_may_be_a_tensor():
    hidden, weight, targets = inputs(9)
    once = loss_and_grad(lambda h, *a: head_cross_entropy(h, *a, chunk_tokens=2), hidden, weight, targets, 9)
    thrice = loss_and_grad(lambda h, *a: 3 * head_cross_entropy(h, *a, chunk_tokens=2), hidden, weight, targets,
                           torch.tensor(9))
    torch.testing.assert_close(thrice[1], 3 * once[1])


def test_the_graph_keeps_the_hidden_gradient_and_no_logits():
    hidden, weight, targets = inputs(40)
    loss = head_cross_entropy(hidden.clone().requires_grad_(), weight, targets, 40, chunk_tokens=8)
    saved = [tuple(t.shape) for t in loss.grad_fn.saved_tensors]
    assert saved == [(40, HIDDEN)]  # the plain path keeps [40, VOCAB] logits or log-probs for its backward


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight, targets = inputs(12)
    with torch.no_grad():
        loss = head_cross_entropy(hidden, weight, targets, 5, chunk_tokens=5)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, plain(hidden, weight, targets, 5), rtol=1e-6, atol=1e-6)


def test_compiled_chunks_match_eager_ones():
    hidden, weight, targets = inputs(31, torch.bfloat16)
    eager = loss_and_grad(lambda h, *a: head_cross_entropy(h, *a, chunk_tokens=8), hidden, weight, targets, 31)
    with compiled_head_loss():
        compiled = loss_and_grad(lambda h, *a: head_cross_entropy(h, *a, chunk_tokens=8), hidden, weight, targets, 31)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-2, atol=1e-5)


def test_only_a_frozen_whole_bias_free_linear_head_is_fused():
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    assert fusable_head_weight(head) is None  # trainable: its weight would need a gradient
    head.weight.requires_grad_(False)
    assert fusable_head_weight(head) is head.weight
    with pytest.raises(ValueError, match="frozen head"):
        head_cross_entropy(*inputs(3)[:1], torch.nn.Parameter(torch.randn(VOCAB, HIDDEN)), torch.zeros(3).long(), 3)
    assert fusable_head_weight(torch.nn.Linear(HIDDEN, VOCAB).requires_grad_(False)) is None  # a bias
    partitioned = torch.nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)
    partitioned.weight.ds_id = 7  # DeepSpeed ZeRO-3 gathers it only inside the module's forward
    assert fusable_head_weight(partitioned) is None


def test_the_training_loss_of_a_lora_model_takes_the_fused_path_and_a_trained_head_the_plain_one(tiny_model_dir):
    from transformers import LlamaForCausalLM

    from llm_finetune.tokens.packing import PadCollator

    model = lora_llama(tiny_model_dir)
    batch = PadCollator(pad_token_id=0)(rows(model.config.vocab_size))
    assert type(trained_token_loss(model, batch, 20).grad_fn).__name__ == "_HeadCrossEntropyBackward"
    full = LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loss = trained_token_loss(full, batch, 20)
    assert type(loss.grad_fn).__name__ != "_HeadCrossEntropyBackward"
    loss.backward()
    assert full.get_output_embeddings().weight.grad is not None


def test_a_batch_without_trained_positions_gives_zero_loss_and_an_empty_gradient():
    hidden, weight, _ = inputs(0)
    loss, grad = loss_and_grad(head_cross_entropy, hidden, weight, torch.zeros(0, dtype=torch.long), 1)
    assert loss.item() == 0.0 and grad.shape == (0, HIDDEN)
