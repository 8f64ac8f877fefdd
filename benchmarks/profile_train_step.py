"""Profile: where a step of our LoRA training goes (``fit`` with the sft defaults, the book's rows).

The same set-up as ``train_vs_peers.py`` (SmolLM2-135M, LoRA r=16 on all linear layers, micro-batch 8,
cutoff 512, 2 threads), run through the engine (:func:`llm_finetune.training.engine.fit`) with
``torch.profiler`` recording optimizer steps ``--skip + 1 .. --skip + --steps``. Every aten op's self CPU
time is put in one bucket:

* **GEMM**: ``mm`` / ``addmm`` / ``bmm`` (the matrix multiplications, forward and backward);
* **attention**: the fused scaled-dot-product kernels and their backward;
* **casts and copies**: ``_to_copy`` / ``copy_`` / ``clone`` / ``contiguous`` (dtype changes, layouts);
* **elementwise**: norms, activations, residual adds, the loss's log-softmax;
* **optimizer**: ``_foreach_*`` and the grad-norm passes;
* **other**: indexing, gathers, allocations, everything left.

The share outside GEMM is what issue 18 asks to remove. Also prints the top ops and the step time
with and without the profiler (the profiler's own overhead shows there).

Run:  .venv/bin/python benchmarks/profile_train_step.py [--steps 6] [--skip 3] [--set attention=sdpa ...]
Writes benchmarks/results/profile_train_step.json (``--no-save`` does not).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
from bench_machine import machine, uptime, write_result
from train_vs_peers import PARAMS, book_data_in_process

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "profile_train_step.json"
BUCKETS = (
    ("GEMM", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn")),
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("casts and copies", ("aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous", "aten::to")),
    ("optimizer", ("_foreach", "aten::_fused_adam", "aten::norm", "aten::linalg_vector_norm")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::silu", "aten::rsqrt", "aten::pow",
                     "aten::mean", "aten::neg", "aten::cat", "aten::softmax", "aten::_log_softmax", "aten::nll",
                     "aten::sum", "aten::exp", "aten::where", "aten::fill_", "aten::zero_", "aten::sigmoid",
                     "aten::threshold", "aten::cos", "aten::sin", "aten::embedding", "aten::_softmax")),
)


def bucket(name: str) -> str:
    for label, keys in BUCKETS:
        if any(name.startswith(key) or key in name for key in keys):
            return label
    return "other"


def overrides(pairs: list[str]) -> dict:
    """``key=value`` train settings (values parsed as YAML: numbers, booleans, null)."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in pairs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps recorded")
    parser.add_argument("--skip", type=int, default=3, help="steps run before recording (set-up, warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="train settings, key=value (e.g. attention=sdpa)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    prepared = book_data_in_process(args.threads)
    if prepared is None:
        return 0
    import yaml
    from torch.profiler import ProfilerActivity, profile, schedule
    from transformers import TrainerCallback

    from llm_finetune.training.engine import fit
    from llm_finetune.training.objectives.language_model import LanguageModelObjective
    from llm_finetune.training.settings import train_settings

    data, dataset = prepared
    total = args.skip + args.steps + 1
    params = yaml.safe_load(PARAMS.read_text())["train"] | {
        "max_steps": total, "eval_steps": total, "logging_steps": total, "batch_size": 8, "save_steps": 0,
    } | overrides(args.set)
    stamps: list[float] = []
    profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=False,
                       schedule=schedule(wait=args.skip, warmup=0, active=args.steps, repeat=1))

    class Step(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())
            profiler.step()

    load_before = uptime()
    with profiler:
        fit(LanguageModelObjective(Path(data["model"])), data["train"], data["val"], train_settings(params),
            callbacks=[Step()])
    load_after = uptime()
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    recorded_us = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        shares[bucket(e.key)] = shares.get(bucket(e.key), 0.0) + e.self_cpu_time_total
    # torch names the optimizer's step and zero_grad; their inclusive time holds the per-tensor ops they run
    inclusive = {e.key: round(e.cpu_time_total / 1e6, 3) for e in profiler.key_averages()
                 if e.key.startswith("Optimizer.") or "clip_grad" in e.key}
    step_s = [round(b - a, 3) for a, b in zip(stamps, stamps[1:])]
    recorded = step_s[args.skip - 1: args.skip - 1 + args.steps]
    print(f"{dataset['train_rows']} rows; settings {args.set or 'defaults'}; {args.threads} threads; {load_before}")
    print(f"step s (recorded steps under the profiler): {recorded}; other steps: {step_s[:args.skip - 1]}")
    print("\n| bucket | self CPU s | share |\n|---|---:|---:|")
    for label, us in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {us / 1e6:.2f} | {us / recorded_us:.1%} |")
    print(f"\ninclusive (s, all recorded steps): {inclusive}; recorded self CPU {recorded_us / 1e6:.2f} s")
    print("\n| op | bucket | calls | self CPU s | share |\n|---|---|---:|---:|---:|")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]
    for e in top:
        print(f"| `{e.key}` | {bucket(e.key)} | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | "
              f"{e.self_cpu_time_total / recorded_us:.1%} |")
    print(f"\nload before: {load_before}\nload after:  {load_after}")
    if not args.no_save:
        write_result(RESULT, {
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine({}),
            "settings": args.set, "steps": args.steps, "skip": args.skip, "threads": args.threads,
            "step_s": step_s, "recorded_step_s": recorded, "load_before": load_before, "load_after": load_after,
            "buckets_s": {k: round(v / 1e6, 3) for k, v in shares.items()}, "inclusive_s": inclusive,
            "top": [{"op": e.key, "bucket": bucket(e.key), "calls": e.count,
                     "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3)} for e in top]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
