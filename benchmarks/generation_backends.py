"""Benchmark: the tuned SmolLM2 answering the book's 110 test prompts, transformers vs llama.cpp.

One run, one process, the same prompt ids for every backend (the training template, encoded once):

* **transformers**: :func:`llm_finetune.evaluation.generation.generate_responses` (fp32, length-sorted
  batches with the KV cache) - the project's default backend;
* **llamacpp q8_0 / f16**: the same tuned model exported to GGUF by llama.cpp's converter and served
  in-process by llama.cpp (``generate.backend: llamacpp``), ``--concurrency`` requests in flight.

Greedy decoding; it reports responses/s, new tokens/s and how many responses are identical to the
transformers ones, with the ratio of each backend's responses/s to transformers'. Conversion time is
reported apart (once per model, not per prompt). The tuned model is base + the newest sft adapter
(``make run`` writes one; ``--adapter`` picks another); the book's data must be in ../shared/data/real.

Run:  .venv/bin/python benchmarks/generation_backends.py [--max-new-tokens 64] [--concurrency 2]
Writes benchmarks/results/generation_backends.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
import torch
from bench_machine import machine, uptime, write_result

from llm_finetune.data.align import align_dataset
from llm_finetune.data.split import split_records
from llm_finetune.evaluation.generation import Decoding, completion_texts, end_token_ids, generate_responses
from llm_finetune.evaluation.llamacpp import generate_with_llamacpp
from llm_finetune.io.paths import newest_version
from llm_finetune.models.loading import load_causal_lm, load_tokenizer
from llm_finetune.tokens.conversations import encode_prompts
from llm_finetune.tokens.templates import stop_token_ids, template_from_saved

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "real" / "book_instruction_data.json"
MODELS = REPO / "data" / "06_models"
RESULT = REPO / "benchmarks" / "results" / "generation_backends.json"


def book_test_records(limit: int | None) -> list[dict]:
    raw = {"origin": str(DATA), "records": json.loads(DATA.read_text()), "lines": None, "unreadable": []}
    aligned, _ = align_dataset("book", raw, {"format": "alpaca"})
    _, _, test = split_records(aligned, 0.85, 0.10, seed=0, mode="ordered")
    return test[:limit] if limit else test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers backend")
    parser.add_argument("--concurrency", type=int, default=2, help="llama.cpp requests in flight (server slots)")
    parser.add_argument("--types", nargs="+", default=["q8_0", "f16"])
    parser.add_argument("--adapter", type=Path, default=None, help="default: the newest data/06_models/sft/adapter")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: the book's data is not at {DATA}")
        return 0
    adapter = args.adapter or newest_version(MODELS / "sft" / "adapter")
    base = newest_version(MODELS / "base_model")
    if adapter is None or base is None:
        print("skipped: no sft adapter yet (run `make run` first)")
        return 0
    torch.set_num_threads(args.threads)
    records = book_test_records(args.limit)
    tokenizer = load_tokenizer(adapter, padding_side="left")
    template = template_from_saved(json.loads((adapter / "prompt_template.json").read_text()), tokenizer)
    model = load_causal_lm(base, dtype=torch.float32, adapter=adapter).eval()
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    load_before = uptime()
    print(f"{len(records)} test rows; base {base}; adapter {adapter}; template {template.name}; {load_before}")

    generate_responses(model, tokenizer, records[:2], template, 2, decoding=Decoding(max_new_tokens=4))  # warm-up
    reference, timing = generate_responses(model, tokenizer, records, template, args.batch_size, decoding=decoding)
    rows = [{"backend": "transformers", "dtype": "fp32", "seconds": timing["seconds"],
             "responses_per_s": timing["responses_per_s"], "tokens_per_s": timing["tokens_per_s"],
             "new_tokens": timing["new_tokens"], "identical_to_transformers": f"{len(records)}/{len(records)}",
             "convert_seconds": None}]
    encoded = encode_prompts(records, template, tokenizer)
    end_ids = list(dict.fromkeys([*end_token_ids(model, tokenizer), *stop_token_ids(template, tokenizer)]))
    outputs = {"transformers": reference}
    for kind in args.types:
        settings = {"gguf_type": kind, "concurrency": args.concurrency, "n_threads": args.threads}
        generated, served = generate_with_llamacpp(model, tokenizer, encoded, decoding, end_ids, settings)
        texts = completion_texts(tokenizer, generated, end_ids, decoding)
        outputs[f"llamacpp {kind}"] = texts
        same = sum(a == b for a, b in zip(reference, texts))
        rows.append({"backend": "llamacpp", "dtype": kind, "seconds": served["seconds"],
                     "responses_per_s": served["responses_per_s"], "tokens_per_s": served["tokens_per_s"],
                     "new_tokens": served["new_tokens"], "identical_to_transformers": f"{same}/{len(records)}",
                     "convert_seconds": served["convert_seconds"]})
    load_after = uptime()
    base_rps = rows[0]["responses_per_s"]
    print(f"\n{len(records)} prompts, greedy, max_new_tokens={args.max_new_tokens}, {args.threads} threads, "
          f"llama.cpp concurrency {args.concurrency}; {datetime.date.today()}")
    print("| backend | weights | seconds | responses/s | vs transformers | new tokens/s | identical to transformers "
          "| GGUF conversion s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["ratio_vs_transformers"] = round(r["responses_per_s"] / base_rps, 2)
        print(f"| {r['backend']} | {r['dtype']} | {r['seconds']} | {r['responses_per_s']} | "
              f"{r['ratio_vs_transformers']}x | {r['tokens_per_s']} | {r['identical_to_transformers']} | "
              f"{r['convert_seconds'] if r['convert_seconds'] is not None else '-'} |")
    print(f"\nload before: {load_before}\nload after:  {load_after}")
    if not args.no_save:
        write_result(RESULT, {
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine({}),
            "base": str(base), "adapter": str(adapter), "rows": len(records), "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size, "concurrency": args.concurrency, "threads": args.threads,
            "load_before": load_before, "load_after": load_after, "results": rows,
            "examples": [{k: v[i] for k, v in outputs.items()} for i in range(min(5, len(records)))]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
