"""`python -m lmm.eval +checkpoint=...`: a LLaVA in the Hugging Face format and a bare LLM, evaluated without
training, recorded under runs/checkpoints/<slug>, linked into their sweep and shown as rows of Tables 2 and 5."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_eval_judge_fake import FIXTURES, FakeJudge, copy_fixture, judge_overrides
from test_eval_mmlu import write_fixture
from tiny_hf import save_tiny_llava, save_tiny_llm

from analysis.collect import collect
from analysis.tables import cost_table, table2, table4, table5
from lmm.config import compose
from lmm.eval.checkpoint import checkpoint_slug, evaluate_checkpoint, inspect_checkpoint
from lmm.records import is_done, read_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    fake = FakeJudge()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_tokenizer):
    """A tiny LLaVA saved in the HF format and a tiny random-init bare LLM, each in its own folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {"llava": save_tiny_llava(root / "tiny-llava-hf", tiny_tokenizer, seed=1),
            "llm": save_tiny_llm(root / "tiny-vicuna", tiny_tokenizer, seed=2),
            "mmlu": write_fixture(root / "mmlu", num_dev=2, num_test=2)}


def eval_overrides(tmp_path: Path, server: FakeJudge, checkpoints: dict, *extra: str) -> list[str]:
    mmvet = copy_fixture("mmvet", tmp_path / "data") if not (tmp_path / "data" / "mmvet").exists() \
        else tmp_path / "data" / "mmvet"
    return [f"paths.root={tmp_path}", "eval=paper", "eval.max_new_tokens=4", "eval.batch_size=4",
            f"eval.paths.mmvet={mmvet}", "eval.judge.num_runs.mmvet=1", f"eval.paths.mmlu={checkpoints['mmlu']}",
            f"eval.paths.vicuna80={FIXTURES / 'vicuna80'}", *judge_overrides(server, tmp_path / "cache"), *extra]


def keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].lstrip("+") for o in overrides}


