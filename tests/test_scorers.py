"""Scorers reproduce published benchmark numbers exactly from the published raw judge outputs."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmm.eval import rescore
from lmm.eval.benchmarks import common, llava_bench, mmbench, mmvet, vicuna80
from lmm.eval.benchmarks.mmvet import MMVET_RETRY_SUFFIX

REFERENCE = Path(
    os.environ.get("LMM_REFERENCE_EVALS", Path(__file__).resolve().parents[2] / "shared" / "reference-evals")
)
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(),
    reason=f"published reference evaluations not found at {REFERENCE} (set LMM_REFERENCE_EVALS)",
)

LLAVA_REVIEWS = REFERENCE / "llava_bench_in_the_wild" / "reviews"
MMVET = REFERENCE / "mm_vet"
MMVET_MODEL = "llava-v1.5-13b"


def llava_review_runs() -> list[list[dict]]:
    return [rescore.read_jsonl(LLAVA_REVIEWS / f"llava-v1.5-13b-eval{i}.jsonl") for i in (1, 2, 3)]


# ---------------------------------------------------------------------------------------------------------
# LLaVA-Bench
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("8 10\nBoth assistants ...", (8.0, 10.0)),
        ("9 6.5", (9.0, 6.5)),
        ("7,8\nbecause", (7.0, 8.0)),
        ("7, 8", (7.0, 8.0)),
        ("Assistant 1: 7\nAssistant 2: 8", common.FAILED_PAIR),
        ("8 10 9", common.FAILED_PAIR),
        ("8/10 9/10", common.FAILED_PAIR),
        ("nan 8", common.FAILED_PAIR),
        ("", common.FAILED_PAIR),
        ("\n8 10", common.FAILED_PAIR),
    ],
)
def test_parse_score_pair(reply, expected):
    assert common.parse_score_pair(reply) == expected


def test_llava_bench_ratio_of_means_and_failures():
    rows = [
        {"category": "llava_bench_conv", "tuple": [8, 6]},
        {"category": "llava_bench_conv", "tuple": [4, 4]},
        {"category": "llava_bench_detail", "content": "10 5\nreason"},
        {"category": "llava_bench_detail", "content": "no scores here"},
    ]
    run = llava_bench.llava_bench_run(rows)
    assert run.categories["conv"] == pytest.approx(10 / 12 * 100)  # ratio of means, not mean of ratios (87.5)
    # The failed parse stays in the means as (-1, -1), as the published summariser does.
    assert run.categories["detail"] == pytest.approx((5 - 1) / (10 - 1) * 100)
    assert run.parse_failures == 1
    assert list(run.categories) == ["conv", "detail"]


@needs_reference
def test_llava_bench_stored_tuples_match_the_parser():
    for rows in llava_review_runs():
        for row in rows:
            assert list(common.parse_score_pair(row["content"])) == row["tuple"]


@needs_reference
def test_llava_bench_reproduces_published_llava_15_13b():
    score = llava_bench.llava_bench_score(llava_review_runs())
    # LLaVA MODEL_ZOO: 72.5, runs 72.8 / 72.7 / 72.1.
    assert score.overall == 72.5
    assert score.runs == [72.8, 72.7, 72.1]
    assert score.parse_failures == 0
    # Per-category means over the runs, checked by hand from the per-run ratios
    # (conv 74.66/74.66/72.48, detail 52.65/51.12/51.13, complex 82.85/83.68/83.47).
    assert score.categories == {"conv": 73.9, "detail": 51.6, "complex": 83.3}
    assert llava_bench.paper_category_names(score.categories) == {
        "conversation": 73.9,
        "detail": 51.6,
        "reasoning": 83.3,
    }
    assert score.details["run_categories"][0] == {"conv": 74.7, "detail": 52.7, "complex": 82.8}


# ---------------------------------------------------------------------------------------------------------
# MM-Vet
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("0.5", 0.5),
        ("1.0", 1.0),
        ("0", 0.0),
        ("0.7\n", 0.7),
        ("1.2", None),
        ("-0.1", None),
        ("Correct", None),
        (" 0.5", None),
        ("nan", None),
        ("", None),
        (None, None),
        ("0.3 because", 0.3),
    ],
)
def test_parse_mmvet_grade(reply, expected):
    assert mmvet.parse_mmvet_grade(reply) == expected


class ScriptedJudge:
    """A judge_call that answers from a script and records what it was asked."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls: list[tuple[list[dict], float]] = []

    def __call__(self, messages, temperature):
        self.calls.append((messages, temperature))
        return self.replies.pop(0)


