"""Stage 0: a base LLM instruction-tuned on ShareGPT before stages 1-2 (its identity, data, training, records,
jobs, plan and the error when neither a checkpoint nor a base LLM is given)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmm.config import compose
from lmm.data.tokenize import IGNORE_INDEX
from lmm.launch.identity import run_dir, stage0_active, stage0_dir, stage0_id, stage1_dir, stage1_id, stage2_id
from lmm.plan.preflight import preflight
from lmm.validate import ConfigError, validate

REPO = Path(__file__).resolve().parents[1]
# ShareGPT-shaped conversations (as `python -m lmm.data.sharegpt` writes them): multi-turn, Markdown, code, Unicode.
SHAREGPT = [
    {"id": "a_0", "conversations": [
        {"from": "human", "value": "How do I reverse a list in Python?"},
        {"from": "gpt", "value": "Use slicing:\n```python\nitems[::-1]\n```\nor `items.reverse()` in place."},
        {"from": "human", "value": "Which one is faster?"},
        {"from": "gpt", "value": "`reverse()` avoids a copy, so it is **faster** for big lists."}]},
    {"id": "b_0", "conversations": [
        {"from": "human", "value": "Traduis « bonjour » en anglais."},
        {"from": "gpt", "value": "« Bonjour » se dit \"hello\" en anglais."}]},
    {"id": "c_1", "conversations": [
        {"from": "human", "value": "List three primes."},
        {"from": "gpt", "value": "1. 2\n2. 3\n3. 5"},
        {"from": "human", "value": "And their sum?"},
        {"from": "gpt", "value": "2 + 3 + 5 = 10."},
        {"from": "human", "value": "Thanks!"},
        {"from": "gpt", "value": "You're welcome."}]},
]


@pytest.fixture(scope="module")
def base_llm(tmp_path_factory) -> Path:
    """A tiny random-init LLaMA saved as a Hugging Face folder: the stand-in for huggyllama/llama-65b."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmm.data.tokenizer import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("base-llm")
    tokenizer = build_tiny_tokenizer(folder / "tokenizer-cache")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder / "llm")
    tokenizer.save_pretrained(folder / "llm")
    return folder / "llm"


def _stage0_cfg(root: Path, base: Path, *extra: str):
    return compose([f"paths.root={root}", "debug=fast", f"model.base={base}", *extra])


# ------------------------------------------------------------------------------------------------ identity
def test_stage0_runs_only_without_a_checkpoint_and_its_id_enters_stage_1_and_2(tmp_path, base_llm):
    plain = compose([f"paths.root={tmp_path}"])
    cfg = _stage0_cfg(tmp_path, base_llm)
    assert not stage0_active(plain) and stage0_active(cfg)
    assert not stage0_active(compose(["model=33b", "model.base=huggyllama/llama-30b"]))  # has a checkpoint
    assert stage0_id(cfg).startswith("s0-tiny_s-synthetic_sharegpt-")
    assert stage0_dir(cfg) == tmp_path / "runs" / "stage0" / stage0_id(cfg)
    # A different stage 0 (recipe, base, data) is a different LLM: a different stage 1 and stage 2.
    for change in ("stage0.lr=5e-4", "stage0.epochs=3", "stage0.data.max_length=128", "seed=1"):
        other = _stage0_cfg(tmp_path, base_llm, change)
        assert stage0_id(other) != stage0_id(cfg), change
        assert stage1_id(other) != stage1_id(cfg) and stage2_id(other) != stage2_id(cfg), change
    other = _stage0_cfg(tmp_path, base_llm.parent / "another-base")
    assert (stage0_id(other), stage1_id(other)) != (stage0_id(cfg), stage1_id(cfg))
    # Stage 0 reads no image: runs with another tower share it (but not stage 1).
    tower = _stage0_cfg(tmp_path, base_llm, "vision=tiny_48")
    assert stage0_id(tower) == stage0_id(cfg) and stage1_id(tower) != stage1_id(cfg)
    # How it runs is not what it computes.
    for change in ("stage0.zero_stage=2", "stage0.gradient_checkpointing=true", "stage0.data.num_workers=3"):
        assert stage0_id(_stage0_cfg(tmp_path, base_llm, change)) == stage0_id(cfg), change
    # stage=stage0 names the stage-0 run itself.
    only = _stage0_cfg(tmp_path, base_llm, "stage=stage0")
    assert run_dir(only) == stage0_dir(cfg)


