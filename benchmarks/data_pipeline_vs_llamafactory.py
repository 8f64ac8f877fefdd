"""Benchmark: our data nodes (download + align + split) vs LLaMA-Factory's loader on 100,000 alpaca rows.

The input is built by repeating and varying ``data/01_raw/demo_instructions.json`` (1,415 rows)
into a JSON array of ``--rows`` alpaca rows (instruction, input, output) under ``/tmp/bench_data``.
Each side runs in its own fresh subprocess, so peak RSS (``VmHWM``) is per side:

* **ours** (this venv): ``resolve_dataset_plan`` -> ``download_raw_data`` -> ``align_records`` ->
  ``split_dataset`` (hash mode, 0.85 / 0.10). Apart from the ratio: writing the three splits
  with ``JSONLinesDataset`` and ``check_contamination`` (TF-IDF, threshold 0.9), which
  LLaMA-Factory has no equivalent of;
* **LLaMA-Factory** (its own venv): ``datasets.load_dataset("json")`` with the arguments of its
  ``_load_single_dataset``, ``llamafactory.data.converter.align_dataset`` with the
  ``DatasetAttr`` from ``get_dataset_list`` and ``DataArguments(val_size=0.15)``, then
  ``llamafactory.data.data_utils.split_dataset`` (train / validation). It gets a fresh,
  empty datasets cache, so its figures are a first run (no cache hits).

LLaMA-Factory venv (never install it into .venv; torchaudio has no build for torch 2.13, so the
child stubs that module: audio is never touched on this path)::

    python3 -m venv /tmp/lf-venv
    /tmp/lf-venv/bin/pip install torch==2.13.0
    /tmp/lf-venv/bin/pip install --no-deps llamafactory==0.9.5
    /tmp/lf-venv/bin/pip install "datasets>=2.16,<=4.0.0" "transformers>=4.55,<=5.6.0,!=4.57.0" \\
        "peft>=0.18,<=0.18.1" "accelerate>=1.3,<=1.11" omegaconf

Run:  .venv/bin/python benchmarks/data_pipeline_vs_llamafactory.py [--rows 100000] [--lf-python /tmp/lf-venv/bin/python]
Writes benchmarks/results/data_pipeline_vs_llamafactory.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_machine import machine, memory_mb, uptime

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "01_raw" / "demo_instructions.json"
RESULT = REPO / "benchmarks" / "results" / "data_pipeline_vs_llamafactory.json"
DATA_DIR = Path("/tmp/bench_data")
LF_PYTHON = "/tmp/lf-venv/bin/python"
PREFIXES = ("", "Please: ", "Task: ", "Quick question. ", "Kindly answer. ", "Now, ")
DATA_PARAMS = {"datasets": ["bench"], "max_quarantine_share": 0.05, "mix": {"strategy": "concat"}}
SPLIT = {"mode": "hash", "train_fraction": 0.85, "test_fraction": 0.10, "seed": 123}
CONTAMINATION = {"threshold": 0.9, "drop_train_duplicates": False}
STEPS = ("download_s", "align_s", "split_s")
MARK = "RESULT "


def build_input(rows: int) -> Path:
    """``rows`` alpaca rows: the demo rows in turn, each pass with a prefix and a pass number."""
    path = DATA_DIR / f"alpaca_{rows}.json"
    demo = json.loads(DEMO.read_text(encoding="utf-8"))
    out = []
    for i in range(rows):
        row, k = demo[i % len(demo)], i // len(demo)
        suffix = f" (variant {k})" if k else ""
        out.append({"instruction": PREFIXES[k % len(PREFIXES)] + row["instruction"] + suffix,
                    "input": row["input"], "output": row["output"]})
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def mark() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def laps(marks: list[tuple[float, float]], steps: tuple[str, ...]) -> dict:
    """Wall seconds (``step``) and CPU seconds of this process, all threads (``step`` -> ``*_cpu_s``)."""
    out = {}
    for (wall0, cpu0), (wall1, cpu1), step in zip(marks, marks[1:], steps):
        out |= {step: wall1 - wall0, step.replace("_s", "_cpu_s"): cpu1 - cpu0}
    return out


def child_ours(data: Path, work: Path, extras: bool) -> dict:
    """Our nodes, as the data pipeline chains them; with ``extras`` the JSON-lines write and contamination."""
    started = time.perf_counter()
    from llm_finetune.io import JSONLinesDataset
    from llm_finetune.pipelines.data.nodes import (
        align_records,
        check_contamination,
        download_raw_data,
        resolve_dataset_plan,
        split_dataset,
    )
    out = {"import_s": time.perf_counter() - started, "rss_after_import_mb": memory_mb()}
    t = [mark()]
    plan = resolve_dataset_plan(DATA_PARAMS, {"bench": {"path": str(data), "format": "alpaca"}})
    raw = download_raw_data(plan, str(work / "cache"))
    t.append(mark())
    aligned, quarantined, _ = align_records(raw, plan, DATA_PARAMS)
    t.append(mark())
    train, val, test = split_dataset(aligned, SPLIT)
    t.append(mark())
    out |= {"peak_rss_mb": memory_mb(), "rows_out": len(aligned), "quarantined": len(quarantined),
            "splits": [len(train), len(val), len(test)]}
    if not extras:
        return out | laps(t, STEPS)
    for name, records in (("train", train), ("val", val), ("test", test)):
        JSONLinesDataset(str(work / f"{name}.jsonl")).save(records)
    t.append(mark())
    _, summary, _ = check_contamination(train, val, test, CONTAMINATION)
    t.append(mark())
    out |= laps(t, STEPS + ("write_jsonl_s", "contamination_s"))
    return out | {"peak_rss_after_contamination_mb": memory_mb(), "contamination": summary}


def child_lf(data: Path, work: Path, extras: bool = False) -> dict:
    """LLaMA-Factory's load (as ``_load_single_dataset`` calls it), ``align_dataset`` and ``split_dataset``."""
    import types

    os.environ["HF_DATASETS_CACHE"] = str(work / "hf_cache")  # fresh and empty: a first run
    os.environ["DISABLE_VERSION_CHECK"] = "1"  # trl, gradio, ... are not installed: not on this path
    started = time.perf_counter()
    import transformers  # noqa: F401  probes for torchaudio at import, so import it before the stub

    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import datasets
    import llamafactory
    from llamafactory.data.converter import align_dataset
    from llamafactory.data.data_utils import split_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    datasets.disable_progress_bars()
    out = {"import_s": time.perf_counter() - started, "rss_after_import_mb": memory_mb(),
           "versions": {"llamafactory": llamafactory.__version__, "datasets": datasets.__version__,
                        "transformers": transformers.__version__, "torch": sys.modules["torch"].__version__}}
    data_args = DataArguments(dataset="bench", dataset_dir=str(data.parent), val_size=0.15)
    training_args = types.SimpleNamespace(local_process_index=0)  # align_dataset reads only this
    t = [mark()]
    attr = get_dataset_list(["bench"], {"bench": {"file_name": data.name}})[0]
    dataset = datasets.load_dataset("json", data_files=[str(data)], split=attr.split,
                                    cache_dir=str(work / "hf_cache"), num_proc=data_args.preprocessing_num_workers)
    t.append(mark())
    aligned = align_dataset(dataset, attr, data_args, training_args)
    t.append(mark())
    train, evaluation = split_dataset(aligned, None, data_args, seed=42)
    t.append(mark())
    out |= laps(t, STEPS)
    return out | {"peak_rss_mb": memory_mb(), "rows_out": len(aligned), "quarantined": 0,
                  "splits": [len(train["train"]), len(evaluation["validation"])]}