def test_mmvet_grade_first_reply_valid():
    judge = ScriptedJudge(["0.8"])
    grade = mmvet.grade_mmvet_with_retries(judge, "Q")
    assert (grade.score, grade.calls, grade.valid) == (0.8, 1, True)
    assert judge.calls == [([{"role": "user", "content": "Q"}], 0.0)]


def test_mmvet_grade_retries_with_digit_request_and_rising_temperature():
    judge = ScriptedJudge(["The answer", "Score", "0.4"])
    grade = mmvet.grade_mmvet_with_retries(judge, "Q")
    assert (grade.score, grade.calls, grade.valid) == (0.4, 3, True)
    assert [t for _, t in judge.calls] == [0.0, 0.0, 0.5]
    assert judge.calls[1][0] == [{"role": "user", "content": "Q" + MMVET_RETRY_SUFFIX}]


def test_mmvet_grade_gives_up_with_zero():
    # Published rule: five retries; the fifth retry's reply is not read, even when valid.
    judge = ScriptedJudge(["x", "x", "x", "x", "x", "0.9"])
    grade = mmvet.grade_mmvet_with_retries(judge, "Q")
    assert (grade.score, grade.calls, grade.valid) == (0.0, 6, False)
    assert [t for _, t in judge.calls] == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert judge.replies == []


def test_mmvet_score_small():
    questions = {
        "a": {"capability": ["rec"]},
        "b": {"capability": ["rec", "ocr"]},
        "c": {"capability": ["ocr"]},
    }
    grades = {
        "a": {"score": [1.0, 0.0], "content": ["1.0", "0.0"]},
        "b": {"score": [0.5, 0.5], "content": ["0.5", "0.5"]},
        "c": {"score": [0.0, 1.0], "content": ["0.0", "oops"]},
    }
    score = mmvet.mmvet_score(grades, questions)
    assert score.runs == [50.0, 50.0]
    assert score.overall == 50.0 and score.std == 0.0
    assert score.categories == {"rec": 50.0, "ocr": 50.0}
    assert score.details["integration"] == {"rec": 50.0, "rec_ocr": 50.0, "ocr": 50.0}
    assert score.parse_failures == 1
    with pytest.raises(ValueError, match="ungraded"):
        mmvet.mmvet_score({"a": grades["a"]}, questions)


