"""End to end on CPU: a tiny trained run evaluated through `evaluate_run` and `python -m lmm.eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_eval_benchmarks import write_mmbench_tsv
from test_eval_judge_fake import FIXTURES, FakeJudge, copy_fixture, judge_overrides

from lmm.config import compose
from lmm.data.synthetic import CAPABILITIES
from lmm.eval import runner
from lmm.eval.runner import EvalFailed, evaluate_run, resolve_run
from lmm.launch.identity import run_dir
from lmm.pipeline import run_pipeline
from lmm.records import read_record

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["debug=fast", "tuning.rank=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny full fine-tuning run, trained with eval=synthetic so the pipeline evaluates it at the end."""
    root = tmp_path_factory.mktemp("eval-runs")
    cfg = compose([f"paths.root={root}", *TRAIN, "eval=synthetic"])
    folder = run_pipeline(cfg)
    return root, folder


@pytest.fixture
def server():
    fake = FakeJudge()
    yield fake
    fake.close()


def cfg_for(root: Path, *overrides: str):
    return compose([f"paths.root={root}", *TRAIN, *overrides])


def no_model(cfg, run):  # a loader that proves nothing needed the model
    raise AssertionError("the model was loaded although nothing needed generating")


def counting_loader(calls: list):
    def load(cfg, run):
        calls.append(run)
        return runner.load_model(cfg, run)

    return load


def llava_overrides(root: Path, tmp: Path, server: FakeJudge, *extra: str) -> list[str]:
    folder = copy_fixture("llava_bench", tmp / "data") if not (tmp / "data" / "llava_bench").exists() \
        else tmp / "data" / "llava_bench"
    return ["eval=llava_bench", "eval.max_new_tokens=6", f"eval.paths.llava_bench={folder}",
            f"eval.paths.llava_bench_rules={folder}/rule.json", *judge_overrides(server, tmp / "cache"), *extra]


def test_pipeline_evaluates_the_synthetic_set(trained):
    _, folder = trained
    entry = read_record(folder)["eval"]["synthetic"]["beam1"]
    assert 0.0 <= entry["overall"] <= 100.0 and entry["count"] == 16
    assert set(entry["categories"]) <= set(CAPABILITIES)
    assert entry["settings"]["generation"] == {"template": "vicuna_v1", "num_beams": 1, "max_new_tokens": 16,
                                               "image_aspect": "pad"}
    assert entry["judge_model"] is None and entry["folder"] == "eval/synthetic/beam1"
    out = folder / "eval" / "synthetic" / "beam1"
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and rows[0]["metadata"]["max_new_tokens"] == 16
    scores = json.loads((out / "scores.json").read_text())
    assert scores["overall"] == entry["overall"] and scores["benchmark"] == "synthetic"


def test_generation_is_deterministic(trained):
    root, folder = trained
    cfg = cfg_for(root, "eval=synthetic")
    bench = runner.get_benchmark("synthetic")
    items = bench.load(runner.EvalContext(cfg, folder))[:4]
    loaded = runner.load_model(cfg, folder)
    assert runner.generate(items, loaded, cfg) == runner.generate(items, loaded, cfg)


