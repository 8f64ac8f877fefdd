"""A/B: each engine speed change against the code without it, interleaved in one process.

Step times of a whole run on this shared 2-core machine drift by tens of percent from minute to minute,
more than most single changes gain; so each change is timed here as A, B, A, B, ... on the same batch in
the same process, and the ratio of the medians is reported (drift hits both sides alike).

The set-up of ``train_vs_peers.py``: SmolLM2-135M-Instruct in bf16, LoRA r=16 on all linear layers (fp32
weights, bf16 autocast, peft's input casts off, fp32 attention: the engine's numerics), micro-batches of 8 (``--rows``)
of the book's training rows, in our length-grouped order. The changes:

* ``fused_adamw``: one AdamW step over the 420 LoRA tensors with ``fused=True`` (``train.optimizer:
  adamw_torch_fused``, the default; A: ``adamw_torch``, torch's per-tensor loop on CPU), set against the
  forward + backward of ``--batches`` micro-batches (``step_share``: the part of a step it saves).
* ``bf16_attention``: the forward + backward of those micro-batches with bf16 attention (``train.attention:
  sdpa``) against the fp32 attention inside bf16 training that ``auto`` picks on CPU (``sdpa_fp32``), the
  question being whether fp32 attention is still right on a CPU whose bf16 is fast.
* ``compile``: the forward + backward of those micro-batches with the decoder layers compiled (``train.compile:
  true``, :mod:`llm_finetune.training.compile`) against the same layers run eager (the engine's ``eager()``, as
  its evaluation batches run); the compilation itself is timed at the first compiled pass, with an empty
  inductor cache (``compile_s``), then once more from the cache it filled (``compile_warm_s``: a rerun's cost).
* ``compiled_attention``: with the layers compiled, the forward + backward with transformers' matmul attention
  (``eager``: bf16 matmuls around an fp32 softmax, which inductor fuses into the layer; what ``attention: auto``
  picks under ``compile`` for rows of up to 128 tokens) against ``sdpa_fp32``'s flash kernel.
* ``head_loss`` / ``compiled_head_loss``: the forward + backward with the chunked cross-entropy over the frozen
  LM head (:mod:`llm_finetune.training.head_loss`) against all trained positions' fp32 logits at once and
  ``F.cross_entropy`` (``plain_head_loss``), eager, then with the layers and the head loss compiled.

Changes measured here and dropped (``benchmarks/README.md`` has their figures) are not kept in the code.

Run:  .venv/bin/python benchmarks/engine_step_ab.py [--rounds 7] [--batches 4]
Writes benchmarks/results/engine_step_ab.json (``--no-save`` does not).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
from bench_machine import machine, uptime, write_result
from train_vs_peers import BATCH, book_data_in_process

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "engine_step_ab.json"


def lora_model(folder: str):
    import torch

    from llm_finetune.models.tuning import prepare_model
    from llm_finetune.training.attention import use_training_attention

    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    model, _, _ = prepare_model(Path(folder), "lora", lora, {}, "bf16")
    use_training_attention(model, "auto", "bf16")
    for parameter in model.parameters():
        if parameter.requires_grad:  # peft starts B at zero; a trained adapter has a non-zero B
            torch.nn.init.normal_(parameter, std=0.02)
    return model.train()


def batches(rows: list[dict], count: int, size: int = BATCH) -> list[dict]:
    from llm_finetune.tokens.packing import PadCollator
    from llm_finetune.training.batching import ShuffledLengthGroupedSampler

    order = list(ShuffledLengthGroupedSampler([len(r["input_ids"]) for r in rows], size, 123))
    collate = PadCollator(pad_token_id=0, attention_mask=False)
    return [collate([rows[i] for i in order[k * size:(k + 1) * size]]) for k in range(count)]


def forward_backward(model, data: list[dict], loss=None) -> float:
    from llm_finetune.models.precision import compute_context
    from llm_finetune.training.numerics import trained_token_loss

    started = time.perf_counter()
    with compute_context(model, "bf16"):
        for batch in data:
            (loss or trained_token_loss)(model, batch).backward()
    return time.perf_counter() - started


def plain_head_loss(model, batch: dict):
    """The training loss without :mod:`llm_finetune.training.head_loss`: all trained positions' fp32 logits at
    once, then ``F.cross_entropy`` (what ``trained_token_loss`` ran before the chunked head loss)."""
    import torch.nn.functional as F

    from llm_finetune.tokens.conversations import IGNORE_INDEX
    from llm_finetune.training.numerics import trained_logits

    targets = batch["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    return F.cross_entropy(trained_logits(model, batch, trained), targets[trained], reduction="sum") / trained.sum()


def head_loss_ab(model, data: list[dict], rounds: int) -> tuple[dict, dict]:
    """The chunked head loss against :func:`plain_head_loss`, eager and with the layers (and it) compiled."""
    from llm_finetune.training.compile import compiled_layers

    def pair():
        return interleaved(lambda: forward_backward(model, data, plain_head_loss),
                           lambda: forward_backward(model, data), rounds)

    eager_result = pair()
    with compiled_layers(model, True):
        return eager_result, pair()


def attention_pass(model, attention: str, data: list[dict]) -> float:
    from llm_finetune.training.attention import set_attention

    set_attention(model, attention)
    return forward_backward(model, data)


def compile_ab(model, data: list[dict], rounds: int) -> tuple[dict, dict]:
    """Compiled decoder layers (the engine's ``compiled_layers``) against the same layers run eager, interleaved;
    then, with the layers compiled, matmul attention (``eager``) against ``sdpa_fp32``."""
    import tempfile

    import torch

    from llm_finetune.training.attention import set_attention
    from llm_finetune.training.compile import compiled_layers, eager

    def eager_pass() -> float:
        with eager():
            return forward_backward(model, data)

    seconds = {}
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        for run in ("compile_s", "compile_warm_s"):
            torch._dynamo.reset()
            with compiled_layers(model, True):
                seconds[run] = round(forward_backward(model, data[:1]) - forward_backward(model, data[:1]), 2)
        with compiled_layers(model, True):
            result = interleaved(eager_pass, lambda: forward_backward(model, data), rounds)
            # what attention: auto picks under compiled layers on short rows; its graph compiles in the warm-up
            attention = interleaved(lambda: attention_pass(model, "sdpa_fp32", data),
                                    lambda: attention_pass(model, "eager", data), rounds)
            set_attention(model, "sdpa_fp32")
    return result | seconds, attention


def optimizer_step(optimizer) -> float:
    started = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - started


def interleaved(a, b, rounds: int) -> dict:
    """``a()`` and ``b()`` alternately (``rounds`` each, after one warm-up each): medians and B's speed-up."""
    a(), b()
    times = {"a": [], "b": []}
    for _ in range(rounds):
        times["a"].append(a())
        times["b"].append(b())
    median_a, median_b = statistics.median(times["a"]), statistics.median(times["b"])
    return {"a_median_s": round(median_a, 4), "b_median_s": round(median_b, 4),
            "speedup": round(median_a / median_b, 3), "a_s": [round(t, 4) for t in times["a"]],
            "b_s": [round(t, 4) for t in times["b"]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rows", type=int, default=BATCH, help="rows per micro-batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    prepared = book_data_in_process(args.threads)
    if prepared is None:
        return 0
    import torch

    data, _ = prepared
    model = lora_model(data["model"])
    load_before = uptime()
    data_batches = batches(data["train"], args.batches, args.rows)
    forward_backward_s = statistics.median(forward_backward(model, data_batches) for _ in range(args.rounds))
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    loop = torch.optim.AdamW(trainable, lr=1e-3, foreach=False)
    fused = torch.optim.AdamW(trainable, lr=1e-3, fused=True)
    results = {"fused_adamw": interleaved(lambda: optimizer_step(loop), lambda: optimizer_step(fused), args.rounds * 3)}
    for result in results.values():
        step_s = forward_backward_s / len(data_batches) + result["a_median_s"]
        result["step_share"] = round((result["a_median_s"] - result["b_median_s"]) / step_s, 4)
    results["bf16_attention"] = interleaved(lambda: attention_pass(model, "sdpa_fp32", data_batches),
                                            lambda: attention_pass(model, "sdpa", data_batches), args.rounds)
    results["bf16_attention"]["step_share"] = round(1 - 1 / results["bf16_attention"]["speedup"], 4)
    results["compile"], results["compiled_attention"] = compile_ab(model, data_batches, args.rounds)
    results["head_loss"], results["compiled_head_loss"] = head_loss_ab(model, data_batches, args.rounds)
    for name in ("compile", "compiled_attention", "head_loss", "compiled_head_loss"):
        results[name]["step_share"] = round(1 - 1 / results[name]["speedup"], 4)
    load_after = uptime()
    tokens = sum(int(b["input_ids"].numel()) for b in data_batches)
    print(f"{len(trainable)} LoRA tensors; {args.batches} batches of {args.rows} rows, {tokens} padded tokens; "
          f"{args.threads} threads; forward + backward {forward_backward_s / len(data_batches):.3f} s a micro-batch "
          "(median)\n\n| change | A (without) median s | B (with) median s | B speed-up | share of a step saved |\n"
          "|---|---:|---:|---:|---:|")
    for name, result in results.items():
        print(f"| {name} | {result['a_median_s']} | {result['b_median_s']} | {result['speedup']}x | "
              f"{result['step_share']:.1%} |")
    print(f"\ncompilation (the first compiled micro-batch less the next one): {results['compile']['compile_s']} s "
          f"with an empty inductor cache, {results['compile']['compile_warm_s']} s from the cache it filled")
    print(f"\nload before: {load_before}\nload after:  {load_after}")
    if not args.no_save:
        write_result(RESULT, {
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine({}),
            "threads": args.threads, "rounds": args.rounds, "batches": args.batches, "rows": args.rows,
            "padded_tokens": tokens,
            "forward_backward_s_per_micro_batch": round(forward_backward_s / len(data_batches), 4),
            "load_before": load_before, "load_after": load_after, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