# ---------------------------------------------------------------------------------------------------- data
def test_only_assistant_text_is_trained_on_sharegpt_samples(tmp_path, base_llm):
    from transformers import AutoTokenizer

    from lmm.training.data import build_training_data

    data = tmp_path / "sharegpt_clean.json"
    data.write_text(json.dumps(SHAREGPT))
    cfg = _stage0_cfg(tmp_path, base_llm, "stage0.data.kind=llava", f"stage0.data.path={data}",
                      "stage0.data.name=fixture", "stage0.data.max_length=2048")
    tokenizer = AutoTokenizer.from_pretrained(base_llm)
    training = build_training_data(cfg, "stage0", tokenizer, None, 1)
    dataset = training.dataset
    assert len(dataset) == len(SHAREGPT) and dataset.stats.text_samples == len(SHAREGPT)
    for index, record in enumerate(SHAREGPT):
        ids, labels = dataset.tokens(index)
        trained = labels != IGNORE_INDEX
        assert torch.equal(labels[trained], ids[trained])  # a label is the token itself, never shifted
        # Contiguous trained spans, one per assistant turn: its whole reply and the end-of-turn </s>, nothing else.
        spans, start = [], None
        for position, flag in enumerate([*trained.tolist(), False]):
            if flag and start is None:
                start = position
            elif not flag and start is not None:
                spans.append(tokenizer.decode(ids[start:position]))
                start = None
        replies = [turn["value"] for turn in record["conversations"] if turn["from"] == "gpt"]
        assert [span.strip() for span in spans] == [f"{reply}{tokenizer.eos_token}" for reply in replies]
        # And nothing of the user's turns or the system prompt is trained.
        untrained = tokenizer.decode(ids[~trained])
        for turn in record["conversations"]:
            if turn["from"] == "human":
                assert turn["value"] in untrained