def run_child(python: str, side: str, data: Path, extras: bool) -> dict:
    """Run one side in a fresh process of ``python`` and return what it measured."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{side}_") as work:
        command = [python, __file__, "--child", side, "--data", str(data), "--work", work]
        proc = subprocess.run(command + ["--extras"] * extras, capture_output=True, text=True,
                              env=os.environ | {"TQDM_DISABLE": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{side} child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(MARK):])
    result["core_s"] = sum(result[step] for step in STEPS)
    result["core_cpu_s"] = sum(result[step.replace("_s", "_cpu_s")] for step in STEPS)
    return result


def summarise(runs: list[dict]) -> dict:
    """The first run's figures with the median of each timed step and the highest peak over all runs."""
    out = dict(runs[0])
    for key in (*STEPS, "core_s", "core_cpu_s"):
        out[key] = statistics.median(run[key] for run in runs)
    out["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    return out | {"core_s_runs": [round(run["core_s"], 3) for run in runs],
                  "core_cpu_s_runs": [round(run["core_cpu_s"], 3) for run in runs]}


def our_versions() -> dict:
    versions = {}
    for name in ("torch", "datasets", "sklearn", "kedro"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def table(rows: int, ours: dict, lf: dict | None) -> list[str]:
    """Markdown rows: the core step per side, then ours' extra steps."""
    lines = ["| side | step | wall s | rows/s | CPU s | peak RSS MB (RSS after imports) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, side in (("ours", ours), ("LLaMA-Factory", lf)):
        if side:
            lines.append(f"| {name} | download+align+split | {side['core_s']:.2f} | {rows / side['core_s']:,.0f} "
                         f"| {side['core_cpu_s']:.2f} | {side['peak_rss_mb']:,.0f} "
                         f"({side['rss_after_import_mb']:,.0f}) |")
    for step, label in (("write_jsonl", "write splits as JSON lines"), ("contamination", "contamination check")):
        peak = f"{ours['peak_rss_after_contamination_mb']:,.0f}" if step == "contamination" else ""
        lines.append(f"| ours | {label} (apart) | {ours[step + '_s']:.2f} | {rows / ours[step + '_s']:,.0f} "
                     f"| {ours[step + '_cpu_s']:.2f} | {peak} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--lf-python", default=LF_PYTHON, help="python of the LLaMA-Factory venv")
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per side, alternating; median time")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    parser.add_argument("--extras", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("ours", "lf"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = child_ours if args.child == "ours" else child_lf
        print(MARK + json.dumps(child(args.data, args.work, args.extras), default=str))
        return 0

    data = build_input(args.rows)
    print(f"input: {data} ({args.rows} rows, {data.stat().st_size / 1e6:.1f} MB)")
    load_before = uptime()
    has_lf = Path(args.lf_python).is_file()
    if not has_lf:
        print(f"skipped LLaMA-Factory: {args.lf_python} does not exist (see this script's docstring to set it up)")
    runs = {"ours": [], "lf": []}
    for i in range(args.repeats):
        for side, python in (("ours", sys.executable), ("lf", args.lf_python))[::1 if i % 2 == 0 else -1]:
            if side == "ours" or has_lf:
                runs[side].append(run_child(python, side, data, extras=i == 0))
                run = runs[side][-1]
                print(f"run {i + 1} {side}: {run['core_s']:.2f} s ({run['core_cpu_s']:.2f} CPU s), "
                      f"peak {run['peak_rss_mb']} MB")
    load_after = uptime()
    ours, lf = summarise(runs["ours"]), summarise(runs["lf"]) if runs["lf"] else None

    ratios = lf and {"rows_per_s_ours_over_lf": round(lf["core_s"] / ours["core_s"], 2),
                     "cpu_rows_per_s_ours_over_lf": round(lf["core_cpu_s"] / ours["core_cpu_s"], 2),
                     "rows_per_s_ours_with_jsonl_write_over_lf": round(
                         lf["core_s"] / (ours["core_s"] + ours["write_jsonl_s"]), 2),
                     "peak_rss_ours_over_lf": round(ours["peak_rss_mb"] / lf["peak_rss_mb"], 2),
                     "peak_rss_above_imports_ours_over_lf": round(
                         (ours["peak_rss_mb"] - ours["rss_after_import_mb"])
                         / (lf["peak_rss_mb"] - lf["rss_after_import_mb"]), 2)}
    print(f"\n{args.rows} alpaca rows, median of {args.repeats} fresh runs per side; {datetime.date.today()}")
    print("\n".join(table(args.rows, ours, lf)))
    print(f"\nratios (ours / LLaMA-Factory): {ratios}\nload before: {load_before}\nload after:  {load_after}")
    if not args.no_save:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps({
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "rows": args.rows,
            "input_mb": round(data.stat().st_size / 1e6, 1), "machine": machine(our_versions()), "load_before": load_before,
            "load_after": load_after, "split": SPLIT, "contamination_params": CONTAMINATION,
            "repeats": args.repeats, "lf_cache": "fresh empty HF_DATASETS_CACHE per run (first run, no cache hits)",
            "ours": ours, "llamafactory": lf, "ratios": ratios}, indent=2, default=str) + "\n")
        print(f"wrote {RESULT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
