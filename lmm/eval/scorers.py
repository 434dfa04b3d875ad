"""Turn saved judge outputs into benchmark scores on the published 0-100 scale."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lmm.eval.prompts import LLAVA_BENCH_PREFIX, MMVET_RETRY_SUFFIX

# A LLaVA-Bench / Vicuna review whose first line is not exactly two numbers gets this tuple.
FAILED_PAIR = (-1.0, -1.0)

# Short names used in reports -> the names the LLaVA paper's tables use.
LLAVA_BENCH_PAPER_NAMES = {"conv": "conversation", "detail": "detail", "complex": "reasoning"}

# MM-Vet's six capabilities, in the column order of its published cap-score CSVs (most frequent first).
MMVET_CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")

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


# ---------------------------------------------------------------------------------------------------------
# Pairwise reviews (LLaVA-Bench, Vicuna-80)
# ---------------------------------------------------------------------------------------------------------


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


def _review_pair(row: Mapping, stored_key: str, text_key: str) -> tuple[float, float]:
    """The stored score pair of a review row, re-parsed from the reply text only when none was stored."""
    if stored_key in row and row[stored_key] is not None:
        reference, model = row[stored_key]
        return float(reference), float(model)
    return parse_score_pair(row.get(text_key, ""))


def llava_bench_short_name(category: str) -> str:
    """'llava_bench_conv' -> 'conv' (names without the prefix pass through)."""
    return category.removeprefix(LLAVA_BENCH_PREFIX)


def llava_bench_review_row(question_id: int, category: str, reply: str) -> dict:
    """A review row in the published layout, for a judge reply to one LLaVA-Bench question."""
    full = category if category.startswith(LLAVA_BENCH_PREFIX) else LLAVA_BENCH_PREFIX + category
    return {
        "question_id": question_id,
        "category": full,
        "content": reply,
        "tuple": list(parse_score_pair(reply)),
    }


def _llava_bench_order(names: Iterable[str]) -> list[str]:
    """The paper's column order (conv, detail, complex), then any other category alphabetically."""
    names = set(names)
    known = [n for n in LLAVA_BENCH_PAPER_NAMES if n in names]
    return known + sorted(names - set(known))


def _relative(pairs: Sequence[tuple[float, float]]) -> float:
    """mean(model) / mean(reference) x 100, a ratio of means (not a mean of ratios)."""
    reference = sum(p[0] for p in pairs) / len(pairs)
    model = sum(p[1] for p in pairs) / len(pairs)
    return model / reference * 100


@dataclass
class LlavaBenchRun:
    """One judge run of LLaVA-Bench, unrounded."""

    overall: float
    categories: dict[str, float]
    parse_failures: int


def llava_bench_run(rows: Iterable[Mapping], exclude_failed: bool = False) -> LlavaBenchRun:
    """Relative scores of one review file (rows with `category` and `tuple`, or `content` to parse).

    Failed parses are counted. By default they stay in the means as (-1, -1), as the published summariser
    does (to reproduce published files); `exclude_failed` leaves them out instead (our own runs).
    """
    by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    every: list[tuple[float, float]] = []
    failures = 0
    for row in rows:
        pair = _review_pair(row, "tuple", "content")
        failures += pair == FAILED_PAIR
        if exclude_failed and pair == FAILED_PAIR:
            continue
        by_category[llava_bench_short_name(row["category"])].append(pair)
        every.append(pair)
    if not every:
        raise ValueError(f"a LLaVA-Bench review file has no {'parsed reviews' if failures else 'rows'}")
    categories = {name: _relative(by_category[name]) for name in _llava_bench_order(by_category)}
    return LlavaBenchRun(overall=_relative(every), categories=categories, parse_failures=failures)


def llava_bench_score(runs: Sequence[Iterable[Mapping]], exclude_failed: bool = False) -> BenchmarkScore:
    """LLaVA-Bench over several judge runs: the published number is the mean of the runs' scores.

    `exclude_failed`: see `llava_bench_run`.
    """
    per_run = [llava_bench_run(rows, exclude_failed) for rows in runs]
    if not per_run:
        raise ValueError("no LLaVA-Bench review runs given")
    names = _llava_bench_order({name for run in per_run for name in run.categories})
    categories = {
        name: round1(statistics.fmean(run.categories[name] for run in per_run if name in run.categories))
        for name in names
    }
    totals = [run.overall for run in per_run]
    return BenchmarkScore(
        overall=round1(statistics.fmean(totals)),
        categories=categories,
        runs=[round1(t) for t in totals],
        std=round1(population_std(totals)),
        parse_failures=sum(run.parse_failures for run in per_run),
        details={
            "run_categories": [{k: round1(v) for k, v in run.categories.items()} for run in per_run],
            "paper_names": {k: LLAVA_BENCH_PAPER_NAMES.get(k, k) for k in names},
        },
    )


