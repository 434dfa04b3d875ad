"""MMBench: multiple choice about an image, one row per circular pass, scored by circular accuracy."""

from __future__ import annotations

import base64
import csv
import io
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from lmm.atomic import write_text_atomic
from lmm.eval.benchmarks.base import Benchmark, EvalContext, Item, require
from lmm.eval.benchmarks.common import BenchmarkScore, round1

# MMBench L2 abilities as the paper abbreviates them (names as in the MMBench dev/test TSVs).
MMBENCH_ABILITY_ABBREVIATIONS = {
    "logic_reasoning": "LR",
    "attribute_reasoning": "AR",
    "relation_reasoning": "RR",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "coarse_perception": "CP",
}


MMBENCH_QUESTION_MODULUS = 1_000_000


def _pass_correct(row: Mapping) -> bool:
    prediction = str(row.get("prediction") or "").strip().upper()
    answer = str(row.get("answer") or "").strip().upper()
    return bool(answer) and prediction == answer


def _pick_category_column(rows: Sequence[Mapping], category_column: str | None) -> str | None:
    if category_column is not None or not rows:
        return category_column
    for candidate in ("l2-category", "category"):
        if rows[0].get(candidate) not in (None, ""):
            return candidate
    return None


def mmbench_circular(rows: Iterable[Mapping], category_column: str | None = None) -> BenchmarkScore:
    """MMBench circular accuracy: a question (index % 1e6) is right only if every circular pass is right.

    rows: dicts with `index`, `prediction` (an option letter) and `answer`. Categories come from
    `category_column`, by default `l2-category` (abbreviated LR/AR/... where known) else `category`.
    """
    rows = list(rows)
    column = _pick_category_column(rows, category_column)
    correct: dict[int, bool] = {}
    question_category: dict[int, str] = {}
    for row in rows:
        qid = int(row["index"]) % MMBENCH_QUESTION_MODULUS
        correct[qid] = correct.get(qid, True) and _pass_correct(row)
        if column is not None:
            name = str(row[column])
            question_category.setdefault(qid, MMBENCH_ABILITY_ABBREVIATIONS.get(name, name))
    if not correct:
        raise ValueError("no MMBench rows given")

    by_category: dict[str, list[bool]] = defaultdict(list)
    for qid, category in question_category.items():
        by_category[category].append(correct[qid])
    n_correct = sum(correct.values())
    overall = round1(n_correct / len(correct) * 100)
    return BenchmarkScore(
        overall=overall,
        categories={name: round1(sum(v) / len(v) * 100) for name, v in sorted(by_category.items())},
        runs=[overall],
        std=0.0,
        details={
            "correct": n_correct,
            "questions": len(correct),
            "passes": len(rows),
            "category_column": column,
        },
    )

OPTIONS = ("A", "B", "C", "D")
SINGLE_PREDICTION_PROMPT = "Answer with the option's letter from the given choices directly."
_LETTER = re.compile(r"^\s*[(\[]?([A-D])(?:[)\].:,]|\s|$)")


def is_none(value) -> bool:
    """An empty TSV cell (read as '', 'nan' or 'None', or a float NaN)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return str(value).strip().lower() in ("", "nan", "none")


def read_tsv(path: str | Path) -> list[dict]:
    """The TSV's rows as strings; base64 image cells are far longer than csv's default field limit."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def options_of(row: Mapping) -> list[str]:
    """The option texts A, B, ... up to the first empty one."""
    out = []
    for letter in OPTIONS:
        if letter not in row or is_none(row[letter]):
            break
        out.append(str(row[letter]))
    return out


def build_prompt(row: Mapping) -> str:
    """LLaVA's MMBench prompt: hint, question, one `X. option` line per option, then the letter request."""
    question = str(row["question"])
    if not is_none(row.get("hint")):
        question = f"{row['hint']}\n{question}"
    for letter, option in zip(OPTIONS, options_of(row)):
        question += f"\n{letter}. {option}"
    return f"{question}\n{SINGLE_PREDICTION_PROMPT}"


def circular_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows as circular passes. Files that already hold them (index >= 1e6) pass through; otherwise
    each question gets one pass per option, options rotated, answer following, index k * 1e6 + index."""
    if any(int(r["index"]) >= MMBENCH_QUESTION_MODULUS for r in rows):
        return list(rows)
    out = []
    for row in rows:
        options = options_of(row)
        answer = str(row.get("answer") or "").strip()
        for k in range(max(1, len(options))):
            rotated = options[k:] + options[:k]
            new = {**row, "index": str(int(row["index"]) + k * MMBENCH_QUESTION_MODULUS)}
            new.update({letter: text for letter, text in zip(OPTIONS, rotated)})
            if answer in OPTIONS[:len(options)]:
                new["answer"] = OPTIONS[(OPTIONS.index(answer) - k) % len(options)]
            out.append(new)
    return out


def decode_image(cell: str) -> Image.Image:
    with Image.open(io.BytesIO(base64.b64decode(cell))) as image:
        return image.convert("RGB")


def image_cells(rows: Sequence[Mapping]) -> dict[str, str]:
    """index -> base64 image. A short cell names the index of the row holding the image (as VLMEvalKit reads it)."""
    cells = {str(r["index"]): str(r.get("image", "")) for r in rows}
    resolved = {}
    for index, cell in cells.items():
        if len(cell) <= 64 and cell in cells:
            cell = cells[cell]
        resolved[index] = cell
    return resolved


def extract_choice(answer: str, options: Sequence[str]) -> str:
    """The option letter an answer gives: a leading capital letter ("B", "(B)", "B. text"), a lone letter,
    else an option's exact text; '' when none of these."""
    letters = OPTIONS[:len(options)]
    match = _LETTER.match(answer or "")
    if match and match.group(1) in letters:
        return match.group(1)
    text = (answer or "").strip().rstrip(".").casefold()
    if text.upper() in letters:  # a lone lower-case letter ("a" inside a sentence is no answer)
        return text.upper()
    for letter, option in zip(OPTIONS, options):
        if text and text == option.strip().rstrip(".").casefold():
            return letter
    return ""


class MMBench(Benchmark):
    name = "mmbench"

    rescore_files = "TSV with index, prediction, answer"

    def rescore(self, files, *, capabilities=None, questions=None, category_column=None) -> BenchmarkScore:
        rows = [row for f in files for row in read_tsv(f)]
        return mmbench_circular(rows, category_column=category_column)

    def load(self, ctx: EvalContext) -> list[Item]:
        rows = circular_rows(read_tsv(require(ctx.paths.mmbench, "MMBench TSV", "eval.paths.mmbench")))
        images = image_cells(rows)
        items = []
        for row in rows:
            cell = images[str(row["index"])]
            meta = {k: v for k, v in row.items() if k != "image"}
            items.append(Item(int(row["index"]), build_prompt(row), lambda cell=cell: decode_image(cell), meta))
        return items

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        rows, failures = [], 0
        for it, answer in zip(items, answers, strict=True):
            letter = extract_choice(answer, options_of(it.meta))
            failures += not letter
            rows.append({**it.meta, "prediction": letter, "raw_prediction": answer})
        write_predictions(out / "predictions.tsv", rows)
        score = mmbench_circular(rows)
        return {**score.to_json(), "parse_failures": failures, "count": score.details["questions"],
                "details": score.details}


def write_predictions(path: Path, rows: Sequence[dict]) -> None:
    """Rows with the prediction letter (the columns of MMBench's upload file, plus the raw answer)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