def test_a_llava_checkpoint_in_the_hf_format_is_evaluated_and_fills_table_2(tmp_path, server, checkpoints):
    ckpt = checkpoints["llava"]
    overrides = eval_overrides(tmp_path, server, checkpoints, "eval.benchmarks=[mmvet,mmlu]", "sweep=table2",
                               "model=13b_llama2", f"+checkpoint={ckpt}")
    folder, results, skipped = evaluate_checkpoint(compose(overrides), str(ckpt), explicit=keys(overrides))

    slug = checkpoint_slug(inspect_checkpoint(str(ckpt)))
    assert slug.startswith("tiny-llava-hf-") and not skipped
    assert folder == tmp_path / "runs" / "checkpoints" / slug and is_done(folder)
    view = tmp_path / "runs" / "table2" / slug
    assert view.is_symlink() and view.resolve() == folder
    record = read_record(folder)
    assert record["kind"] == "stage2" and record["source"] == "checkpoint"
    assert record["checkpoint"]["id"] == str(ckpt) and record["checkpoint"]["kind"] == "llava"
    assert record["checkpoint"]["preset"] == "13b_llama2" and record["checkpoint"]["preset_source"] == "given"
    assert record["hparams"]["nominal_params_b"] == 13 and record["hparams"]["image_size"] == 32
    assert record["choices"]["model"] == "13b_llama2" and record["config"]["model"]["hidden_size"] == 64
    assert results["mmvet"]["count"] == 2 and set(results["mmlu"]["categories"]) == set(
        ["stem", "humanities", "social_sciences", "other"])
    assert record["eval"]["mmvet"]["beam1"]["overall"] == results["mmvet"]["overall"]
    answers = (folder / "eval" / "mmvet" / "beam1" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 2 and json.loads(answers[0])["metadata"]["template"] == "llama_2"  # the preset's

    frame = collect(tmp_path / "runs")
    table = table2(frame, sweep="table2")
    assert list(table.values.index) == ["LLaVA-13B (LLaMA-2)"]
    assert table.values.loc["LLaVA-13B (LLaMA-2)", "Total"] == results["mmvet"]["overall"]
    beside = table2(frame, sweep="table2", reference=True)  # in the paper's own row, beside its 32.6
    assert beside.display.loc["LLaVA-13B (LLaMA-2)", "Total (paper)"] == "32.6±0.1"
    assert beside.values.loc["LLaVA-13B (LLaMA-2)", "Total"] == results["mmvet"]["overall"]
    assert table4(frame, sweep="table2").values.empty and cost_table(frame).values.empty  # no training here

    # Again: everything is scored with these settings, nothing is loaded; the record keeps its scores.
    again, results2, _ = evaluate_checkpoint(compose(overrides), str(ckpt), explicit=keys(overrides),
                                             loader=lambda *a: pytest.fail("loaded the model again"))
    assert again == folder and results2["mmvet"]["overall"] == results["mmvet"]["overall"]


def test_a_bare_llm_is_evaluated_on_the_language_benchmarks_and_fills_table_5(tmp_path, server, checkpoints,
                                                                             tiny_tokenizer):
    ckpt = checkpoints["llm"]
    named = eval_overrides(tmp_path, server, checkpoints, "sweep=table5", "model=13b", f"+checkpoint={ckpt}")
    folder, results, skipped = evaluate_checkpoint(compose(named), str(ckpt), explicit=keys(named))
    assert skipped == ["llava_bench", "mmvet", "mmbench"] and set(results) == {"vicuna80", "mmlu"}
    record = read_record(folder)
    assert record["checkpoint"]["kind"] == "llm" and record["hparams"]["image_size"] is None
    assert record["config"]["eval"]["benchmarks"] == ["vicuna80", "mmlu"]
    assert results["vicuna80"]["overall"] == 112.5  # the fake judge's 9 vs the reference's 8

    # Another LLM without a preset: named after its folder, sized from its config.
    other = save_tiny_llm(tmp_path / "my-llm", tiny_tokenizer, seed=5)
    plain = eval_overrides(tmp_path, server, checkpoints, "sweep=table5", "eval.benchmarks=[mmlu]",
                           f"+checkpoint={other}")
    folder2, _, _ = evaluate_checkpoint(compose(plain), str(other), explicit=keys(plain))
    record2 = read_record(folder2)
    assert record2["checkpoint"]["preset"] is None and record2["choices"]["model"].endswith("b")
    assert 0 < record2["hparams"]["nominal_params_b"] < 0.001

    frame = collect(tmp_path / "runs")
    table = table5(frame, sweep="table5")
    rows = {label: values for label, values in table.values.iterrows()}
    assert ("Vicuna-13B", "–") in rows and ("my-llm", "–") in rows
    assert rows[("Vicuna-13B", "–")]["Vicuna-80"] == 112.5
    assert rows[("Vicuna-13B", "–")]["MMLU"] == results["mmlu"]["overall"]
    beside = table5(frame, sweep="table5", reference=True)
    assert beside.display.loc[("Vicuna-13B", "–"), "Vicuna-80 (paper)"] == "79.9"
    assert beside.values.loc[("Vicuna-13B", "–"), "Vicuna-80"] == 112.5


def test_the_command_line(tmp_path, checkpoints):
    ckpt = checkpoints["llm"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lmm.eval", f"+checkpoint={ckpt}", "eval=mmlu", f"paths.root={tmp_path}",
           f"eval.paths.mmlu={checkpoints['mmlu']}", "sweep=table5"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    slug = checkpoint_slug(inspect_checkpoint(str(ckpt)))
    assert f"checkpoints/{slug}" in done.stdout and "mmlu beam1:" in done.stdout
    assert read_record(tmp_path / "runs" / "table5" / slug)["eval"]["mmlu"]["beam1"]["count"] == 8

    missing = subprocess.run([*cmd[:3], f"+checkpoint={tmp_path}/nothing-here", *cmd[4:]], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "cannot read the config of checkpoint" in missing.stderr
