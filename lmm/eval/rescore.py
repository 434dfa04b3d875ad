"""Command line: recompute a benchmark's published-scale score from saved judge outputs, no API calls."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lmm.eval import scorers
from lmm.eval.scorers import BenchmarkScore

BENCHMARKS = ("llava_bench", "mmvet", "mmbench", "vicuna80")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str | Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_tsv(path: str | Path) -> list[dict]:
    """Rows of a TSV as strings; the csv module copes with quoted fields that span lines."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def merge_mmvet_grades(files: Sequence[str | Path]) -> dict:
    """One grade mapping from one or more grade files; later files' runs follow earlier files' runs."""
    merged: dict[str, dict] = {}
    for path in files:
        for qid, record in read_json(path).items():
            slot = merged.setdefault(qid, {"score": [], "content": []})
            slot["score"].extend(record["score"])
            slot["content"].extend(record.get("content", [None] * len(record["score"])))
    return merged


def rescore(
    benchmark: str,
    files: Sequence[str | Path],
    capabilities: str | Path | None = None,
    questions: str | Path | None = None,
    category_column: str | None = None,
) -> BenchmarkScore:
    """Score saved judge outputs of one benchmark (see the CLI help for what FILE holds per benchmark)."""
    if not files:
        raise ValueError("no input files")
    if benchmark == "llava_bench":
        return scorers.llava_bench_score([read_jsonl(f) for f in files])
    if benchmark == "mmvet":
        if capabilities is None:
            raise ValueError("mmvet needs --capabilities (the questions file with a capability list per id)")
        return scorers.mmvet_score(merge_mmvet_grades(files), read_json(capabilities))
    if benchmark == "mmbench":
        rows = [row for f in files for row in read_tsv(f)]
        return scorers.mmbench_circular(rows, category_column=category_column)
    if benchmark == "vicuna80":
        if len(files) != 1:
            raise ValueError("vicuna80 scores one review file at a time")
        categories = {q["question_id"]: q["category"] for q in read_jsonl(questions)} if questions else None
        return scorers.vicuna80_score(read_jsonl(files[0]), categories)
    raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")


def format_table(benchmark: str, score: BenchmarkScore) -> str:
    """A short human-readable summary."""
    lines = [f"{benchmark}: {score.overall:.1f}"]
    if len(score.runs) > 1:
        runs = " / ".join(f"{r:.1f}" for r in score.runs)
        lines[0] += f"  (runs {runs}; std {score.std:.1f})"
    if "correct" in score.details:
        lines[0] += f"  ({score.details['correct']}/{score.details['questions']} questions)"
    width = max((len(name) for name in score.categories), default=0)
    lines += [f"  {name:<{width}}  {value:5.1f}" for name, value in score.categories.items()]
    integration = score.details.get("integration")
    if integration:
        lines.append("  capability integration:")
        width = max(len(name) for name in integration)
        lines += [f"    {name:<{width}}  {value:5.1f}" for name, value in integration.items()]
    if score.parse_failures:
        # Rescoring reproduces the published summarisers, which keep an unparsed review as (-1, -1);
        # `python -m lmm.eval` never publishes such a score for its own runs.
        lines.append(f"  parse failures: {score.parse_failures} (kept as the published summariser does)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lmm.eval.rescore",
        description="Recompute a benchmark score from saved judge outputs.",
        epilog=(
            "FILE per benchmark: llava_bench = review jsonl files, one per judge run "
            "(rows with category, tuple); "
            "mmvet = grade json (question id -> {score: [per run]}), one or more files; "
            "mmbench = TSV with index, prediction, answer; vicuna80 = one review jsonl (rows with score)."
        ),
    )
    parser.add_argument("benchmark", choices=BENCHMARKS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--capabilities", help="mmvet: questions json (id -> record with a capability list)")
    parser.add_argument("--questions", help="vicuna80: question jsonl, to report per-category scores")
    parser.add_argument("--category-column", help="mmbench: column holding categories (default: auto)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        score = rescore(args.benchmark, args.files, args.capabilities, args.questions, args.category_column)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(score.to_json()) if args.json else format_table(args.benchmark, score))
    return 0


if __name__ == "__main__":
    sys.exit(main())