def read_published_csv(path: Path) -> dict[str, str]:
    """The row named after the file's model (the CSVs also carry rows of earlier gradings)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    (row,) = [r for r in rows[1:] if r[0] == MMVET_MODEL]
    return dict(zip(header[1:], row[1:]))


@needs_reference
@pytest.mark.parametrize("runs", [1, 3])
def test_mmvet_reproduces_published_capability_csvs(runs):
    results = MMVET / "results"
    questions = rescore.read_json(MMVET / "mm-vet_capabilities_transcribed.json")
    grades = rescore.read_json(results / f"{MMVET_MODEL}_gpt-4-grade-{runs}runs.json")
    score = mmvet.mmvet_score(grades, questions)

    published = read_published_csv(results / f"{MMVET_MODEL}_gpt-4-cap-score-{runs}runs.csv")
    integration = read_published_csv(results / f"{MMVET_MODEL}_gpt-4-cap-int-score-{runs}runs.csv")
    for table in (published, integration):
        assert float(table["total"]) == score.overall
        assert float(table["std"]) == score.std
        assert ast.literal_eval(table["runs"]) == score.runs
    capabilities = {k: float(v) for k, v in published.items() if k not in ("total", "std", "runs")}
    assert capabilities == score.categories
    # Published integration columns are named in Python set order: compare as capability sets.
    ours = {frozenset(k.split("_")): v for k, v in score.details["integration"].items()}
    theirs = {
        frozenset(k.split("_")): float(v) for k, v in integration.items() if k not in ("total", "std", "runs")
    }
    assert ours == theirs
    assert score.parse_failures == 0


@needs_reference
def test_mmvet_headline_numbers():
    questions = rescore.read_json(MMVET / "mm-vet_capabilities_transcribed.json")
    one = mmvet.mmvet_score(
        rescore.read_json(MMVET / "results" / f"{MMVET_MODEL}_gpt-4-grade-1runs.json"), questions
    )
    three = mmvet.mmvet_score(
        rescore.read_json(MMVET / "results" / f"{MMVET_MODEL}_gpt-4-grade-3runs.json"), questions
    )
    assert (one.overall, one.std) == (36.1, 0.0)
    assert (three.overall, three.std, three.runs) == (36.3, 0.2, [36.1, 36.5, 36.3])
    assert three.details["num_questions"] == 218


# ---------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------


def test_mmbench_circular_all_passes_must_be_right():
    rows = [
        # question 1: right on both passes; question 2: one pass wrong; question 3: single pass right.
        {"index": 1, "prediction": "A", "answer": "A", "l2-category": "logic_reasoning"},
        {"index": 1_000_001, "prediction": "B", "answer": "B", "l2-category": "logic_reasoning"},
        {"index": 2, "prediction": "C", "answer": "C", "l2-category": "coarse_perception"},
        {"index": 1_000_002, "prediction": "A", "answer": "D", "l2-category": "coarse_perception"},
        {"index": 3, "prediction": " d ", "answer": "D", "l2-category": "coarse_perception"},
    ]
    score = mmbench.mmbench_circular(rows)
    assert score.overall == 66.7
    assert (score.details["correct"], score.details["questions"]) == (2, 3)
    assert score.categories == {"CP": 50.0, "LR": 100.0}


@needs_reference
def test_mmbench_reproduces_published_circular_accuracy():
    score = rescore.rescore(
        "mmbench", [REFERENCE / "mmbench" / "llava-v1.5-13b_mmbench_dev_20230712_upload.tsv"]
    )
    assert score.overall == 67.7
    assert (score.details["correct"], score.details["questions"]) == (796, 1176)
    assert score.categories == {}  # this upload file has no category columns


# ---------------------------------------------------------------------------------------------------------
# Vicuna-80
# ---------------------------------------------------------------------------------------------------------

# No published number for these files; sums checked by hand: target / reference.
VICUNA_EXPECTED = {
    "review_alpaca-13b_vicuna-13b.jsonl": (583.0, 704.0, 120.8),
    "review_bard_vicuna-13b.jsonl": (664.0, 655.5, 98.7),
    "review_gpt35_vicuna-13b.jsonl": (693.0, 638.0, 92.1),
    "review_llama-13b_vicuna-13b.jsonl": (513.0, 694.0, 135.3),
}


@needs_reference
@pytest.mark.parametrize("name", sorted(VICUNA_EXPECTED))
def test_vicuna80_relative_scores(name):
    reference_sum, target_sum, relative = VICUNA_EXPECTED[name]
    rows = rescore.read_jsonl(REFERENCE / "vicuna80" / "review" / name)
    assert len(rows) == 80
    score = vicuna80.vicuna80_score(rows)
    assert (score.details["reference_sum"], score.details["target_sum"]) == (reference_sum, target_sum)
    assert score.overall == relative
    assert score.parse_failures == 0


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


@needs_reference
def test_rescore_cli_json_subprocess():
    files = [str(LLAVA_REVIEWS / f"llava-v1.5-13b-eval{i}.jsonl") for i in (1, 2, 3)]
    proc = subprocess.run(
        [sys.executable, "-m", "lmm.eval.rescore", "llava_bench", *files, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(proc.stdout) == {
        "overall": 72.5,
        "categories": {"conv": 73.9, "detail": 51.6, "complex": 83.3},
        "runs": [72.8, 72.7, 72.1],
        "std": 0.3,
        "parse_failures": 0,
    }


@needs_reference
def test_rescore_cli_mmvet_capabilities_file(capsys):
    args = [
        "mmvet",
        str(MMVET / "results" / f"{MMVET_MODEL}_gpt-4-grade-3runs.json"),
        "--capabilities",
        str(MMVET / "mm-vet_capabilities_transcribed.json"),
        "--json",
    ]
    assert rescore.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["overall"], out["std"], out["runs"]) == (36.3, 0.2, [36.1, 36.5, 36.3])
    assert out["categories"] == {
        "rec": 40.5,
        "ocr": 28.4,
        "know": 23.5,
        "gen": 24.2,
        "spat": 35.2,
        "math": 8.8,
    }


def test_rescore_cli_table_and_errors(tmp_path, capsys):
    review = tmp_path / "review.jsonl"
    review.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [{"question_id": 1, "score": [8, 6]}, {"question_id": 2, "text": "4 4\nok"}]
        )
    )
    assert rescore.main(["vicuna80", str(review)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "vicuna80: 83.3"
    assert rescore.main(["mmvet", str(review)]) == 2  # no --capabilities
    assert "capabilities" in capsys.readouterr().err