def paper_category_names(categories: Mapping[str, float]) -> dict[str, float]:
    """Re-key LLaVA-Bench short category names (conv/detail/complex) to the paper's names."""
    return {LLAVA_BENCH_PAPER_NAMES.get(k, k): v for k, v in categories.items()}


def _ratio_of_sums(pairs: Sequence[tuple[float, float]]) -> float:
    """sum(target) / sum(reference) x 100 (equal to LLaVA-Bench's ratio of means up to float rounding)."""
    return sum(p[1] for p in pairs) / sum(p[0] for p in pairs) * 100


def vicuna80_score(
    rows: Iterable[Mapping], question_categories: Mapping[int, str] | None = None, exclude_failed: bool = False
) -> BenchmarkScore:
    """Vicuna-80 relative score of one review file: sum(target) / sum(reference) x 100.

    Rows carry `score: [reference, target]` (or `text` to parse).
    Per-category scores need a question_id -> category map. Failed parses are counted; they stay in the
    sums as (-1, -1) like the published files, unless `exclude_failed` (our own runs).
    """
    pairs: list[tuple[float, float]] = []
    by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    failures = 0
    for row in rows:
        pair = _review_pair(row, "score", "text")
        failures += pair == FAILED_PAIR
        if exclude_failed and pair == FAILED_PAIR:
            continue
        pairs.append(pair)
        if question_categories is not None:
            by_category[question_categories[row["question_id"]]].append(pair)
    if not pairs:
        raise ValueError(f"a Vicuna-80 review file has no {'parsed reviews' if failures else 'rows'}")
    overall = _ratio_of_sums(pairs)
    return BenchmarkScore(
        overall=round1(overall),
        categories={name: round1(_ratio_of_sums(p)) for name, p in sorted(by_category.items())},
        runs=[round1(overall)],
        std=0.0,
        parse_failures=failures,
        details={"reference_sum": sum(p[0] for p in pairs), "target_sum": sum(p[1] for p in pairs)},
    )


# ---------------------------------------------------------------------------------------------------------
# MM-Vet
# ---------------------------------------------------------------------------------------------------------


def parse_mmvet_grade(reply: str | None) -> float | None:
    """The grade in a single MM-Vet grader reply, or None when the reply is not a valid grade.

    As in the published grader: the text before the first space, stripped, must be a number in [0, 1].
    """
    if reply is None:
        return None
    token = reply.split(" ")[0].strip()
    try:
        grade = float(token)
    except ValueError:
        return None
    # "nan" parses as a float and slips past a range check; it is not a grade.
    if not math.isfinite(grade) or not 0.0 <= grade <= 1.0:
        return None
    return grade


@dataclass
class MMVetGrade:
    score: float
    reply: str | None  # the last reply seen
    calls: int
    valid: bool  # False when the retries ran out and the grade defaulted to 0.0


def grade_mmvet_with_retries(
    judge_call: Callable[[list[dict], float], str | None],
    query: str,
    max_retries: int = 5,
    temperature_step: float = 0.5,
) -> MMVetGrade:
    """Grade one MM-Vet answer with the published retry rule.

    `judge_call(messages, temperature)` makes one grader call and returns the reply text; None (a call that
    failed even after the client's own retries) counts as an invalid reply, so check `valid` and re-grade.
    The first call sends `query` at temperature 0. While the reply is no valid grade, the query is re-sent
    with a request for a digit appended, at temperature 0, 0.5, 1.0, ... . The published loop gives up
    (grade 0.0) on its `max_retries`-th retry without reading that last reply; this keeps that behaviour
    so that grades stay comparable with published ones.
    """
    reply = judge_call([{"role": "user", "content": query}], 0.0)
    grade = parse_mmvet_grade(reply)
    if grade is not None:
        return MMVetGrade(score=grade, reply=reply, calls=1, valid=True)

    retry_messages = [{"role": "user", "content": query + MMVET_RETRY_SUFFIX}]
    temperature = 0.0
    for retry in range(1, max_retries + 1):
        reply = judge_call(retry_messages, temperature)
        temperature += temperature_step
        if retry == max_retries:
            break
        grade = parse_mmvet_grade(reply)
        if grade is not None:
            return MMVetGrade(score=grade, reply=reply, calls=retry + 1, valid=True)
    return MMVetGrade(score=0.0, reply=reply, calls=max_retries + 1, valid=False)


