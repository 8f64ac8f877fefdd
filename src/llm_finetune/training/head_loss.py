"""The cross-entropy over a frozen LM head, a chunk of trained positions at a time, its gradient taken on the way.

**Why.** The plain path, ``F.cross_entropy(lm_head(hidden).float(), targets)``, materialises the
fp32 logits of every trained position at once (49,152 x 4 bytes a token for SmolLM2: 45 MB at 16
rows of the book's data), then their log-softmax and, in the backward pass, its gradient: fresh
allocations past glibc's mmap threshold, so every step page-faults ~150 MB in and walks the
vocabulary about eight times. :func:`head_cross_entropy` takes ``chunk_tokens`` positions at a
time and, for each chunk, computes the logits, their log-softmax, the summed NLL and, when the
hidden states need a gradient, ``d loss / d hidden = ((softmax - one-hot) / divisor) @ W``, before
the next chunk; the backward pass only scales that saved gradient by the upstream one (a scalar:
the loss is a sum). Peak memory holds one chunk's logits, not all of them.

**Exact.** The ops are the ones autograd runs for the plain path (the same bf16 GEMMs under
autocast, ``log_softmax``, nll_loss's and log_softmax's backward kernels), so an eager run's gradients
equal the plain path's bit for bit, and the loss differs only by summing chunk by chunk
(``tests/training/test_head_loss.py``). Under ``train.compile`` the chunk's function is compiled
as well (:func:`compiled_head_loss`): inductor fuses the cast, log-softmax, exponent and one-hot
subtraction into a few passes over the chunk, and the results differ from eager in the last bits,
as the compiled layers' do. ``benchmarks/engine_step_ab.py`` (``head_loss``) measures both.

**Where.** Only a frozen head takes this path (LoRA, or freeze without the head): a trained head
would need its weight gradient too. The head must be a plain bias-free ``nn.Linear`` whose weight
is a whole local tensor; a DeepSpeed ZeRO-3 partition or an FSDP2 shard is gathered only inside the
module's own forward, so those models, like a soft-capped head (Gemma 2), keep the plain path
(:func:`fusable_head_weight`).

Hand-written: the fused linear cross-entropy kernels that exist (Liger-Kernel, Apple's Cut
Cross-Entropy) are Triton GPU kernels; none runs on a CPU, and this one runs on both.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

CHUNK_LOGITS = 2**23  # logits per chunk: 32 MB in fp32, 170 positions of SmolLM2's 49,152-token vocabulary


def chunk_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed ``-log p(target)`` of one chunk (fp32): the head's logits in the autocast dtype, log-softmax in fp32."""
    log_probs = torch.log_softmax(F.linear(hidden, weight).float(), dim=-1)
    return -log_probs.gather(1, targets[:, None]).sum()


def chunk_nll_and_grad(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       inverse_divisor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chunk_nll` and the gradient of ``nll / divisor`` with respect to ``hidden``."""
    logits = F.linear(hidden, weight)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(1, targets[:, None])
    # what autograd runs for cross_entropy(reduction="sum") / divisor: nll_loss's backward puts -1 / divisor at
    # each target, log_softmax's backward turns it into (softmax - one-hot) / divisor
    grad_log_probs = torch.zeros_like(log_probs).scatter_(1, targets[:, None], (-inverse_divisor).expand_as(picked))
    grad_logits = torch.ops.aten._log_softmax_backward_data(grad_log_probs, log_probs, -1, log_probs.dtype)
    grad_hidden = grad_logits.to(logits.dtype) @ weight.to(logits.dtype)
    return -picked.sum(), grad_hidden.to(hidden.dtype)


_KERNELS: ContextVar[tuple | None] = ContextVar("head_loss_kernels", default=None)


@functools.cache
def _compiled_kernels() -> tuple:
    return (torch.compile(chunk_nll, dynamic=True), torch.compile(chunk_nll_and_grad, dynamic=True))


@contextmanager
def compiled_head_loss():
    """Within the block :func:`head_cross_entropy` runs its chunk functions compiled (``train.compile``)."""
    token = _KERNELS.set(_compiled_kernels())
    try:
        yield
    finally:
        _KERNELS.reset(token)


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, divisor, chunk_tokens):
        nll, nll_and_grad = _KERNELS.get() or (chunk_nll, chunk_nll_and_grad)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        inverse = torch.ones((), dtype=torch.float32, device=hidden.device) / divisor
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, len(hidden), chunk_tokens):
            part = slice(start, start + chunk_tokens)
            if grad is None:
                total = total + nll(hidden[part], weight, targets[part])
            else:
                summed, grad[part] = nll_and_grad(hidden[part], weight, targets[part], inverse)
                total = total + summed
        ctx.save_for_backward(grad)
        return total / divisor

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None, None, None


def head_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       divisor: int | float | torch.Tensor, chunk_tokens: int | None = None) -> torch.Tensor:
    """``sum(cross_entropy(hidden @ weight.T, targets)) / divisor`` for hidden states ``[N, H]`` and a frozen
    ``weight [V, H]``, ``chunk_tokens`` positions at a time (default: :data:`CHUNK_LOGITS` logits a chunk)."""
    if weight.requires_grad:
        raise ValueError("head_cross_entropy is for a frozen head: its weight gets no gradient here")
    chunk = chunk_tokens or max(1, CHUNK_LOGITS // weight.shape[0])
    divisor = torch.as_tensor(divisor, dtype=torch.float32, device=hidden.device)
    return _HeadCrossEntropy.apply(hidden, weight, targets, divisor, chunk)


def fusable_head_weight(head) -> torch.Tensor | None:
    """The weight of ``head`` when :func:`head_cross_entropy` can replace calling it: a frozen, bias-free
    ``nn.Linear`` holding its whole weight locally (not a ZeRO-3 partition or a DTensor shard); else None."""
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    weight = head.weight
    whole = weight.dim() == 2 and weight.numel() > 0 and not hasattr(weight, "ds_id")
    sharded = type(weight.data).__name__ == "DTensor"
    return weight if whole and not sharded and not weight.requires_grad else None