def test_llava_bench_judged_merged_skipped_and_beam5_beside_beam1(trained, tmp_path, server):
    root, folder = trained
    cfg = cfg_for(root, *llava_overrides(root, tmp_path, server))
    results = evaluate_run(cfg, folder)
    entry = results["llava_bench"]
    assert entry["overall"] == 100.0 and entry["categories"] == {"conv": 75.0, "detail": 100.0, "complex": 150.0}
    assert entry["judge_model"] == "gpt-4-0314" and entry["judge_runs"] == 3 and entry["runs"] == [100.0] * 3
    assert len(server.requests) == 9
    record = read_record(folder)
    assert record["eval"]["llava_bench"]["beam1"]["overall"] == 100.0
    assert "synthetic" in record["eval"]  # earlier benchmarks stay
    out = folder / "eval" / "llava_bench" / "beam1"
    assert {p.name for p in out.iterdir()} >= {"answers.jsonl", "reviews-1.jsonl", "reviews-2.jsonl",
                                               "reviews-3.jsonl", "scores.json"}
    # The judge saw the model's own answers.
    answers = [json.loads(line)["text"] for line in (out / "answers.jsonl").read_text().splitlines()]
    sent = [r["messages"][-1]["content"] for r in server.requests]
    assert any(f"[Assistant 2]\n{answers[0]}\n" in s for s in sent)

    # Scored with the same settings: skipped, no model, no judge request.
    again = evaluate_run(cfg, folder, loader=no_model)
    assert again["llava_bench"] == read_record(folder)["eval"]["llava_bench"]["beam1"]
    assert len(server.requests) == 9

    # Beam search 5 lands beside beam 1.
    cfg5 = cfg_for(root, *llava_overrides(root, tmp_path, server, "eval.num_beams=5"))
    evaluate_run(cfg5, folder)
    scores = read_record(folder)["eval"]["llava_bench"]
    assert set(scores) >= {"beam1", "beam5"} and scores["beam5"]["num_beams"] == 5
    rows = (folder / "eval" / "llava_bench" / "beam5" / "answers.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["metadata"]["num_beams"] == 5
    assert scores["beam1"]["settings"]["generation"]["num_beams"] == 1


def test_judge_failure_keeps_answers_and_a_rerun_only_rejudges(trained, tmp_path, server):
    root, folder = trained
    # Other settings than the test above (7 new tokens), so this is a fresh evaluation of beam 1.
    cfg = cfg_for(root, *llava_overrides(root, tmp_path, server, "eval.max_new_tokens=7"))
    server.fail_when = lambda user: "RULE-detail" in user
    with pytest.raises(EvalFailed, match="llava_bench: 3 of 9 judge calls failed"):
        evaluate_run(cfg, folder)
    out = folder / "eval" / "llava_bench" / "beam1"
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["metadata"]["max_new_tokens"] == 7
    entry = read_record(folder)["eval"].get("llava_bench", {}).get("beam1")
    assert entry is None or entry["settings"]["generation"]["max_new_tokens"] != 7  # nothing half-scored

    server.fail_when = lambda user: False
    before = len(server.requests)
    results = evaluate_run(cfg, folder, loader=no_model)  # saved answers: no generation
    # Only the three calls that failed reach the judge; the six that succeeded come from the cache.
    assert len(server.requests) - before == 3 and server.count("RULE-detail") == 6
    assert results["llava_bench"]["overall"] == 100.0
    assert read_record(folder)["eval"]["llava_bench"]["beam1"]["settings"]["generation"]["max_new_tokens"] == 7


def test_every_benchmark_kind_through_one_model_load(trained, tmp_path, server):
    """MMBench, MMLU, Vicuna-80 and MM-Vet fixtures in one call: the model is loaded once for all."""
    root, folder = trained
    tsv = write_mmbench_tsv(tmp_path / "mmbench.tsv")
    mmvet = copy_fixture("mmvet", tmp_path / "data")
    cfg = cfg_for(root, "eval=paper", "eval.max_new_tokens=4", "eval.batch_size=3",
                  "eval.benchmarks=[mmbench,mmlu,vicuna80,mmvet]", f"eval.paths.mmbench={tsv}",
                  f"eval.paths.mmlu={FIXTURES / 'mmlu'}", f"eval.paths.vicuna80={FIXTURES / 'vicuna80'}",
                  f"eval.paths.mmvet={mmvet}", "eval.judge.num_runs.mmvet=1",
                  *judge_overrides(server, tmp_path / "cache"))
    calls: list = []
    results = evaluate_run(cfg, folder, loader=counting_loader(calls))
    assert len(calls) == 1
    assert results["mmbench"]["count"] == 2 and results["mmlu"]["count"] == 4
    assert set(results["mmlu"]["categories"]) == {"stem", "other"}  # lm-eval's super-categories
    assert results["vicuna80"]["overall"] == 112.5 and results["mmvet"]["count"] == 2
    record = read_record(folder)["eval"]
    assert {"mmbench", "mmlu", "vicuna80", "mmvet"} <= set(record)
    assert (folder / "eval" / "mmbench" / "beam1" / "predictions.tsv").exists()
    mmlu_rows = (folder / "eval" / "mmlu" / "beam1" / "answers.jsonl").read_text().splitlines()
    assert len(mmlu_rows) == 4 and set(json.loads(mmlu_rows[0])["logprobs"]) == {"A", "B", "C", "D"}


def test_missing_data_fails_after_the_rest(trained, tmp_path):
    root, folder = trained
    cfg = cfg_for(root, "eval.benchmarks=[mmlu,synthetic]", f"eval.paths.mmlu={tmp_path}/absent",
                  "eval.num_beams=4", "eval.max_new_tokens=4")
    calls: list = []
    with pytest.raises(EvalFailed, match=r"mmlu: MMLU folder not found .*eval\.paths\.mmlu") as info:
        evaluate_run(cfg, folder, loader=counting_loader(calls))
    assert info.value.results["synthetic"]["num_beams"] == 4  # the benchmark after it was still scored
    assert len(calls) == 1 and "beam4" not in read_record(folder)["eval"].get("mmlu", {})


def test_unknown_benchmark_and_unfinished_runs_are_refused(trained, tmp_path):
    root, folder = trained
    with pytest.raises(ValueError, match="unknown benchmark 'mmmu'"):
        evaluate_run(cfg_for(root, "eval.benchmarks=[mmmu]"), folder, loader=no_model)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        evaluate_run(cfg_for(root, "eval=synthetic"), tmp_path, loader=no_model)


def test_resolve_run_by_id_or_path(trained):
    root, folder = trained
    cfg = cfg_for(root, "eval=synthetic")
    assert resolve_run(cfg) == (run_dir(cfg), cfg) and run_dir(cfg) == folder
    # +run=PATH: the run's saved config (its model, data, template) with this command's eval section.
    other = compose([f"paths.root={root}", "eval=mmlu", "eval.num_beams=3", f"+run={folder}"])
    found, effective = resolve_run(other)
    assert found == folder and effective.model.name == "tiny_s"
    assert list(effective.eval.benchmarks) == ["mmlu"] and effective.eval.num_beams == 3
    assert effective.data.synthetic_num_train == 64  # debug=fast's data, from the saved config


def test_cli_with_run_path(trained):
    root, folder = trained
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "lmm.eval", f"paths.root={root}", f"+run={folder}", "eval=synthetic",
         "eval.num_beams=2", "eval.max_new_tokens=4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthetic beam2:" in proc.stdout
    entry = read_record(folder)["eval"]["synthetic"]["beam2"]
    assert entry["count"] == 16 and entry["settings"]["generation"]["max_new_tokens"] == 4
    assert "beam1" in read_record(folder)["eval"]["synthetic"]


PROSE = "I cannot rate these answers."


def test_unparsed_judge_replies_publish_no_score_and_a_rerun_reasks_only_them(trained, tmp_path, server):
    root, folder = trained
    # Settings of its own (5 new tokens), so this is a fresh evaluation of beam 1.
    cfg = cfg_for(root, *llava_overrides(root, tmp_path, server, "eval.max_new_tokens=5"))
    synthetic_before = read_record(folder)["eval"]["synthetic"]
    server.reply_when = lambda user: PROSE
    with pytest.raises(EvalFailed) as info:
        evaluate_run(cfg, folder)
    assert ("llava_bench: 9 of 9 judge replies could not be parsed as a score (eval.judge.max_parse_failures = 0);"
            " item ids: 0, 1, 2.") in str(info.value)
    record = read_record(folder)["eval"]
    entry = record["llava_bench"]["beam1"]
    assert entry["status"] == "incomplete" and entry["overall"] is None and "categories" not in entry
    assert (entry["parse_failures"], entry["reviews"], entry["failed_items"]) == (9, 9, [0, 1, 2])
    assert entry["settings"]["generation"]["max_new_tokens"] == 5
    assert record["synthetic"] == synthetic_before  # nothing else lost
    out = folder / "eval" / "llava_bench" / "beam1"
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3
    review = json.loads((out / "reviews-1.jsonl").read_text().splitlines()[0])
    assert review["content"] == PROSE and review["tuple"] == [-1.0, -1.0]
    assert not list((tmp_path / "cache").glob("*.json"))  # no unparsed reply was cached

    # Only the detail question's replies fail now; the saved answers are reused (no model load).
    server.reply_when = lambda user: PROSE if "RULE-detail" in user else None
    with pytest.raises(EvalFailed, match=r"3 of 9 judge replies .* item ids: 1\.") as info:
        evaluate_run(cfg, folder, loader=no_model)
    assert read_record(folder)["eval"]["llava_bench"]["beam1"]["failed_items"] == [1]

    # The judge answers properly: only the three failed items are asked again, the rest come from the cache.
    server.reply_when = lambda user: None
    before, detail_before = len(server.requests), server.count("RULE-detail")
    results = evaluate_run(cfg, folder, loader=no_model)
    assert len(server.requests) - before == 3 and server.count("RULE-detail") - detail_before == 3
    entry = read_record(folder)["eval"]["llava_bench"]["beam1"]
    assert results["llava_bench"] == entry
    assert entry["status"] == "complete" and entry["overall"] == 100.0 and entry["parse_failures"] == 0


def test_parse_failures_within_the_allowed_number_are_left_out_and_counted(trained, tmp_path, server):
    root, folder = trained
    allowed = llava_overrides(root, tmp_path, server, "eval.max_new_tokens=3", "eval.judge.max_parse_failures=3")
    server.reply_when = lambda user: PROSE if "RULE-detail" in user else None
    results = evaluate_run(cfg_for(root, *allowed), folder)
    entry = results["llava_bench"]
    # The detail reviews are left out (never scored as (-1, -1)): (6 + 6) / (8 + 4) = 100.
    assert entry["overall"] == 100.0 and entry["categories"] == {"conv": 75.0, "complex": 150.0}
    assert entry["parse_failures"] == 3 and entry["status"] == "complete"
    assert "llava_bench beam1: 100.0 (3 judge replies unparsed" in runner.format_results(results)

    # A stricter limit re-scores the same answers: the three replies are asked again and still fail.
    strict = llava_overrides(root, tmp_path, server, "eval.max_new_tokens=3", "eval.judge.max_parse_failures=2")
    before = len(server.requests)
    with pytest.raises(EvalFailed, match=r"3 of 9 judge replies .*max_parse_failures = 2\); item ids: 1\."):
        evaluate_run(cfg_for(root, *strict), folder, loader=no_model)
    assert len(server.requests) - before == 3
    assert read_record(folder)["eval"]["llava_bench"]["beam1"]["overall"] is None


def test_evaluation_after_training_fails_naming_the_items(trained, tmp_path, server):
    root, folder = trained
    cfg = cfg_for(root, *llava_overrides(root, tmp_path, server, "eval.max_new_tokens=2"))
    server.reply_when = lambda user: PROSE
    with pytest.raises(EvalFailed, match="item ids: 0, 1, 2"):
        run_pipeline(cfg)  # the run is done: training is skipped, evaluation runs and fails


def test_cli_exits_non_zero_naming_unparsed_items(trained, tmp_path, server):
    root, folder = trained
    server.reply_when = lambda user: PROSE
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "lmm.eval", f"paths.root={root}", f"+run={folder}",
         *llava_overrides(root, tmp_path, server, "eval.max_new_tokens=2")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "llava_bench: 9 of 9 judge replies could not be parsed" in proc.stderr
    assert "item ids: 0, 1, 2" in proc.stderr and "llava_bench beam1: 100.0" not in proc.stdout
