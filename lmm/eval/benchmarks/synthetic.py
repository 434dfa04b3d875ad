"""The synthetic data's held-out set: one-word answers about drawn shapes, scored by exact match.

Besides the scores, the result keeps `correct` ({question id: 1 or 0}, in the evaluation's scores.json): the
per-question outcomes that analysis/intervals.py resamples for 95 % intervals and paired differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmm.eval.benchmarks.base import Benchmark, EvalContext, Item, MissingBenchmarkData, read_json
from lmm.eval.synthetic import exact_match_scores, normalise


def synthetic_folder(ctx: EvalContext) -> Path:
    """eval.paths.synthetic, else the folder of the run's synthetic training data (generated if absent)."""
    if ctx.paths.synthetic:
        return Path(ctx.paths.synthetic)
    data = ctx.cfg.data
    if data.kind != "synthetic":
        raise MissingBenchmarkData(f"the run trained on data={data.name}, which has no synthetic held-out set; "
                                   "set eval.paths.synthetic to a synthetic data folder")
    folder = Path(data.path).parent
    if not (folder / "eval.json").exists():
        from lmm.training.data import ensure_synthetic

        ensure_synthetic(data)
    return folder


class Synthetic(Benchmark):
    name = "synthetic"

    def load(self, ctx: EvalContext) -> list[Item]:
        folder = synthetic_folder(ctx)
        if not (folder / "eval.json").exists():
            raise MissingBenchmarkData(f"no eval.json in {folder} (set eval.paths.synthetic)")
        return [Item(r["id"], r["question"], folder / "images" / r["image"],
                     {"capability": r["capability"], "answer": r["answer"]})
                for r in read_json(folder / "eval.json")]

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        scores = exact_match_scores([it.meta for it in items], list(answers))
        overall = scores["overall"]
        return {"overall": overall, "categories": scores["categories"], "runs": [overall], "std": 0.0,
                "parse_failures": 0, "count": scores["count"], "correct": correct_by_id(items, answers)}


def correct_by_id(items: Sequence[Item], answers: Sequence[str]) -> dict[str, int]:
    """{question id: 1 if the answer matched exactly (after normalising), else 0}."""
    return {str(it.id): int(normalise(a) == normalise(it.meta["answer"])) for it, a in zip(items, answers, strict=True)}