def mmvet_integration_name(capabilities: Iterable[str]) -> str:
    """A stable column name for a capability combination ('rec_know_gen').

    The published CSVs name these by Python set order, which changes between runs; compare as sets.
    """
    caps = set(capabilities)
    ordered = [c for c in MMVET_CAPABILITIES if c in caps] + sorted(caps - set(MMVET_CAPABILITIES))
    return "_".join(ordered)


def _grade_runs(grades: Mapping[str, Mapping], num_runs: int | None) -> int:
    lengths = {len(record["score"]) for record in grades.values()}
    if num_runs is None:
        if len(lengths) != 1:
            raise ValueError(f"MM-Vet grades hold different numbers of runs per question: {sorted(lengths)}")
        return lengths.pop()
    if min(lengths) < num_runs:
        raise ValueError(f"asked for {num_runs} MM-Vet runs but some questions have only {min(lengths)}")
    return num_runs


def _check_same_questions(grades: Mapping, questions: Mapping) -> None:
    missing, unknown = set(questions) - set(grades), set(grades) - set(questions)
    if missing or unknown:
        raise ValueError(
            f"MM-Vet grades do not match the questions: {len(missing)} ungraded, {len(unknown)} unknown "
            f"(e.g. {sorted(missing | unknown)[:3]})"
        )


def mmvet_score(
    grades: Mapping[str, Mapping],
    questions: Mapping[str, Mapping],
    num_runs: int | None = None,
) -> BenchmarkScore:
    """MM-Vet capability scores and total from a grade file and the questions' capability tags.

    grades: question id -> {"score": [grade of run 1, run 2, ...], "content": [...]} (the published layout).
    questions: question id -> record with a `capability` list (mm-vet.json layout).
    Per run, capability score = sum of its questions' grades / their count x 100 and total = sum / number of
    questions x 100; the reported numbers are the means over runs, std is the population std of the totals.
    details["integration"] holds the same for capability combinations.
    """
    _check_same_questions(grades, questions)
    n_runs = _grade_runs(grades, num_runs)
    cap_sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_runs)
    combo_sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_runs)
    cap_counts: Counter = Counter()
    combo_counts: Counter = Counter()
    totals = [0.0] * n_runs
    failures = 0
    # Iterate in grade-file order: float sums then match the published scripts bit for bit.
    for qid, record in grades.items():
        caps = set(questions[qid]["capability"])
        combo = mmvet_integration_name(caps)
        cap_counts.update(caps)
        combo_counts[combo] += 1
        contents = record.get("content", [])
        for run in range(n_runs):
            grade = float(record["score"][run])
            for cap in caps:
                cap_sums[cap][run] += grade
            combo_sums[combo][run] += grade
            totals[run] += grade
            if run < len(contents) and parse_mmvet_grade(str(contents[run])) is None:
                failures += 1

    def mean_percent(sums: list[float], count: int) -> float:
        return round1(float(np.mean(np.asarray(sums) / count * 100)))

    run_totals = np.asarray(totals) / len(grades) * 100
    capability_order = [c for c in MMVET_CAPABILITIES if c in cap_counts] + sorted(
        set(cap_counts) - set(MMVET_CAPABILITIES)
    )
    return BenchmarkScore(
        overall=round1(float(run_totals.mean())),
        categories={cap: mean_percent(cap_sums[cap], cap_counts[cap]) for cap in capability_order},
        runs=[round1(t) for t in run_totals],
        std=round1(population_std(run_totals)),
        parse_failures=failures,
        details={
            "integration": {
                combo: mean_percent(combo_sums[combo], combo_counts[combo])
                for combo, _ in combo_counts.most_common()
            },
            "num_runs": n_runs,
            "num_questions": len(grades),
        },
    )


# ---------------------------------------------------------------------------------------------------------
# MMBench circular evaluation
# ---------------------------------------------------------------------------------------------------------


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
