"""What several benchmarks share: the published score record, rounding, review score pairs, chat messages.

Also the readers of the benchmarks' JSON and JSONL files. Imports nothing of ours.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# A LLaVA-Bench / Vicuna review whose first line is not exactly two numbers gets this tuple.
FAILED_PAIR = (-1.0, -1.0)


@dataclass
class BenchmarkScore:
    """A benchmark result as published: everything rounded to one decimal on the 0-100 scale."""

    overall: float
    categories: dict[str, float]
    runs: list[float]
    std: float
    parse_failures: int = 0
    # Benchmark-specific extras (per-run categories, counts, ...); not part of the CLI's JSON contract.
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "overall": self.overall,
            "categories": dict(self.categories),
            "runs": list(self.runs),
            "std": self.std,
            "parse_failures": self.parse_failures,
        }


def round1(value: float) -> float:
    """Round to 0.1 as MM-Vet's published script does (numpy). LLaVA's summariser uses Python's round(),
    which gives the same result on every published value."""
    return float(np.round(value, 1))


def population_std(values: Sequence[float]) -> float:
    return float(np.std(np.asarray(values, dtype=float))) if len(values) else 0.0


def parse_score_pair(reply: str) -> tuple[float, float]:
    """(first assistant's score, second assistant's score) from the first line of a pairwise review.

    Commas count as separators; the line must hold exactly two numbers, otherwise FAILED_PAIR.
    """
    first_line = (reply or "").split("\n", 1)[0]
    tokens = first_line.replace(",", " ").split()
    if len(tokens) != 2:
        return FAILED_PAIR
    try:
        pair = (float(tokens[0]), float(tokens[1]))
    except ValueError:
        return FAILED_PAIR
    # float() accepts "nan"/"inf"; a judge score never is one.
    return pair if all(math.isfinite(x) for x in pair) else FAILED_PAIR


def has_score_pair(reply: str) -> bool:
    """Whether a pairwise review starts with the two scores it must give."""
    return parse_score_pair(reply) != FAILED_PAIR


def review_pair(row: Mapping, stored_key: str, text_key: str) -> tuple[float, float]:
    """The stored score pair of a review row, re-parsed from the reply text only when none was stored."""
    if stored_key in row and row[stored_key] is not None:
        reference, model = row[stored_key]
        return float(reference), float(model)
    return parse_score_pair(row.get(text_key, ""))


def review_pairs(rows: Iterable[Mapping], stored_key: str, text_key: str,
                 category_of: Callable[[Mapping], str | None], exclude_failed: bool) -> tuple[list, dict, int]:
    """(every pair, pairs by category, parse failures) of a pairwise review file. A failed parse is counted and
    kept as FAILED_PAIR, as the published summarisers do, unless `exclude_failed`; `category_of` None: no
    category for that row."""
    every: list[tuple[float, float]] = []
    by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    failures = 0
    for row in rows:
        pair = review_pair(row, stored_key, text_key)
        failures += pair == FAILED_PAIR
        if exclude_failed and pair == FAILED_PAIR:
            continue
        every.append(pair)
        category = category_of(row)
        if category is not None:
            by_category[category].append(pair)
    return every, by_category, failures


# The system message both LLaVA-Bench and Vicuna-80 reviews are sent with.
REVIEW_SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."


def chat(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str | Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
