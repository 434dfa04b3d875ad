"""95 % intervals by bootstrap over evaluation questions: one cell's score, and contrasts between runs.

A score here is a percentage of questions answered right (the synthetic benchmarks' exact match), and
every run of a study answers the same questions, so runs are compared *paired*: each bootstrap replicate
draws one set of question indices (with replacement) and applies it to every run involved. That keeps the
shared difficulty of a question out of a difference's interval. Where a cell holds several runs (seeds),
each replicate also resamples the runs, so the interval covers seed-to-seed spread too.

The replicates are drawn from a fixed seed: the same records always give the same intervals (a second
`make demo` prints the same tables). Intervals are percentile intervals (2.5th and 97.5th percentile of
the replicates); the tables print them as `value ± half-width`.

Per-question outcomes (`correct`: {question id: 0/1}, written by the synthetic benchmarks) come from the
run's evaluation detail file, `<run>/eval/<benchmark>/beam<k>/scores.json` (the record keeps only the summary),
or from the record's entry where it holds them; a run without them (a W&B export) has no interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lmm.records import RECORD_FILE

SCORES_FILE = "scores.json"  # lmm.eval.runner.SCORES_FILE (not imported: the runner pulls in torch)
N_BOOT = 2000
SEED = 14
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate (the value on the full set of questions) and its 95 % interval [low, high]."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def above_zero(self) -> bool:
        return self.low > 0

    def below_zero(self) -> bool:
        return self.high < 0

    def format(self, decimals: int = 1, signed: bool = False) -> str:
        """`27.0 ± 3.1` (signed: `+4.2 ± 2.0`), the half-width of the percentile interval."""
        sign = "+" if signed else ""
        return f"{self.value:{sign}.{decimals}f} ± {self.half_width:.{decimals}f}"

    def interval(self, decimals: int = 1) -> str:
        return f"[{self.low:.{decimals}f}, {self.high:.{decimals}f}]"


def replicate_indices(n: int, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """`n_boot` × `n` question indices drawn with replacement from a fixed seed."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], method="inverted_cdf")
    return float(low), float(high)


def contrast(groups: Sequence[tuple[float, Sequence[np.ndarray]]], *, n_boot: int = N_BOOT,
             seed: int = SEED) -> Estimate:
    """Σ weight × (mean over the group's runs of their accuracy, in %), with its paired bootstrap interval.

    `groups` are (weight, runs): each run an array of 0/1 outcomes over the *same* questions in the same
    order. One group of weight 1 is a cell's score; (+1, [a]), (−1, [b]) is the difference a − b. Each
    replicate resamples the questions once for all runs; a group of several runs (seeds) is also resampled.
    """
    runs = [np.asarray(r, dtype=float) for _, group in groups for r in group]
    if not runs or any(not len(group) for _, group in groups):
        raise ValueError("every group of a contrast needs at least one run")
    n = len(runs[0])
    if n == 0 or any(len(r) != n for r in runs):
        raise ValueError("the runs of a contrast must answer the same, non-empty set of questions")
    index = replicate_indices(n, n_boot, seed)
    run_rng = np.random.default_rng(seed + 1)
    value, replicates = 0.0, np.zeros(n_boot)
    for weight, group in groups:
        matrix = np.stack([np.asarray(r, dtype=float) for r in group])  # runs × questions
        value += weight * 100 * matrix.mean()
        per_run = matrix[:, index].mean(axis=2) * 100  # runs × replicates
        if len(group) > 1:
            pick = run_rng.integers(0, len(group), size=(n_boot, len(group)))
            per_run = np.take_along_axis(per_run.T, pick, axis=1).T
        replicates += weight * per_run.mean(axis=0)
    low, high = _percentiles(replicates)
    return Estimate(value, low, high)


def score(runs: Sequence[Sequence[int]], **kwargs) -> Estimate:
    """One cell's score (%) and its interval: the mean accuracy of its runs (usually one)."""
    return contrast([(1.0, [np.asarray(r) for r in runs])], **kwargs)


def difference(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], **kwargs) -> Estimate:
    """Score of cell `a` minus score of cell `b` (percentage points), paired over questions."""
    return contrast([(1.0, list(a)), (-1.0, list(b))], **kwargs)


# -- per-question outcomes from the run records -------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _read_correct(folder: str, benchmark: str, beam: int) -> dict[str, int] | None:
    detail = _read_json(Path(folder) / "eval" / benchmark / f"beam{beam}" / SCORES_FILE)
    record = _read_json(Path(folder) / RECORD_FILE)
    entry = ((record.get("eval") or {}).get(benchmark) or {}).get(f"beam{beam}") or {}
    correct = detail.get("correct", entry.get("correct"))
    return {str(k): int(v) for k, v in correct.items()} if isinstance(correct, Mapping) else None


def outcomes(runs: pd.DataFrame, benchmark: str, beam: int = 1) -> dict[str, dict[str, int]]:
    """Run key (the tables' `_key` column) → {question id: 0/1}, for the runs whose record keeps them."""
    out = {}
    for key, folder in zip(runs["_key"], runs["folder"]):
        if isinstance(folder, str) and folder:
            correct = _read_correct(folder, benchmark, beam)
            if correct:
                out[key] = correct
    return out


def aligned(by_run: Mapping[str, Mapping[str, int]], keys: Sequence[str]) -> list[np.ndarray] | None:
    """The outcomes of `keys` as arrays over the questions they all answered (sorted ids); None if any lacks them."""
    if not keys or any(k not in by_run for k in keys):
        return None
    common = sorted(set.intersection(*(set(by_run[k]) for k in keys)))
    if not common:
        return None
    return [np.array([by_run[k][q] for q in common], dtype=float) for k in keys]
