"""`python -m lmm.data.inspect`: show how a data file tokenises, with the trained tokens marked."""

from __future__ import annotations

import argparse
import json
import sys

from .dataset import load_records
from .tokenize import IGNORE_INDEX, tokenize_conversation
from .tokenizer import load_tokenizer


def tokenize_records(records, template, tokenizer, max_length=None) -> list[dict]:
    """One `{"id", "input_ids", "labels"}` per record; the image stays ONE placeholder token."""
    out = []
    for index, record in enumerate(records):
        sample = tokenize_conversation(
            record.get("conversations", []), template, tokenizer, max_length, has_image=bool(record.get("image"))
        )
        out.append({"id": record.get("id", index), **sample})
    return out


def render_marked(sample: dict, tokenizer) -> str:
    """Tokens separated by spaces, trained ones in [brackets]; newlines shown as \\n."""
    tokens = tokenizer.convert_ids_to_tokens(sample["input_ids"])
    shown = []
    for token, label in zip(tokens, sample["labels"]):
        token = token.replace("\n", "\\n")
        shown.append(token if label == IGNORE_INDEX else f"[{token}]")
    return " ".join(shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmm.data.inspect", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("file", help="LLaVA/ShareGPT JSON (or .jsonl) file")
    parser.add_argument("--template", required=True, help="plain, vicuna_v1 or llama_2")
    parser.add_argument("--tokenizer", required=True, help="'tiny', a tokenizer folder, or a tokenizer.json file")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    parser.add_argument("--cache-dir", default=None, help="where the tiny tokenizer is cached")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {id, input_ids, labels}")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.tokenizer, args.cache_dir)
    records = load_records(args.file)[: args.limit]
    samples = tokenize_records(records, args.template, tokenizer, args.max_length)
    if args.json:
        json.dump(samples, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for sample in samples:
        trained = sum(label != IGNORE_INDEX for label in sample["labels"])
        print(f"== {sample['id']}: {len(sample['input_ids'])} tokens, {trained} trained")
        print(render_marked(sample, tokenizer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
