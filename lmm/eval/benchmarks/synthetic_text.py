"""The synthetic data's text-only split (text_eval.json): the toy study's language score, Table 5's analogue."""

from __future__ import annotations

from lmm.eval.benchmarks.base import EvalContext, Item, MissingBenchmarkData, read_json
from lmm.eval.benchmarks.synthetic import Synthetic, synthetic_folder


class SyntheticText(Synthetic):
    """Short-answer arithmetic, comparison, opposite and spelling questions with no image, scored by exact match."""

    name = "synthetic_text"

    def load(self, ctx: EvalContext) -> list[Item]:
        folder = synthetic_folder(ctx)
        if not (folder / "text_eval.json").exists():
            raise MissingBenchmarkData(f"no text_eval.json in {folder} (synthetic data older than generator "
                                       "version 3: delete the folder to regenerate it, or set eval.paths.synthetic)")
        return [Item(r["id"], r["question"], None, {"capability": r["capability"], "answer": r["answer"]})
                for r in read_json(folder / "text_eval.json")]
