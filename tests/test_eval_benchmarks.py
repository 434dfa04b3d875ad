"""Benchmarks on small fixtures, without a trained model: loading, prompts, judging and scoring."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from test_eval_judge_fake import FIXTURES, FakeJudge, copy_fixture, judge_overrides

from lmm.config import compose
from lmm.data.synthetic import CAPABILITIES, TEXT_KINDS
from lmm.eval import rescore
from lmm.eval.benchmarks import (
    BENCHMARK_NAMES,
    EvalContext,
    JudgeFailed,
    MissingBenchmarkData,
    ParseFailures,
    get_benchmark,
    mmbench,
    mmlu,
)
from lmm.eval.judge import DEFAULT_JUDGE_MODELS


@pytest.fixture
def server():
    fake = FakeJudge()
    yield fake
    fake.close()


def context(tmp_path: Path, *overrides: str) -> EvalContext:
    cfg = compose([f"paths.root={tmp_path}", *overrides])
    return EvalContext(cfg, tmp_path / "run")


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------


def test_eval_options_name_known_benchmarks_and_paper_judges():
    from lmm.config import CONF_DIR

    for path in (CONF_DIR / "eval").glob("*.yaml"):
        cfg = compose([f"eval={path.stem}"])
        assert set(cfg.eval.benchmarks) <= set(BENCHMARK_NAMES), path.name
    judge = compose([]).eval.judge
    for name, model in DEFAULT_JUDGE_MODELS.items():
        assert judge.models[name] == model
    assert judge.num_runs.llava_bench == 3
    paths = compose(["paths.data_dir=/data"]).eval.paths
    assert paths.llava_bench == "/data/eval/llava-bench-in-the-wild"
    assert paths.mmvet_grader_prompt == "/data/eval/mm-vet/grader_prompt.txt"
    assert paths.synthetic is None


def test_unknown_benchmark_and_missing_data_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        get_benchmark("nope")
    ctx = context(tmp_path)
    with pytest.raises(MissingBenchmarkData, match=r"eval\.paths\.llava_bench"):
        get_benchmark("llava_bench").load(ctx)
    with pytest.raises(MissingBenchmarkData, match=r"eval\.paths\.mmlu"):
        get_benchmark("mmlu").evaluate(ctx, lambda: None, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# LLaVA-Bench
# ---------------------------------------------------------------------------------------------------------


def llava_ctx(tmp_path, server, *extra):
    folder = copy_fixture("llava_bench", tmp_path / "data")
    return context(tmp_path, f"eval.paths.llava_bench={folder}", f"eval.paths.llava_bench_rules={folder}/rule.json",
                   *judge_overrides(server, tmp_path / "cache"), *extra)


def test_llava_bench_judged_with_three_runs(tmp_path, server):
    ctx = llava_ctx(tmp_path, server)
    bench = get_benchmark("llava_bench")
    items = bench.load(ctx)
    assert [it.id for it in items] == [0, 1, 2]
    assert Path(items[0].image).name == "001.png" and items[2].meta["category"] == "complex"
    out = tmp_path / "out"
    scores = bench.score(ctx, items, ["Red.", "A red square.", "To compare them."], out)
    assert scores["overall"] == 100.0
    assert scores["categories"] == {"conv": 75.0, "detail": 100.0, "complex": 150.0}
    assert scores["runs"] == [100.0, 100.0, 100.0] and scores["std"] == 0.0 and scores["parse_failures"] == 0
    # Three runs of three questions; each run is its own cache entry, so nine calls.
    assert len(server.requests) == 9
    first = next(r for r in server.requests if "RULE-conv" in r["messages"][-1]["content"])
    assert first["model"] == "gpt-4-0314" and first["temperature"] == 0.2
    user = first["messages"][-1]["content"]
    assert "[Context]\nA red square on a white background." in user
    assert "[Assistant 1]\nThe square is red." in user and "[Assistant 2]\nRed." in user
    # Review files in the published layout: the rescore command gives the same number.
    files = sorted(out.glob("reviews-*.jsonl"))
    assert [f.name for f in files] == ["reviews-1.jsonl", "reviews-2.jsonl", "reviews-3.jsonl"]
    row = json.loads(files[0].read_text().splitlines()[0])
    assert row["category"] == "llava_bench_conv" and row["tuple"] == [8.0, 6.0]
    assert rescore.rescore("llava_bench", files).overall == 100.0
    # Again: every call comes from the cache.
    bench.score(ctx, items, ["Red.", "A red square.", "To compare them."], out)
    assert len(server.requests) == 9


def test_llava_bench_judge_failure_raises_without_reviews(tmp_path, server):
    ctx = llava_ctx(tmp_path, server, "eval.judge.num_runs.llava_bench=1")
    bench = get_benchmark("llava_bench")
    items = bench.load(ctx)
    server.fail_when = lambda user: "RULE-detail" in user
    with pytest.raises(JudgeFailed, match="1 of 3 judge calls failed"):
        bench.score(ctx, items, ["a", "b", "c"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("reviews-*.jsonl"))


def test_llava_bench_coco_context_has_captions_and_boxes(tmp_path, server):
    folder = copy_fixture("llava_bench_coco", tmp_path / "data")
    ctx = context(tmp_path, f"eval.paths.llava_bench_coco={folder}", f"eval.paths.llava_bench_rules={folder}/rule.json",
                  "eval.judge.num_runs.llava_bench_coco=1", *judge_overrides(server, tmp_path / "cache"))
    bench = get_benchmark("llava_bench_coco")
    items = bench.load(ctx)
    assert Path(items[0].image).name == "COCO_val2014_000000000001.jpg"
    scores = bench.score(ctx, items, ["Two.", "Games."], tmp_path / "out")
    assert scores["categories"] == {"conv": 75.0, "complex": 150.0}
    user = server.requests[0]["messages"][-1]["content"]
    assert "Two shapes on a table.\nA circle and a square.\n\ncircle: [0.1, 0.2, 0.3, 0.4]" in user


# ---------------------------------------------------------------------------------------------------------
# MM-Vet and Vicuna-80
# ---------------------------------------------------------------------------------------------------------


def test_mmvet_grades_per_capability(tmp_path, server):
    folder = copy_fixture("mmvet", tmp_path / "data")
    ctx = context(tmp_path, f"eval.paths.mmvet={folder}", "eval.judge.num_runs.mmvet=2",
                  *judge_overrides(server, tmp_path / "cache"))
    bench = get_benchmark("mmvet")
    items = bench.load(ctx)
    assert [it.id for it in items] == ["v1_0", "v1_1"] and Path(items[1].image).name == "v1_1.png"
    out = tmp_path / "out"
    scores = bench.score(ctx, items, ["Red", "dog"], out)
    assert scores["overall"] == 50.0 and scores["categories"] == {"rec": 50.0, "ocr": 0.0}
    assert scores["runs"] == [50.0, 50.0] and scores["details"]["num_runs"] == 2
    assert len(server.requests) == 4  # 2 questions x 2 runs
    body = server.requests[0]
    assert body["model"] == "gpt-4-0613" and body["max_tokens"] == 3 and len(body["messages"]) == 1
    grades = json.loads((out / "grades.json").read_text())
    assert grades["v1_0"]["score"] == [1.0, 1.0] and grades["v1_1"]["content"] == ["0.0", "0.0"]
    assert (out / "reviews-2.jsonl").exists()
    query = next(r["messages"][0]["content"] for r in server.requests if "word" in r["messages"][0]["content"])
    assert query.rstrip().endswith("What word is written here? | cat <OR> CAT | dog |")


def test_vicuna80_relative_score(tmp_path, server):
    folder = tmp_path / "data" / "vicuna80"
    import shutil

    shutil.copytree(FIXTURES / "vicuna80", folder)
    ctx = context(tmp_path, f"eval.paths.vicuna80={folder}", *judge_overrides(server, tmp_path / "cache"))
    bench = get_benchmark("vicuna80")
    items = bench.load(ctx)
    assert items[0].image is None and items[1].meta["category"] == "writing"
    scores = bench.score(ctx, items, ["Sleep more.", "Leaves fall."], tmp_path / "out")
    assert scores["overall"] == 112.5 and scores["categories"] == {"generic": 112.5, "writing": 112.5}
    users = [r["messages"][-1]["content"] for r in server.requests]
    # "generic" has no reviewer of its own: the general one; "writing" gets the writing prompt.
    assert any(u.startswith("VICUNA-FIXTURE general") and "Keep a regular schedule" in u for u in users)
    assert any(u.startswith("VICUNA-FIXTURE writing") and "[Assistant 2]\nLeaves fall." in u for u in users)
    assert server.requests[0]["model"] == "gpt-4" and server.requests[0]["max_tokens"] == 256
    row = json.loads((tmp_path / "out" / "reviews-1.jsonl").read_text().splitlines()[0])
    assert row["score"] == [8.0, 9.0]
    assert rescore.rescore("vicuna80", [tmp_path / "out" / "reviews-1.jsonl"]).overall == 112.5


def test_mmvet_gradings_without_a_grade_are_parse_failures(tmp_path, server):
    folder = copy_fixture("mmvet", tmp_path / "data")
    overrides = [f"eval.paths.mmvet={folder}", "eval.judge.num_runs.mmvet=1",
                 *judge_overrides(server, tmp_path / "cache")]
    bench = get_benchmark("mmvet")
    items = bench.load(context(tmp_path, *overrides))
    # The grader never gives a number for the word question, not even on the published retries.
    server.reply_when = lambda user: "It is hard to say." if "What word is written here?" in user else None
    with pytest.raises(ParseFailures, match=r"mmvet: 1 of 2 judge replies .* item ids: v1_1\.") as info:
        bench.score(context(tmp_path, *overrides), items, ["Red", "dog"], tmp_path / "out")
    assert info.value.failed_ids == ["v1_1"]
    assert server.count("What word is written here?") == 6  # the first call and the five published retries
    assert not [p for p in (tmp_path / "cache").glob("*.json") if "hard to say" in p.read_text()]
    # Allowed: the published grader's 0.0 stands, and the count is reported.
    scores = bench.score(context(tmp_path, *overrides, "eval.judge.max_parse_failures=1"), items, ["Red", "dog"],
                         tmp_path / "out")
    assert scores["overall"] == 50.0 and scores["parse_failures"] == 1


def test_vicuna80_unparsed_reviews_are_parse_failures_not_minus_one(tmp_path, server):
    import shutil

    folder = tmp_path / "data" / "vicuna80"
    shutil.copytree(FIXTURES / "vicuna80", folder)
    overrides = [f"eval.paths.vicuna80={folder}", *judge_overrides(server, tmp_path / "cache")]
    bench = get_benchmark("vicuna80")
    items = bench.load(context(tmp_path, *overrides))
    server.reply_when = lambda user: "Both are fine." if "VICUNA-FIXTURE writing" in user else None
    with pytest.raises(ParseFailures, match=r"vicuna80: 1 of 2 judge replies .* item ids: 2\."):
        bench.score(context(tmp_path, *overrides), items, ["Sleep more.", "Leaves fall."], tmp_path / "out")
    scores = bench.score(context(tmp_path, *overrides, "eval.judge.max_parse_failures=1"), items,
                         ["Sleep more.", "Leaves fall."], tmp_path / "out")
    # Only the parsed review counts: 9 / 8 (a (-1, -1) in the sums would give 8 / 7 = 114.3).
    assert scores["overall"] == 112.5 and scores["categories"] == {"generic": 112.5}
    assert scores["parse_failures"] == 1


# ---------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------


def png_base64(colour) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 12), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_mmbench_tsv(path: Path, circular: bool = True) -> Path:
    """Two questions: one with 4 options and a hint, one with 2 options; circular passes as separate rows.

    Circular rows carry the index of the row holding their image instead of the image (as in published TSVs).
    """
    red, blue = png_base64((255, 0, 0)), png_base64((0, 0, 255))
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    rows = [
        ["0", "What colour is the picture?", "Look closely.", "red", "green", "blue", "black", "A",
         "color_attribute", "attribute_reasoning", red],
        ["1", "Is it blue?", "nan", "yes", "no", "", "", "A", "color_attribute", "coarse_perception", blue],
    ]
    if circular:
        rows += [
            ["1000000", "What colour is the picture?", "Look closely.", "green", "blue", "black", "red", "D",
             "color_attribute", "attribute_reasoning", "0"],
            ["2000000", "What colour is the picture?", "Look closely.", "blue", "black", "red", "green", "C",
             "color_attribute", "attribute_reasoning", "0"],
            ["3000000", "What colour is the picture?", "Look closely.", "black", "red", "green", "blue", "B",
             "color_attribute", "attribute_reasoning", "0"],
            ["1000001", "Is it blue?", "nan", "no", "yes", "", "", "B", "color_attribute", "coarse_perception", "1"],
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_mmbench_prompt_follows_llava():
    row = {"question": "What colour is it?", "hint": "Look closely.", "A": "red", "B": "green", "C": "", "D": "nan"}
    assert mmbench.build_prompt(row) == (
        "Look closely.\nWhat colour is it?\nA. red\nB. green\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert mmbench.build_prompt({**row, "hint": "nan"}).startswith("What colour is it?\nA. red")


@pytest.mark.parametrize("answer,letter", [
    ("A", "A"), ("B.", "B"), ("(C) blue", "C"), ("D", "D"), ("green", "B"), ("Green.", "B"),
    ("The answer is A", ""), ("", ""), ("E", ""), ("c", "C"), ("a red one", ""),
])
def test_mmbench_extracts_the_letter(answer, letter):
    assert mmbench.extract_choice(answer, ["red", "green", "blue", "black"]) == letter


def test_mmbench_circular_passes_and_scoring(tmp_path):
    tsv = write_mmbench_tsv(tmp_path / "mmbench.tsv")
    ctx = context(tmp_path, f"eval.paths.mmbench={tsv}")
    bench = get_benchmark("mmbench")
    items = bench.load(ctx)
    assert [it.id for it in items] == [0, 1, 1000000, 2000000, 3000000, 1000001]
    # Circular rows without an image of their own borrow it from the row they name.
    assert items[3].materialise_image().getpixel((0, 0)) == (255, 0, 0)
    assert items[5].materialise_image().getpixel((0, 0)) == (0, 0, 255)
    expected = "Is it blue?\nA. yes\nB. no\nAnswer with the option's letter from the given choices directly."
    assert items[1].prompt == expected
    # Question 0 right in every pass; question 1 wrong in its second pass -> 1 of 2 questions.
    answers = ["A", "A", "D. red", "c", "B", "A"]
    out = tmp_path / "out"
    scores = bench.score(ctx, items, answers, out)
    assert scores["overall"] == 50.0 and scores["count"] == 2
    assert scores["categories"] == {"AR": 100.0, "CP": 0.0}
    assert scores["parse_failures"] == 0
    predictions = rescore.read_tsv(out / "predictions.tsv")
    assert [p["prediction"] for p in predictions] == ["A", "A", "D", "C", "B", "A"]
    assert rescore.rescore("mmbench", [out / "predictions.tsv"]).overall == 50.0


def test_mmbench_single_pass_files_get_rotated_passes(tmp_path):
    rows = mmbench.read_tsv(write_mmbench_tsv(tmp_path / "single.tsv", circular=False))
    passes = mmbench.circular_rows(rows)
    assert [int(r["index"]) for r in passes] == [0, 1000000, 2000000, 3000000, 1, 1000001]
    second = passes[1]
    assert [second[k] for k in "ABCD"] == ["green", "blue", "black", "red"] and second["answer"] == "D"
    assert passes[5]["A"] == "no" and passes[5]["answer"] == "B"


# ---------------------------------------------------------------------------------------------------------
# MMLU
# ---------------------------------------------------------------------------------------------------------


def test_mmlu_reads_the_standard_layout():
    subjects = mmlu.load_subjects(FIXTURES / "mmlu")
    assert list(subjects) == ["astronomy", "virology"]
    dev, test = subjects["astronomy"]
    assert len(dev) == 2 and len(test) == 2 and test[1].question.endswith('"our" star?')
    assert test[0].as_doc() == {"question": "What is the largest planet in the Solar System?", "subject": "astronomy",
                                "choices": ["Saturn", "Jupiter", "Neptune", "Earth"], "answer": 1}
    # Scoring runs through lm-evaluation-harness: tests/test_eval_mmlu.py.


# ---------------------------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------------------------


def test_synthetic_scores_exact_match(tmp_path, synthetic_data):
    folder = synthetic_data["eval"].parent
    ctx = context(tmp_path, f"eval.paths.synthetic={folder}")
    bench = get_benchmark("synthetic")
    items = bench.load(ctx)
    assert len(items) == 32 and Path(items[0].image).exists()
    answers = [it.meta["answer"].capitalize() + "." for it in items]
    answers[0] = "no idea"
    scores = bench.score(ctx, items, answers, tmp_path)
    assert scores["overall"] == round(100 * 31 / 32, 1) and scores["count"] == 32
    assert set(scores["categories"]) == set(CAPABILITIES)
    # the per-question outcomes the intervals resample: the one wrong answer is the first question
    assert list(scores["correct"].values()) == [0] + [1] * 31 and list(scores["correct"]) == [it.id for it in items]


def test_synthetic_text_split_has_no_images(tmp_path, synthetic_data):
    folder = synthetic_data["eval"].parent
    ctx = context(tmp_path, f"eval.paths.synthetic={folder}")
    bench = get_benchmark("synthetic_text")
    items = bench.load(ctx)
    assert len(items) == 32 and all(it.image is None for it in items)
    answers = [it.meta["answer"] for it in items]
    answers[1] = "seven"
    scores = bench.score(ctx, items, answers, tmp_path)
    assert scores["overall"] == round(100 * 31 / 32, 1) and set(scores["categories"]) == set(TEXT_KINDS)
    assert scores["correct"][items[1].id] == 0


def test_synthetic_needs_synthetic_data(tmp_path):
    ctx = context(tmp_path, "data=llava_80k")
    with pytest.raises(MissingBenchmarkData, match="eval.paths.synthetic"):
        get_benchmark("synthetic").load(ctx)
