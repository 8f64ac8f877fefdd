"""Benchmark: our LoRA training vs TRL, transformers' Trainer and the book's loop, same steps, same machine.

SmolLM2-135M-Instruct, LoRA r=16 / alpha 32 / dropout 0 (peft default) on all linear layers, the book's 935
training rows (``book_instruction_data.json``, ordered split), the book's Alpaca prompt, loss on
the answer, cutoff 512, micro-batch 8, ``--steps`` optimizer steps for everyone, learning rate
1e-3 (cosine, 10 warm-up steps, where a trainer has a schedule). Each configuration runs in its
own fresh subprocess (peak RSS is ``VmHWM``: up to the end of training, and over the whole child, whose
shared fp32 val loss casts a bf16 model to fp32 first), one after the other, on ``--threads`` threads:

* **ours**: :func:`llm_finetune.training.train_model` with ``conf/base/parameters_sft.yml``'s
  ``train`` defaults (precision auto = bf16 here, length-grouped batches, our ``PadCollator``);
* **ours, the book's optimizer settings**: the same with the book loop's constant learning rate,
  no warm-up and weight decay 0.1, so its val loss compares with the book loop's like for like
  (over a few steps the schedule, not the implementation, decides the val loss);
* **TRL default**: ``trl.SFTTrainer`` (own venv) on a prompt/completion dataset with its own
  defaults (bf16 autocast over fp32 weights, gradient checkpointing, no packing);
* **TRL fp32**: the same with ``bf16=False`` and ``packing=False``;
* **book loop**: ch. 7's plain loop with peft LoRA: fp32, pad to the longest, ``model(x).logits``,
  cross-entropy (ignore -100), AdamW, no schedule;
* **HF Trainer**: transformers ``Trainer``, fp32, ``train_sampling_strategy="group_by_length"``,
  ``DataCollatorForSeq2Seq``;
* **each peer at its best CPU setting** (``train_peers.py``): HF Trainer bf16, TRL padding-free and
  TRL packing in bf16 without gradient checkpointing, the book loop under bf16 autocast.

The headline is the projected wall time of one epoch of the 935 rows (the epoch's trained tokens at
the timed rate), with the fastest peer named and our ratio against it.

Trained tokens are the labels != -100 after the shift, counted from every training forward pass.
Throughput is taken over steps ``--warmup + 1 .. --steps`` (the first steps are reported apart).
Val loss: one shared function, fp32, token-averaged, on the book's 55 validation rows.

TRL venv (never install it into .venv)::

    python3 -m venv /tmp/trl-venv
    /tmp/trl-venv/bin/pip install torch==2.13.0
    /tmp/trl-venv/bin/pip install "trl==1.16.*" transformers==5.23.0 datasets==5.2.0 tokenizers==0.23.3 peft==0.21.2

Run:  .venv/bin/python benchmarks/train_vs_peers.py [--steps 10] [--trl-python /tmp/trl-venv/bin/python]
``--epoch``: one whole epoch each, its measured wall time the headline (a projection from the first steps
favours a sampler that starts with the longest rows, as transformers' length grouping does).
Writes benchmarks/results/train_vs_peers.json (``--epoch``: train_vs_peers_epoch.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_machine import machine, memory_mb, uptime, write_result
from train_peers import BATCH, CUTOFF, LORA, LR, RUNNERS, TRAINING_PEAK_MB, Meter, meter_callback, val_loss

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "real" / "book_instruction_data.json"
CACHE = REPO / "data" / "06_models" / "base_model_cache"
PARAMS = REPO / "conf" / "base" / "parameters_sft.yml"
RESULT = REPO / "benchmarks" / "results" / "train_vs_peers.json"
WORK = Path("/tmp/bench_train")
TRL_PYTHON = "/tmp/trl-venv/bin/python"
CONFIGS = ("ours", "ours_auto", "ours_book_optimizer", "trl_default", "trl_fp32", "trl_padding_free", "trl_packing",
           "book", "book_bf16", "hf_group", "hf_bf16", "hf_bf16_batch16", "ours_compile", "ours_compile_auto",
           "ours_compile_batch16")
# the book loop's optimizer settings on our defaults: the val-loss check compares like with like
BOOK_OPTIMIZER = {"lr_scheduler": "constant", "warmup_steps": 0, "weight_decay": 0.1}
LABELS = {"ours": "ours (defaults)", "ours_auto": "ours, batch_size auto (probe time included)",
          "ours_book_optimizer": "ours, the book's optimizer settings",
          "trl_default": "TRL SFTTrainer defaults", "trl_fp32": "TRL fp32, no packing",
          "trl_padding_free": "TRL padding-free, no grad. ckpt.", "trl_packing": "TRL packing, no grad. ckpt.",
          "book": "book loop (fp32)", "book_bf16": "book loop, bf16 autocast",
          "hf_group": "HF Trainer, group_by_length (fp32)", "hf_bf16": "HF Trainer, group_by_length, bf16",
          "hf_bf16_batch16": "HF Trainer, group_by_length, bf16, micro-batch 16",
          "ours_compile": "ours, compile (its compilation included)",
          "ours_compile_auto": "ours, compile + batch_size auto (compilation and probe included)",
          "ours_compile_batch16": "ours, compile, micro-batch 16 (compilation included)"}
MARK = "RESULT "


def prepare(path: Path) -> tuple[dict, dict]:
    """Tokenize the book's split with our code into ``path`` (the children read it); TRL gets the same prompt /
    answer text. Returns the split's summary and the data written."""
    from transformers import AutoTokenizer

    from llm_finetune.data.formats import align_alpaca, columns_for, tags_for
    from llm_finetune.data.split import split_records
    from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
    from llm_finetune.tokens.templates import load_template, render_pieces

    rows = json.loads(DATA.read_text(encoding="utf-8"))
    records = [align_alpaca(row, columns_for("alpaca", None), tags_for("alpaca", None)) | {"meta": {"row": i}}
               for i, row in enumerate(rows)]
    train, val, _ = split_records(records, 0.85, 0.10, seed=0, mode="ordered")
    folder = next(CACHE.glob("smollm2-135m-instruct-*"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = load_template("alpaca")
    tokenized = {}
    for name, split in (("train", train), ("val", val)):
        out, quarantined = tokenize_records(split, TokenizeSettings(template, CUTOFF), tokenizer)
        assert not quarantined, quarantined[:1]
        tokenized[name] = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in out]
    text = []
    for record in train:
        prompt, answer = render_pieces(record, template, tokenizer)
        text.append({"prompt": prompt.text, "completion": answer.text.removesuffix(tokenizer.eos_token)})
    data = {"model": str(folder), "train": tokenized["train"], "val": tokenized["val"], "train_text": text}
    path.write_text(json.dumps(data))
    return data, {"model": folder.name, "train_rows": len(train), "val_rows": len(val),
            "train_tokens": sum(len(r["input_ids"]) for r in tokenized["train"]),
            "trained_tokens_per_epoch": sum(sum(x != -100 for x in r["labels"][1:]) for r in tokenized["train"])}


def book_data_in_process(threads: int) -> tuple[dict, dict] | None:
    """For the scripts that train in their own process: ``threads`` torch threads and the prepared book data
    with its summary, or None (said on stdout) when the book's data is absent."""
    if not DATA.is_file():
        print(f"skipped: the book's data is not at {DATA}")
        return None
    import torch

    torch.set_num_threads(threads)
    WORK.mkdir(parents=True, exist_ok=True)
    return prepare(WORK / "data.json")


def child_ours(data: dict, args, overrides: dict | None = None) -> dict:
    import yaml

    from llm_finetune.training.engine import fit
    from llm_finetune.training.objectives import language_model as training
    from llm_finetune.training.settings import train_settings

    params = yaml.safe_load(PARAMS.read_text())["train"] | {
        "max_steps": None if args.epoch else args.steps, "epochs": 1, "eval_steps": args.steps or 10**6,
        "logging_steps": 5, "batch_size": BATCH, "save_steps": 0} | (overrides or {})
    meter = Meter()
    exact = training.trained_token_loss

    def counted(model, inputs, num_items_in_batch=None):  # our Trainer calls the decoder, not model.forward
        if model.training:
            meter.count(inputs["input_ids"], inputs["labels"])
        return exact(model, inputs, num_items_in_batch)

    training.trained_token_loss = counted
    result = fit(training.LanguageModelObjective(Path(data["model"])), data["train"], data["val"],
                 train_settings(params), callbacks=[meter_callback(meter)])
    model, info = result.model, result.info
    return meter.summary(args.warmup) | {"precision": info["precision"], "info": info,
                                         "params": {k: v for k, v in params.items() if k != "lora"},
                                         "val_loss": val_loss(model, data["val"])}


def run_child(python: str, name: str, data_path: Path, args) -> dict:
    """One configuration in a fresh process of ``python``."""
    with tempfile.TemporaryDirectory(prefix=f"bench_train_{name}_") as work:
        command = [python, __file__, "--child", name, "--data", str(data_path), "--work", work,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
        command += ["--epoch"] if args.epoch else []
        # an empty inductor cache: train.compile's figures include a first compilation, as a new user's run has
        env = os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": "",
                            "TORCHINDUCTOR_CACHE_DIR": str(Path(work) / "inductor")}
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-2500:]}"}
    return json.loads(lines[-1][len(MARK):])


