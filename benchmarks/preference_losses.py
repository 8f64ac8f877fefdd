"""Benchmark: DPO, ORPO, SimPO and KTO side by side on the book's preference pairs, same data, same machine.

Each method is one ``kedro run`` of the project as a user runs it, in its own subprocess (peak RSS from
``wait4``: this parent stays ~50 MB, so its share of the figure is noise), one after the other, in a scratch copy of the project (conf copied, the base-model cache
shared with the repository's, so the packaged SmolLM2 is converted once):

* ``dpo`` (sigmoid, beta 0.1), ``orpo`` (beta 0.1) and ``simpo`` (beta 2.0, gamma 1.0, SimPO's
  recommended scale): ``kedro run --pipeline dpo --params "dpo.loss_type=..."``;
* ``kto`` (beta 0.1): ``kedro run --pipeline kto`` on the same pairs, each split into a desirable and
  an undesirable row.

Data: ``book_instruction_data_with_preference.json`` from ``../shared/data/real`` (the book's DPO
data; skipped with a message when absent), hash split with the stages' seed, so every method sees the
same train / val / test pairs. Budget: the first 160 training pairs (KTO: their 320 rows) for one
epoch, capped at ``--steps`` optimiser steps of 8 sequences pairs (KTO: 8 rows); the other settings are
the stages' defaults.

The table's accuracy is the held-out pairwise reward accuracy on the DPO scale, the base model as the
reference for every method: the share of test pairs whose chosen answer gains more log-probability
over the base model than the rejected one (``dpo.metrics`` ``tuned.rewards/accuracies``, ``kto.metrics``
``tuned.pairwise_accuracy``). The base model scores 0 (every pair a tie).

Run:  .venv/bin/python benchmarks/preference_losses.py [--steps 20]
Writes benchmarks/results/preference_losses.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_machine import machine, uptime

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO.parent / "shared" / "data" / "real" / "book_instruction_data_with_preference.json"
KEDRO = Path(sys.executable).parent / "kedro"
METHODS = {
    "dpo": ("dpo", {"dpo.loss_type": "sigmoid", "dpo.beta": 0.1}),
    "orpo": ("dpo", {"dpo.loss_type": "orpo", "dpo.beta": 0.1}),
    "simpo": ("dpo", {"dpo.loss_type": "simpo", "dpo.beta": 2.0, "dpo.gamma": 1.0}),
    "kto": ("kto", {"kto.loss_type": "kto", "kto.beta": 0.1}),
}


def scratch_project(root: Path) -> Path:
    """conf + pyproject of the repository, an empty data tree, the repository's base-model cache linked in."""
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "src").mkdir()
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "data" / "06_models").mkdir(parents=True)
    cache = REPO / "data" / "06_models" / "base_model_cache"
    cache.mkdir(parents=True, exist_ok=True)
    (root / "data" / "06_models" / "base_model_cache").symlink_to(cache)
    return root


def run(project: Path, stage: str, params: dict) -> dict:
    """One ``kedro run``: wall seconds, peak RSS (MB) and the exit code, its log kept in the project."""
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
                        "COLUMNS": "300"}
    command = [str(KEDRO), "run", "--pipeline", stage, "--params",
               ",".join(f"{key}={value}" for key, value in params.items())]
    log = (project / f"{stage}-{params.get('dpo.loss_type', params.get('kto.loss_type'))}.log").open("w")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    log.close()
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "log": log.name}


def latest(project: Path, relative: str) -> dict:
    folder = project / relative
    version = sorted(p.name for p in folder.iterdir())[-1]
    return json.loads((folder / version / folder.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per method (DPO / ORPO / SimPO)")
    parser.add_argument("--pairs", type=int, default=160, help="training pairs (KTO: twice as many rows)")
    args = parser.parse_args()
    if not BOOK.is_file():
        print(f"skipped: {BOOK} is absent (see ../shared/data/README.md)")
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="preference-losses-") as scratch:
        project = scratch_project(Path(scratch))
        for method, (stage, loss_params) in METHODS.items():
            rows = args.pairs * (2 if stage == "kto" else 1)
            steps = args.steps * (2 if stage == "kto" else 1)
            params = {"datasets.book_prefs.path": str(BOOK), "datasets.book_prefs.format": "alpaca",
                      "datasets.book_prefs.ranking": "true", f"{stage}_data.datasets": "book_prefs",
                      f"{stage}.train.max_train_rows": rows, f"{stage}.train.max_steps": steps,
                      f"{stage}.train.batch_size": 8} | loss_params
            outcome = run(project, stage, params)
            if outcome["rc"] != 0:
                raise SystemExit(f"{method}: kedro run failed (rc {outcome['rc']}); see {outcome['log']}")
            metrics = latest(project, f"data/08_reporting/{stage}/metrics.json")
            tuned = metrics["tuned"]
            accuracy = tuned["pairwise_accuracy"] if stage == "kto" else tuned["rewards/accuracies"]
            test = metrics["tuned"].get("pairs", metrics.get("test_pairs"))
            reference = {} if method in ("orpo", "simpo") else latest(project, f"data/05_model_input/{stage}/reference_logps.json")
            results.append({"method": method, "stage": stage, "params": loss_params, "test_pairs": test,
                            "pairwise_reward_accuracy": round(accuracy, 4),
                            "start_accuracy": metrics["start"].get("pairwise_accuracy", metrics["start"]["rewards/accuracies"])
                            if stage == "kto" else metrics["start"]["rewards/accuracies"],
                            "train_rows": metrics["train"].get("train_rows"), "steps": metrics["train"]["global_steps"],
                            "train_runtime_s": metrics["train"]["train_runtime_s"],
                            "reference_pass_s": reference.get("seconds", 0.0), **outcome})
            print(json.dumps(results[-1]), flush=True)
    import peft
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    out = {"date": datetime.date.today().isoformat(), "machine": machine(versions), "load": uptime(),
           "steps": args.steps, "pairs": args.pairs, "results": results}
    target = REPO / "benchmarks" / "results" / "preference_losses.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    dpo_rss = next(r["peak_rss_mb"] for r in results if r["method"] == "dpo")
    print("\n| method | held-out pairwise reward accuracy | test pairs | steps | train s | reference pass s | "
          "wall s | peak RSS MB | RSS / DPO's |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['method']} | {r['pairwise_reward_accuracy']:.3f} | {r['test_pairs']} | {r['steps']} | "
              f"{r['train_runtime_s']} | {r['reference_pass_s']} | {r['wall_s']} | {r['peak_rss_mb']:,} | "
              f"{r['peak_rss_mb'] / dpo_rss:.2f} |")
    print(f"\nwritten to {target}")


if __name__ == "__main__":
    main()
