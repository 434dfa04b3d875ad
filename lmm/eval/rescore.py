"""Command line: recompute a benchmark's published-scale score from saved judge outputs, no API calls."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lmm.eval.benchmarks import BENCHMARK_NAMES, get_benchmark
from lmm.eval.benchmarks.common import BenchmarkScore, read_json, read_jsonl  # noqa: F401  (re-exported)
from lmm.eval.benchmarks.mmbench import read_tsv  # noqa: F401  (re-exported)

# The registered benchmarks whose score can be recomputed from saved files.
BENCHMARKS = tuple(name for name in BENCHMARK_NAMES if get_benchmark(name).rescore_files)


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
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    return get_benchmark(benchmark).rescore(files, capabilities=capabilities, questions=questions,
                                            category_column=category_column)


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
        epilog="FILE per benchmark: " + "; ".join(f"{name} = {get_benchmark(name).rescore_files}"
                                                  for name in BENCHMARKS) + ".",
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