# ----------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_stage0_then_stage1_and_stage2_end_to_end_and_a_second_run_trains_nothing(tmp_path, base_llm, caplog):
    from lmm.launch.rundir import read_attempts
    from lmm.pipeline import run_pipeline
    from lmm.records import is_done, read_record

    cfg = _stage0_cfg(tmp_path, base_llm, "trainer.max_steps=12", "stage0.global_batch_size=8",
                      "stage0.micro_batch_size=8", "stage0.lr=3e-3", "stage0.epochs=3")
    validate(cfg)
    folder = run_pipeline(cfg)
    s0, s1 = stage0_dir(cfg), stage1_dir(cfg)
    assert folder == run_dir(cfg) and all(is_done(f) for f in (s0, s1, folder))

    record0 = read_record(s0)
    stats = record0["stage0"]
    assert record0["kind"] == "stage0" and record0["run_id"] == s0.name and record0["base"] == str(base_llm)
    assert stats["steps"] == 12 and stats["tokens"] > 0 and stats["data"]["text_samples"] == 64
    summary = record0["stages"]["stage0"]
    assert summary["tokens"] == stats["tokens"] and summary["gpu_hours_per_node"] > 0 and summary["usd"] > 0
    assert record0["cost"]["usd"]["total"] == summary["usd"]
    assert record0["hparams"]["lr_scheduler"] == "cosine" and record0["hparams"]["template"] == "vicuna_v1"
    losses = [entry["loss"] for entry in stats["losses"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses  # stage 0 learns its chats

    # Its output is a Hugging Face LLM folder, and stages 1-2 start from it (not from the base).
    llm = s0 / "model"
    assert (llm / "config.json").exists() and (llm / "tokenizer.json").exists()
    tuned = load_file(str(llm / "model.safetensors"))
    base = load_file(str(base_llm / "model.safetensors"))
    key = "model.embed_tokens.weight"
    assert not torch.equal(tuned[key][: base[key].shape[0]], base[key])
    record1, record2 = read_record(s1), read_record(folder)
    assembled = load_file(str(Path(record1["assembled"]) / "model.safetensors"))
    [embed] = [v for k, v in assembled.items() if k.endswith("embed_tokens.weight")]
    assert torch.equal(embed, tuned[key].to(embed.dtype))
    assert record1["stage0"]["run_id"] == record2["stage0"]["run_id"] == s0.name
    assert record2["kind"] == "stage2" and record2["finetune"]["steps"] == 12
    # The analysis reads stage 0's cost through the run's pointer to it.
    from analysis.collect import collect, runs_view

    [row] = runs_view(collect(tmp_path / "runs")).to_dict("records")
    assert row["stage0_run_id"] == s0.name and row["stage0_gpu_hours_per_node"] == summary["gpu_hours_per_node"]

    # The same command again trains nothing: every record and weight file is as it was, one attempt each.
    before = {f: (f / "results.json").read_text() for f in (s0, s1, folder)}
    mtime = (llm / "model.safetensors").stat().st_mtime_ns
    caplog.set_level("INFO")
    assert run_pipeline(_stage0_cfg(tmp_path, base_llm, "trainer.max_steps=12", "stage0.global_batch_size=8",
                                    "stage0.micro_batch_size=8", "stage0.lr=3e-3", "stage0.epochs=3")) == folder
    assert {f: (f / "results.json").read_text() for f in before} == before
    assert (llm / "model.safetensors").stat().st_mtime_ns == mtime
    assert [len(read_attempts(f)) for f in (s0, s1, folder)] == [1, 1, 1]
    assert "is done: not trained again" in caplog.text


# ------------------------------------------------------------------------------------------- plan and jobs
def test_the_planner_sizes_stage0_at_65b():
    cfg = compose(["experiment=table5/65b", "paths.vicuna_65b=null", "stage=stage0"])
    plan = preflight(cfg)
    [stage] = plan.stages
    w = stage.workload
    assert (stage.stage, stage.run_id, w.method, w.zero_stage, w.world) == ("stage0", stage0_id(cfg), "full", 3, 32)
    # The paper's 159M ShareGPT tokens, three epochs, no image tokens and no tower.
    assert w.samples * w.seq_text_only == 159_000_000 and w.epochs == 3 and w.image_tokens == 0
    assert stage.flops.vision == 0 and stage.params_trainable == plan.params.llm
    assert stage.fits and 30 < stage.memory.total / 2**30 < 80
    # ≈ 8 × 65B × 477M tokens (with recomputation) at the calibrated throughput: tens of GPU-hours per node.
    assert 50 < stage.gpu_hours_per_node < 120 and stage.usd == pytest.approx(stage.gpu_hours_per_node * 13.63)
    # On one node it would not fit: the fixes name more nodes.
    small = preflight(compose(["experiment=table5/65b", "paths.vicuna_65b=null", "stage=stage0", "stage0.nodes=1"]))
    assert small.fits is False


def _train(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LMM_VICUNA_65B"}
    return subprocess.run([sys.executable, "-m", "lmm.train", *args, f"paths.root={tmp_path}"], cwd=tmp_path,
                          env={**env, "LMM_CLUSTER": "a100_80g"}, capture_output=True, text=True, timeout=timeout)


def test_slurm_dry_run_puts_one_stage0_job_before_the_stage1_job_of_every_point_on_that_llm(tmp_path):
    out = _train(tmp_path, "-m", "hydra/launcher=slurm", "dry_run=true", "experiment=table5/65b,table5/65b_mix")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "2 grid point(s) → 6 job(s): 1 stage0, 1 stage1, 2 train, 2 eval" in text
    jobs = ["[" + part for part in text.split("\n[")[1:]]
    [stage0] = [j for j in jobs if j.startswith("[stage0] ")]
    [stage1] = [j for j in jobs if j.startswith("[stage1] ")]
    assert stage0.startswith("[stage0] s0-65b-sharegpt-")
    assert "--nodes=4 --ntasks-per-node=8" in stage0 and "--gpus-per-node=8" in stage0 and "after:" not in stage0
    assert "[stage0] trainable: the whole LLM from model.base" in stage0 and "DeepSpeed ZeRO-3" in stage0
    assert "base huggyllama/llama-65b" in stage0 and "stage0 " in stage0 and "GB/GPU fits of 80" in stage0
    s0_id = stage0.split()[1]
    assert f"after: stage0 job of {s0_id}" in stage1 and "--nodes=2 --ntasks-per-node=8" in stage1
    assert "stage-0 trainings: 1, GPU-hours per node: " in text
    # With the user's own Vicuna-65B there is no stage 0 at all.
    own = _train(tmp_path, "-m", "hydra/launcher=slurm", "dry_run=true", "experiment=table5/65b",
                 "paths.vicuna_65b=/data/vicuna-65b")
    assert own.returncode == 0 and "0 stage0, 1 stage1" in own.stdout and "[stage0]" not in own.stdout


def test_no_checkpoint_and_no_base_fails_in_one_line_before_any_job_is_submitted(tmp_path):
    message = "model.path = null and model.base = null"
    with pytest.raises(ConfigError, match=message):
        validate(compose(["model=65b", "paths.vicuna_65b=null", "model.base=null"]))
    out = _train(tmp_path, "-m", "hydra/launcher=slurm", "experiment=table5/65b", "model.base=null",
                 "paths.vicuna_65b=null", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = [line for line in out.stderr.splitlines() if message in line]
    assert "LMM_VICUNA_65B=/path/to/vicuna-65b" in line and "model.base=huggyllama/llama-65b" in line
    assert not list(tmp_path.rglob("jobs.jsonl")) and not (tmp_path / "runs" / "stage0").exists()


@pytest.mark.slow
def test_the_local_executor_runs_stage0_stage1_and_training_as_dependent_jobs_once(tmp_path, base_llm):
    """`hydra/launcher=submitit` runs the SLURM job plan as processes: one stage-0 job for both grid points, then
    stage 1, then the two trainings; the same command again submits nothing."""
    from lmm.launch.jobs import read_jobs

    def launch() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lmm.train", "-m", "hydra/launcher=submitit", f"paths.root={tmp_path}",
             "debug=fast", f"model.base={base_llm}", "tuning=full,lora", "tuning.rank=8"],
            cwd=tmp_path, capture_output=True, text=True, timeout=900)

    out = launch()
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "4 job(s) submitted (1 stage0, 1 stage1, 2 train, 0 eval)" in log
    cfg = _stage0_cfg(tmp_path, base_llm)
    [job0] = read_jobs(stage0_dir(cfg))
    [job1] = read_jobs(stage1_dir(cfg))
    assert job0["kind"] == "stage0" and any("stage=stage0" in o for o in job0["overrides"][0])
    # Local jobs start after their dependencies ended (no scheduler holds them: no afterok here).
    assert f"after job {job0['job_id']} ended" in log and f"after job {job1['job_id']} ended" in log
    assert "afterok" not in log
    for method in ("full", "lora"):
        assert json.loads((run_dir(_stage0_cfg(tmp_path, base_llm, f"tuning={method}", "tuning.rank=8"))
                           / "results.json").read_text())["stage0"]["run_id"] == stage0_dir(cfg).name
    again = launch()
    assert again.returncode == 0 and "0 job(s) submitted (0 stage0, 0 stage1, 0 train, 0 eval)" in again.stdout + \
        again.stderr
    assert len(read_jobs(stage0_dir(cfg))) == 1


# ------------------------------------------------------------------------------------------------ analysis
def test_the_cost_tables_show_stage_0_and_count_a_shared_one_once_per_sweep(tmp_path):
    import pandas as pd

    from analysis.collect import collect
    from analysis.tables import make_tables
    from tests.test_analysis_intervals import write_run

    runs = tmp_path / "runs"
    stage0 = runs / "stage0" / "s0-65b-synthetic_sharegpt-0"
    stage0.mkdir(parents=True)
    (stage0 / "results.json").write_text(json.dumps({  # the planner's 65B stage 0: 78.8 GPU-h per node, $1,074
        "run_id": stage0.name, "kind": "stage0", "stages": {"stage0": {"gpu_hours_per_node": 78.8, "usd": 1074.0}}}))
    write_run(runs, "full65", model="65b", size_b=65, image=336, hours=13.5)
    write_run(runs, "lora65", model="65b", size_b=65, image=336, method="lora", hours=9.17)
    write_run(runs, "full33", model="33b", size_b=33, image=336, hours=5.8)
    only_33b = make_tables(collect(runs), "cost")  # before any run points at the stage 0
    assert "Stage 0 (GPU-h/node)" not in only_33b[0].values and "Stage-0 runs" not in only_33b[1].values
    for name in ("full65", "lora65"):  # both 65B runs start from the one stage-0 LLM
        path = runs / "toy" / name / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()),
                                    "stage0": {"run_id": stage0.name, "folder": str(stage0)}}))

    per_run, per_sweep = make_tables(collect(runs), "cost")
    assert per_run.values.loc["full65", "Stage 0 (GPU-h/node)"] == 78.8
    assert per_run.values.loc["lora65", "Stage 0 ($)"] == 1074.0
    assert pd.isna(per_run.values.loc["full33", "Stage 0 (GPU-h/node)"])  # its LLM has a checkpoint
    assert per_run.values.loc["full65", "Total (GPU-h/node)"] == 13.5  # the run's own stages; stage 0 beside
    sweep = per_sweep.values.loc["toy"]
    assert sweep["Stage-0 runs"] == 1 and sweep["Stage 0 (GPU-h/node)"] == 78.8  # once, not once per run
    assert sweep["Total (GPU-h/node)"] == pytest.approx(78.8 + 13.5 + 9.17 + 5.8)
    assert sweep["Total ($)"] == pytest.approx(1074.0)  # the hand-made stage-2 records carry no $
