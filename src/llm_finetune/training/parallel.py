"""Running an objective's loss under a data-parallel wrapper (DDP, FSDP, DeepSpeed).

Objectives compute their loss from pieces of the model, not from its ``forward``: the decoder, then
the LM head at the trained positions only (:mod:`llm_finetune.training.numerics`), or the reward
head at ``length - 1``. Under N processes the Trainer hands ``compute_loss`` the *wrapped* model,
and a wrapper does its work in its own ``forward``: DDP prepares the gradient all-reduce there,
FSDP gathers the sharded weights. Calling the inner model's pieces directly skips that: the
wrapper has no ``config`` (an ``AttributeError``), or, reaching through ``.module``, each rank
keeps its own gradients and the replicas drift apart.

:func:`through_wrapper` runs ``compute(inner_model)`` *as* the wrapper's forward: for that one call
the inner module's ``forward`` is the computation, and the wrapper is called as usual, so its
pre- and post-forward steps run around it. Objectives stay written against the plain (peft)
model. Hand-written because neither accelerate nor transformers offers a "custom forward through
the wrapper" call (accelerate's ``extract_model_from_parallel`` unwraps, which is the bug).
``tests/training/test_parallel.py`` checks, on two gloo processes, that the gradients come out
all-reduced (equal on both ranks and equal to one process on the union of the batches).
"""

from __future__ import annotations

from collections.abc import Callable

WRAPPER_ATTRIBUTES = ("module",)  # DDP, FSDP (1), DeepSpeedEngine and DataParallel all hold the model here


def unwrap(model):
    """The model inside any data-parallel wrappers (the model itself when there are none)."""
    while any(hasattr(model, name) for name in WRAPPER_ATTRIBUTES) and not hasattr(model, "config"):
        model = model.module
    return model


def through_wrapper(model, compute: Callable):
    """``compute(inner)`` run as the forward of ``model``'s wrapper, or called directly on a plain model."""
    inner = unwrap(model)
    if inner is model:
        return compute(model)
    inner.forward = lambda *args, **kwargs: compute(inner)  # an instance attribute shadows the class's forward
    try:
        return model()
    finally:
        del inner.forward


def global_mean(values):
    """The mean of ``values`` over every rank's values (no gradient): what one process would compute
    on the global batch. In a single process, the plain mean."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values.mean()
    totals = torch.stack([values.detach().sum().double(), torch.tensor(float(values.numel()), dtype=torch.float64,
                                                                       device=values.device)])
    dist.all_reduce(totals)
    return (totals[0] / totals[1]).to(values.dtype)


def summed_over_ranks(sums: dict[str, tuple[float, int]], names: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """Per-metric ``(total, count)`` added up over the ranks, for every name in ``names`` (a fixed order,
    the same on every rank, since a rank may have seen no example of a metric)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sums
    totals = torch.tensor([list(sums.get(name, (0.0, 0))) for name in names], dtype=torch.float64).reshape(-1, 2)
    if dist.get_backend() == "nccl":
        totals = totals.cuda()
    dist.all_reduce(totals)
    return {name: (float(total), int(count)) for name, (total, count) in zip(names, totals.tolist()) if count}
