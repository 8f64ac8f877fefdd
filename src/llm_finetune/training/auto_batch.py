"""``train.batch_size: auto``: the micro-batch that trains the most tokens per second under a memory cap.

Why measure rather than take the largest batch that fits (the Trainer's ``auto_find_batch_size`` and
accelerate's ``find_executable_batch_size`` halve the batch after a CUDA out-of-memory error): on a CPU
memory is seldom the limit and a larger batch is not always faster (on the book's rows, 16 rows per
micro-batch against 8: 1.14x on one machine, 0.89x-1.15x on another, 32 slower than 16 on both), and
a CPU out of memory is the kernel killing the process, not an error to catch.

So each candidate size, smallest first, runs three forward and backward passes on rows like the ones
it will train on (from the median length up when batches are length-grouped, seeded random draws
otherwise). The first grows the allocator's pools for that size (an untimed first pass at 16 rows ran
at half the speed of the next); the other two, on other rows, are timed together (one pass alone
varied by 15% from run to run on a shared machine). Its peak memory is projected to the longest batch
by padded tokens. The probe stops at the first size whose projected peak is over the cap (not run at
all when the last size's projection already says so), or once a size is not ``min_gain`` faster than
every smaller one: throughput has levelled off, and on a CPU it falls after that (a size that would
gain again later is not looked for; each pass of a large size costs several training steps). The
choice is the smallest size within ``min_gain`` of the best: fewer rows per step keep more optimiser
steps, and the margin keeps timing noise from flipping the choice between near-equal sizes. On a GPU
the chosen size then runs once on the longest rows, and an out-of-memory error there steps down to
the next size.

``auto_batch.rows_per_step`` fixes the rows of an optimiser step: only sizes that divide it are tried
and the accumulation steps make up the rest, so the choice changes the speed and not the training
(the loss is normalised by the trained tokens of the whole step, and length grouping works on whole
steps).

The probe leaves no trace on the run: its gradients are dropped, the model's mode and the RNG states
restored, so a run with ``auto`` equals a run with the size it chose. The choice is a timing, so it
may differ between machines or runs: it is logged, kept in ``train_info`` (``batch_size``,
``auto_batch``), logged to MLflow (``<stage>.train.batch_size_chosen``) and written to the checkpoint
folder, which a resumed run reads instead of probing again. Set that number to rerun exactly.
Hand-written: no library measures throughput per batch size for an arbitrary loss.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import psutil
import torch

logger = logging.getLogger(__name__)
CHOICE_FILE = "auto_batch.json"
GB = 1024**3


def probe_sizes(candidates: list[int], rows: int, rows_per_step: int | None) -> list[int]:
    """The candidate sizes worth trying: at most the number of rows, dividing ``rows_per_step`` when set."""
    usable = sorted({size for size in candidates if not rows_per_step or rows_per_step % size == 0})
    return [size for size in usable if size <= rows] or usable[:1]


def pick(measured: list[dict], min_gain: float) -> int:
    """The smallest measured size that fits, within ``min_gain`` of the best tokens per second."""
    fitting = [m for m in measured if m["fits"]]
    if not fitting:
        return measured[0]["batch_size"]
    best = max(m["tokens_per_s"] for m in fitting)
    return min(m["batch_size"] for m in fitting if m["tokens_per_s"] >= best * (1 - min_gain))


def projected_peak(base: float, measured_peak: float, scale: float) -> float:
    """A peak that grows linearly in padded tokens above ``base``, at ``scale`` times the measured tokens."""
    return base + max(measured_peak - base, 0.0) * scale


def memory_cap(limit_gb: float | None, device: torch.device) -> float:
    """Bytes the probe may project a batch to use: the setting, or 90% of the GPU / 80% of the free RAM."""
    if limit_gb:
        return limit_gb * GB
    if device.type == "cuda":
        return 0.9 * torch.cuda.get_device_properties(device).total_memory
    return 0.8 * (psutil.Process().memory_info().rss + psutil.virtual_memory().available)


class _Pass:
    """Timed forward and backward passes of the objective's loss on given rows, with their peak memory."""

    def __init__(self, model, objective, device: torch.device):
        self.model, self.objective, self.device = model, objective, device

    def memory(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device))
        return float(psutil.Process().memory_info().rss)  # glibc keeps freed blocks: at least the pass's peak

    def run(self, rows: list[dict]) -> tuple[float, float]:
        """``(seconds, peak bytes)`` of one pass."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        batch = {key: value.to(self.device) if torch.is_tensor(value) else value
                 for key, value in self.objective.collate(rows).items()}
        started = time.perf_counter()
        inputs = self.objective.prepare(self.model, batch, 0)
        labels = inputs.get("labels")
        trained = (labels != -100).sum() if torch.is_tensor(labels) else None
        loss, _ = self.objective.loss(self.model, inputs, trained)
        loss.backward()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        peak = self.memory()
        self.model.zero_grad(set_to_none=True)
        return seconds, peak


def _rows_like_training(rows: list[dict], by_length: list[int], size: int, grouped: bool, seed: int,
                        draw: int) -> list[dict]:
    """``size`` rows like a training batch: the ``draw``-th block from the median length up of the row indices
    ``by_length`` (shortest first; grouped), or a seeded random draw."""
    if grouped:
        start = max(0, min(len(rows) - size, len(rows) // 2 - size // 2 + draw * size))
        return [rows[i] for i in by_length[start:start + size]]
    picked = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + draw))[:size].tolist()
    return [rows[i] for i in picked]


def measure(passes: _Pass, rows: list[dict], lengths: list[int], sizes: list[int], cap: float, min_gain: float,
            grouped: bool, seed: int) -> tuple[list[dict], str]:
    """One record per size tried (``tokens_per_s``, ``peak_gb`` projected to the longest batch, ``fits``) and
    why the probe stopped."""
    longest, by_length = max(lengths), sorted(range(len(rows)), key=lambda i: lengths[i])
    base = passes.memory()
    measured: list[dict] = []
    for size in sizes:
        if measured:
            last = measured[-1]
            if projected_peak(base, last["peak_gb"] * GB, size / last["batch_size"]) > cap:
                return measured, f"{size} rows would pass the memory cap"
        warm_up, *timed = (_rows_like_training(rows, by_length, size, grouped, seed, draw) for draw in (0, 1, 2))
        tokens = sum(passes.objective.length(row) for sample in timed for row in sample)
        padded = max(len(sample) * max(passes.objective.length(row) for row in sample) for sample in timed)
        try:  # a first pass at a size grows the allocator's pools; the next two, on other rows, are timed
            passes.run(warm_up)
            runs = [passes.run(sample) for sample in timed]
            seconds, peak = sum(run[0] for run in runs), max(run[1] for run in runs)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            measured.append({"batch_size": size, "tokens_per_s": 0.0, "peak_gb": cap / GB, "fits": False})
            return measured, f"{size} rows ran out of GPU memory"
        worst = projected_peak(base, peak, size * longest / padded)
        record = {"batch_size": size, "tokens_per_s": round(tokens / seconds, 1), "peak_gb": round(worst / GB, 3),
                  "fits": worst <= cap}
        measured.append(record)
        if not record["fits"]:
            return measured, f"{size} rows pass the memory cap on the longest rows"
        before = max((m["tokens_per_s"] for m in measured[:-1]), default=0.0)
        if len(measured) > 1 and record["tokens_per_s"] < before * (1 + min_gain):
            return measured, f"{size} rows train no more than min_gain faster than a smaller size"
    return measured, "every candidate was tried"


def _longest_fits(passes: _Pass, rows: list[dict], lengths: list[int], size: int) -> bool:
    """Whether ``size`` of the longest rows train without a GPU out-of-memory error."""
    longest = sorted(range(len(rows)), key=lambda i: -lengths[i])[:size]
    try:
        passes.run([rows[i] for i in longest])
        return True
    except torch.cuda.OutOfMemoryError:
        passes.model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return False


def choose_batch_size(model, objective, rows: list[dict], settings, precision: str, where: str,
                      folder: Path | None = None) -> dict:
    """The auto micro-batch of ``rows`` for ``settings`` (``batch_size: auto``): ``{batch_size,
    gradient_accumulation_steps, ...}`` with what was measured. A choice already in ``folder`` (the run's
    checkpoints, on resume) is taken as it is; a new one is written there."""
    from llm_finetune.models.precision import compute_context

    saved = Path(folder) / CHOICE_FILE if folder else None
    if saved and settings.resume and saved.exists():
        choice = json.loads(saved.read_text()) | {"from_checkpoint": True}
        logger.info("%s.batch_size auto: %d rows per micro-batch, as chosen when this run started (%s)", where,
                    choice["batch_size"], saved)
        return choice
    options = settings.auto_batch
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not getattr(model, "is_quantized", False):
        model.to(device)
    lengths = [objective.length(row) for row in rows]
    sizes = probe_sizes(options.candidates, len(rows), options.rows_per_step)
    cap = memory_cap(options.memory_limit_gb, device)
    started, was_training = time.perf_counter(), model.training
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    passes = _Pass(model, objective, device)
    model.train()
    try:
        with compute_context(model, precision):
            if len(sizes) == 1:
                measured, stopped = [], "one candidate size"
            else:
                measured, stopped = measure(passes, rows, lengths, sizes, cap, options.min_gain,
                                            settings.group_by_length, settings.seed)
            chosen = pick(measured, options.min_gain) if measured else sizes[0]
            if device.type == "cuda":
                smaller = [size for size in sizes if size < chosen]
                while not _longest_fits(passes, rows, lengths, chosen) and smaller:
                    chosen = smaller.pop()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
    accumulation = options.rows_per_step // chosen if options.rows_per_step else settings.gradient_accumulation_steps
    choice = {"batch_size": chosen, "gradient_accumulation_steps": accumulation, "device": device.type,
              "memory_cap_gb": round(cap / GB, 2), "probe_s": round(time.perf_counter() - started, 1),
              "measured": measured, "stopped": stopped, "from_checkpoint": False}
    logger.info("%s.batch_size auto: %d rows per micro-batch x %d accumulation steps (%s; probe %.1f s: %s). "
                "Set %s.batch_size: %d to rerun exactly", where, chosen, accumulation,
                ", ".join(f"{m['batch_size']}: {m['tokens_per_s']} tokens/s" for m in measured) or "not timed",
                choice["probe_s"], stopped, where, chosen)
    if saved:
        saved.parent.mkdir(parents=True, exist_ok=True)
        aside = saved.with_suffix(".tmp")
        aside.write_text(json.dumps(choice, indent=2))
        aside.replace(saved)
    return choice
