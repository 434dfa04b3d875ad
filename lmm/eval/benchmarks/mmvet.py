"""MM-Vet: open answers graded 0-1 by an LLM against ground truths, per capability (rec, ocr, know, ...)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmm.atomic import write_text_atomic
from lmm.eval.benchmarks.base import (
    Benchmark,
    EvalContext,
    Item,
    JudgeFailed,
    MissingBenchmarkData,
    require,
    write_jsonl,
)
from lmm.eval.benchmarks.common import BenchmarkScore, population_std, read_json, round1
from lmm.eval.judge import JudgeRequest

# Sampling parameters of the published judge calls.
JUDGE_PARAMS = {"temperature": 0.0, "max_tokens": 3}


# MM-Vet's six capabilities, in the column order of its published cap-score CSVs (most frequent first).
MMVET_CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


# Appended to the MM-Vet grader query when a reply was not a valid grade (the published retry).
MMVET_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "


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


def load_grader_prompt(path: str | Path) -> str:
    """The MM-Vet few-shot grader prompt, byte for byte (its trailing newline matters)."""
    return Path(path).read_text(encoding="utf-8")


def build_mmvet_query(grader_prompt: str, question: str, ground_truth: str, prediction: str) -> str:
    """The grader query: the few-shot table, then a new row `question | ground truth | prediction | `."""
    if ground_truth is None:
        raise ValueError("an MM-Vet question without a ground truth cannot be graded")
    # The few-shot rows write "<AND>"/"<OR>" with spaces around them; ground truths in mm-vet.json do not.
    spaced = ground_truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return f"{grader_prompt}\n{question} | {spaced} | {prediction} | "


def build_mmvet_messages(grader_prompt: str, question: str, ground_truth: str, prediction: str) -> list[dict]:
    """The grader's single user message (MM-Vet sends no system message)."""
    return [{"role": "user", "content": build_mmvet_query(grader_prompt, question, ground_truth, prediction)}]

QUESTIONS_FILE = "mm-vet.json"


class MMVet(Benchmark):
    name = "mmvet"
    judged = True

    rescore_files = "grade json (question id -> {score: [per run]}), one or more files"

    def rescore(self, files, *, capabilities=None, questions=None, category_column=None) -> BenchmarkScore:
        if capabilities is None:
            raise ValueError("mmvet needs --capabilities (the questions file with a capability list per id)")
        return mmvet_score(merge_mmvet_grades(files), read_json(capabilities))

    def _questions(self, ctx: EvalContext) -> dict:
        folder = require(ctx.paths.mmvet, "MM-Vet folder", "eval.paths.mmvet")
        return read_json(require(folder / QUESTIONS_FILE, "MM-Vet questions", "eval.paths.mmvet"))

    def load(self, ctx: EvalContext) -> list[Item]:
        images = Path(ctx.paths.mmvet) / "images"
        items = [Item(qid, q["question"], images / q["imagename"],
                      {"capability": q["capability"], "answer": q["answer"]})
                 for qid, q in self._questions(ctx).items()]
        missing = [it.image.name for it in items if not it.image.exists()]
        if missing:
            raise MissingBenchmarkData(f"mmvet: {len(missing)} images missing from {images} (e.g. {missing[0]})")
        return items

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        prompt = load_grader_prompt(require(ctx.paths.mmvet_grader_prompt, "MM-Vet grader prompt",
                                            "eval.paths.mmvet_grader_prompt"))
        client = ctx.judge_client(self.name)
        max_tokens = JUDGE_PARAMS["max_tokens"]
        runs = ctx.judge_runs(self.name)

        def grade(task):
            run, item, answer = task

            def call(messages, temperature):
                result = client.complete(JudgeRequest(messages=messages, temperature=temperature,
                                                      max_tokens=max_tokens, run=run, accept=is_grade))
                if not result.ok:  # a failed call is no grade: never let it turn into a silent 0
                    raise JudgeFailed(f"mmvet {item.id}: {result.error}")
                return result.content

            query = build_mmvet_query(prompt, item.prompt, item.meta["answer"], answer)
            return grade_mmvet_with_retries(call, query)

        tasks = [(run, it, a) for run in range(runs) for it, a in zip(items, answers, strict=True)]
        failures: list[str] = []

        def safe(task):
            try:
                return grade(task)
            except JudgeFailed as e:
                failures.append(str(e))
                return None

        with ThreadPoolExecutor(max_workers=max(1, int(ctx.judge_cfg.max_workers))) as pool:
            grades = list(pool.map(safe, tasks))
        if failures:
            raise JudgeFailed(f"mmvet: {len(failures)} of {len(tasks)} gradings failed (first: {failures[0]})")

        # A grading whose retries all gave no grade is a parse failure, not a published 0.0 (within the
        # allowed number it keeps the published grader's 0.0, and the count is reported beside the score).
        failed = [(run, it.id) for run in range(runs) for i, it in enumerate(items)
                  if not grades[run * len(items) + i].valid]
        model = ctx.judge_model(self.name)
        merged = {it.id: {"model": [], "content": [], "score": []} for it in items}
        for run in range(runs):
            rows = []
            for i, it in enumerate(items):
                g = grades[run * len(items) + i]
                rows.append({"question_id": it.id, "content": g.reply, "score": g.score, "calls": g.calls,
                             "valid": g.valid})
                slot = merged[it.id]
                slot["model"].append(model)
                slot["content"].append(g.reply)
                slot["score"].append(g.score)
            write_jsonl(out / f"reviews-{run + 1}.jsonl", rows)
        # The published grade-file layout, for `python -m lmm.eval.rescore mmvet grades.json`.
        write_text_atomic(out / "grades.json", json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
        ctx.check_parse_failures(self.name, failed, len(tasks), runs)
        questions = {it.id: {"capability": it.meta["capability"]} for it in items}
        score = mmvet_score(merged, questions, num_runs=runs)
        return {**score.to_json(), "parse_failures": len(failed), "count": len(items), "details": score.details}


def is_grade(reply: str) -> bool:
    return parse_mmvet_grade(reply) is not None


def merge_mmvet_grades(files: Sequence[str | Path]) -> dict:
    """One grade mapping from one or more grade files; later files' runs follow earlier files' runs."""
    merged: dict[str, dict] = {}
    for path in files:
        for qid, record in read_json(path).items():
            slot = merged.setdefault(qid, {"score": [], "content": []})
            slot["score"].extend(record["score"])
            slot["content"].extend(record.get("content", [None] * len(record["score"])))
    return merged