def child(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    data = json.loads(Path(args.data).read_text())
    runners = RUNNERS | {"ours": child_ours, "ours_book_optimizer": lambda d, a: child_ours(d, a, BOOK_OPTIMIZER),
                         "ours_auto": lambda d, a: child_ours(d, a, {"batch_size": "auto"}),
                         "ours_compile": lambda d, a: child_ours(d, a, {"compile": True}),
                         "ours_compile_auto": lambda d, a: child_ours(d, a, {"compile": True, "batch_size": "auto"}),
                         "ours_compile_batch16": lambda d, a: child_ours(d, a, {"compile": True, "batch_size": 16})}
    result = runners[args.child](data, args)
    training_peak = TRAINING_PEAK_MB[0] if TRAINING_PEAK_MB else memory_mb()
    print(MARK + json.dumps(result | {"peak_rss_mb": memory_mb(), "training_peak_rss_mb": training_peak,
                                      "torch": torch.__version__, "epoch": args.epoch}, default=str))
    return 0


def peak_gemm(threads: int) -> dict:
    """Measured GEMM TFLOP/s (1024^3, 2 s each) in fp32 and bf16 with our ``peak_gemm_flops``."""
    import torch

    from llm_finetune.training.callbacks import peak_gemm_flops

    torch.set_num_threads(threads)
    return {name: round(peak_gemm_flops(dtype, seconds=2.0) / 1e12, 3)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def epoch_s(result: dict, trained_per_epoch: int) -> float:
    """Wall seconds for one epoch of the 935 rows: measured (``--epoch``), or projected (the epoch's trained
    tokens at the timed rate, plus under ``train.compile`` the warm-up steps' excess over that rate: the
    compilation), plus the batch-size probe where there was one (``batch_size: auto``)."""
    info = result.get("info") or {}
    probe = (info.get("auto_batch") or {}).get("probe_s", 0.0)
    if result.get("epoch"):
        return round(result["wall_s"] + probe, 1)
    compiling = result["warmup_s"] - result["warmup_steps"] * result["s_per_step"] if info.get("compiled_layers") else 0
    return round(trained_per_epoch / result["trained_tokens_per_s"] + probe + compiling, 1)


def training_peak_mb(result: dict) -> float:
    """Peak RSS up to the end of training (results written before that figure existed: the whole run's)."""
    return result.get("training_peak_rss_mb", result["peak_rss_mb"])


def table(results: dict, trained_per_epoch: int) -> list[str]:
    lines = ["| configuration | precision | epoch s | s/step | trained tokens | trained tokens/s "
             "| peak RSS MB, training | peak RSS MB, with the fp32 val loss | val loss | ours / this (tokens/s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ours = results.get("ours", {}).get("trained_tokens_per_s")
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {LABELS[name]} | failed: {r['error'][-200:]!r} |")
            continue
        ratio = f"{ours / r['trained_tokens_per_s']:.2f}x" if ours else ""
        lines.append(f"| {LABELS[name]} | {r['precision']} | {epoch_s(r, trained_per_epoch)} | {r['s_per_step']} "
                     f"| {r['trained_tokens']:,} "
                     f"| {r['trained_tokens_per_s']:,.1f} | {training_peak_mb(r):,.0f} | {r['peak_rss_mb']:,.0f} "
                     f"| {r['val_loss']} | {ratio} |")
    return lines


def versions(*names: str) -> dict:
    return {name: __import__(name).__version__ for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the throughput")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--trl-python", default=TRL_PYTHON)
    parser.add_argument("--epoch", action="store_true", help="train one whole epoch each (--steps ignored) and "
                        "report its measured wall time instead of a projection")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = 0 if args.epoch else args.steps
    if args.child:
        return child(args)
    if not DATA.is_file():
        print(f"skipped: the book's data is not at {DATA}")
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    data_path = WORK / "data.json"
    _, dataset = prepare(data_path)
    print(f"data: {dataset}")
    load_before, started = uptime(), datetime.datetime.now(datetime.timezone.utc)
    gemm = peak_gemm(args.threads)
    print(f"peak GEMM TFLOP/s ({args.threads} threads): {gemm}; {load_before}")
    results = {}
    for name in args.configs:
        python = args.trl_python if name.startswith("trl") else sys.executable
        if not Path(python).is_file():
            results[name] = {"error": f"{python} does not exist (see this script's docstring)"}
            continue
        results[name] = run_child(python, name, data_path, args)
        r = results[name]
        print(f"{name}: " + (r["error"] if "error" in r else
                             f"{r['wall_s']} s, {r['trained_tokens_per_s']} trained tokens/s, val {r['val_loss']}, "
                             f"peak {r['peak_rss_mb']} MB") + f"  [{uptime()}]", flush=True)
    load_after = uptime()
    ours = results.get("ours", {})
    ratios = {name: {"trained_tokens_per_s": round(ours["trained_tokens_per_s"] / r["trained_tokens_per_s"], 2),
                     "wall_s": round(ours["wall_s"] / r["wall_s"], 2),
                     "peak_rss": round(ours["peak_rss_mb"] / r["peak_rss_mb"], 2)}
              for name, r in results.items() if not name.startswith("ours") and "error" not in r and ours
              and "error" not in ours}
    peers = {name: r for name, r in results.items() if not name.startswith("ours") and "error" not in r}
    fastest = max(peers, key=lambda name: peers[name]["trained_tokens_per_s"], default=None)
    epochs = {name: epoch_s(r, dataset["trained_tokens_per_epoch"]) for name, r in results.items() if "error" not in r}
    book = results.get("book", {})
    val_vs_book = {name: round(r["val_loss"] / book["val_loss"] - 1, 4) for name, r in results.items()
                   if name.startswith("ours") and "error" not in r and book and "error" not in book}
    mfu = None
    if ours and "error" not in ours:
        total, peak = ours["info"]["total_parameters"], gemm["bf16" if ours["precision"] == "bf16" else "fp32"]
        mfu = {"flops_per_token": f"4 x {total} (LoRA: forward + input gradients)", "peak_tflops": peak,
               "mfu_timed_window": round(4 * total * ours["input_tokens_per_s"] / (peak * 1e12), 4),
               "mean_mfu_from_training_logs": ours["info"]["mean_mfu"],
               "peak_gemm_tflops_from_training": ours["info"]["peak_gemm_tflops"]}
    print(f"\n{'one epoch' if args.epoch else f'{args.steps} optimizer steps'} each (throughput from step "
          f"{args.warmup + 1}), "
          f"batch {BATCH}, cutoff {CUTOFF}, {args.threads} threads; {started:%Y-%m-%d %H:%M} UTC")
    print("\n".join(table(results, dataset["trained_tokens_per_epoch"])))
    leanest = min(peers, key=lambda name: training_peak_mb(peers[name]), default=None)
    against_fastest = {name: {"trained_tokens_per_s": round(r["trained_tokens_per_s"]
                                                            / peers[fastest]["trained_tokens_per_s"], 2),
                              "epoch": round(epochs[fastest] / epochs[name], 2),
                              "training_peak_rss_vs_lowest_peer": round(training_peak_mb(r)
                                                                        / training_peak_mb(peers[leanest]), 3)}
                       for name, r in results.items() if fastest and name.startswith("ours") and "error" not in r}
    for name, ratio in against_fastest.items():
        print(f"\nfastest peer: {LABELS[fastest]}; {LABELS[name]} / it: {ratio['trained_tokens_per_s']}x trained "
              f"tokens/s, projected epoch {epochs[name]} s against {epochs[fastest]} s ({ratio['epoch']}x); "
              f"training peak RSS {ratio['training_peak_rss_vs_lowest_peer']}x the lowest peer's ({LABELS[leanest]}, "
              f"{training_peak_mb(peers[leanest]):,.0f} MB)")
    print(f"\nratios ours / peer: {json.dumps(ratios)}\nval loss vs the book loop's: {val_vs_book}\nMFU: {mfu}\nload before: {load_before}\nload after:  {load_after}")
    if not args.no_save:
        write_result(RESULT.with_name("train_vs_peers_epoch.json") if args.epoch else RESULT, {
            "date": started.isoformat(timespec="seconds"), "machine": machine(versions("torch", "transformers", "peft")), "data": dataset,
            "steps": args.steps, "warmup_steps": args.warmup, "batch_size": BATCH, "cutoff_len": CUTOFF,
            "learning_rate": LR, "lora": LORA, "threads": args.threads, "load_before": load_before,
            "load_after": load_after, "peak_gemm_tflops": gemm, "ours_mfu": mfu, "results": results,
            "ratios_ours_over_peer": ratios, "val_loss_vs_book": val_vs_book, "fastest_peer": fastest,
            "lowest_training_peak_peer": leanest,
            "ours_over_fastest_peer": against_fastest,
            "projected_epoch_s": epochs,
            "book_optimizer_settings": BOOK_OPTIMIZER})
    return 0


if __name__ == "__main__":
    sys.exit(main())
