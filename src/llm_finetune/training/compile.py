"""``train.compile``: the decoder layers compiled with ``torch.compile`` for the training steps.

Regional, as PyTorch's regional-compilation recipe and transformers recommend: each decoder layer (the
classes a model lists in ``_no_split_modules``) is compiled rather than the whole model. Every layer runs
the same code on its own weights, so Dynamo traces one graph for all of them (seconds instead of minutes),
and with ``dynamic=True`` that graph serves every batch shape: length-grouped batches of every length do
not recompile. Inside a layer the compiler fuses what eager mode runs op by op (RMSNorm, rotary
embeddings, SiLU x up, residual adds, LoRA's scale and add, dtype casts) and drops the Python between
them; the matrix multiplications stay the same kernels. The loss's chunk function over a frozen LM head
is compiled as well (:func:`llm_finetune.training.head_loss.compiled_head_loss`). On short rows
``attention: auto`` then trains with transformers' matmul attention, which inductor fuses into the layer
too, instead of the flash kernel (:mod:`llm_finetune.training.attention`).

``train.compile_memory_budget`` (0.5 by default) lets the partitioner save only that share of a layer's
activations for the backward pass and recompute the rest (it picks the cheapest ops: pointwise ones): on
16 rows of the book's data the training's peak RSS fell 13-15 % (1,928 MB against 1,632 and 1,688) with no
slower steps measurable on this CPU (trained tokens/s 200 against 192 and 215, ``benchmarks/README.md``).

Why not the Trainer's ``torch_compile``: it compiles ``model.forward``, which our objectives do not call
(they call the decoder and compute the loss on the trained positions only), and it compiles per shape.

What it costs and gains (``benchmarks/engine_step_ab.py``, ``train_vs_peers.py``): the compilation happens
at the first training step, ~45 s on 2 CPU cores with an empty inductor cache and ~20 s in a new process
with a warm one (``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temp folder); then each step is
~1.2x faster on this CPU. It pays off on runs of a few thousand rows and more, so it is off by default, and ``make run``
stays eager and bit-reproducible. A compiled run is reproducible run to run, but its numbers differ from
an eager run's in the last bits (fused kernels round differently).

Evaluation batches run eager (another graph, without gradients, would cost a second compilation for a few
batches), and the layers are eager again once training ends, so generation after training does not
compile.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager

import torch

from llm_finetune.training.head_loss import compiled_head_loss

logger = logging.getLogger(__name__)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: modules of the classes any of its models lists in ``_no_split_modules``."""
    classes = set()
    for module in model.modules():
        classes |= set(getattr(module, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in classes]


def compile_problems(device_type: str) -> list[str]:
    """Why ``torch.compile`` cannot run here (empty: it can). On CPU inductor builds C++ kernels; on CUDA Triton."""
    if device_type == "cuda":
        import importlib.util

        return [] if importlib.util.find_spec("triton") else ["the triton package (pip install triton)"]
    compilers = ("g++", "c++", "clang++")
    return [] if any(shutil.which(name) for name in compilers) else [f"a C++ compiler on PATH ({', '.join(compilers)})"]


@contextmanager
def compiled_layers(model: torch.nn.Module, enabled: bool, where: str = "train", memory_budget: float = 1.0):
    """Within the block the decoder layers of ``model`` run compiled (when ``enabled``); yields how many.

    ``memory_budget``: the share of the activations the compiler's partitioner may save for the backward
    pass (``torch._functorch.config.activation_memory_budget``; 1.0 saves what it would anyway). Graphs are
    partitioned when they compile, at the first step, which runs inside this block.

    On leaving, the layers are eager again: ``nn.Module.compile`` keeps its compiled call in
    ``_compiled_call_impl``, which this clears (the module has no public way back).
    """
    if not enabled:
        yield 0
        return
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"{where}.compile: {type(model).__name__} lists no decoder layer class in "
                         "_no_split_modules, so there is no layer to compile; set compile: false")
    for layer in layers:
        layer.compile(dynamic=True)
    logger.info("Compiling %d %s layers with torch.compile at the first step (dynamic shapes: once for all batch "
                "shapes)", len(layers), type(layers[0]).__name__)
    try:
        with compiled_head_loss(), torch._functorch.config.patch(activation_memory_budget=memory_budget):
            yield len(layers)
    finally:
        for layer in layers:
            layer._compiled_call_impl = None


@contextmanager
def eager():
    """Run compiled modules eagerly in this block (evaluation batches of a compiled run)."""
    with torch.compiler.set_stance("force_eager"):
        yield
