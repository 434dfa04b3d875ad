"""A run killed mid-training resumes from its latest checkpoint and ends with the same losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lmm.config import compose
from lmm.launch.identity import run_dir
from lmm.records import read_record
from lmm.training.checkpoints import MANIFEST

# 12 optimiser steps per epoch on 96 samples: the run crosses an epoch boundary after the kill.
COMMON = ["trainer.max_steps=16", "trainer.save_steps=4", "trainer.logging_steps=1", "tuning.rank=8",
          "data.synthetic_num_train=96", "pretrain_data.synthetic_num_train=96", "model.recipe.full.micro_batch_size=4",
          "model.recipe.lora.micro_batch_size=4", "trainer.save_total_limit=10"]


def _train(root, *overrides):
    cmd = [sys.executable, "-m", "lmm.train", f"paths.root={root}", *COMMON, *overrides]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """One stage-1 projector shared by every run here (stage 1 is not what this test is about)."""
    root = tmp_path_factory.mktemp("stage1")
    proc = _train(root, "stage=pretrain")
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return run_dir(compose([f"paths.root={root}", *COMMON, "stage=pretrain"]))


def _kill_after_first_checkpoint(proc, ckpt_dir, timeout_s=300) -> int:
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        # A checkpoint is complete once its manifest is written (last); resume refuses it before that.
        done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / MANIFEST).exists()]
        if done:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return int(done[0].name.split("-")[1])
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared before the run ended (rc={proc.poll()})")


@pytest.mark.slow
# Full fine-tuning in bf16 (a GPU's default) without DeepSpeed: the resume path of fp32 runs, plus the trained
# weights' fp32 copy beside a bf16 tower (`lmm.training.speed.trained_weights_in_fp32`); LoRA in fp32.
@pytest.mark.parametrize("method", ["full-bf16", "lora"])
def test_killed_run_resumes_with_identical_losses(tmp_path, stage1, method):
    overrides = ["stage=finetune", f"stage.projector_path={stage1}", f"tuning={method.split('-')[0]}"]
    if method.endswith("bf16"):
        overrides.append("trainer.precision=bf16")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    proc = _train(straight, *overrides)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    cfg = compose([f"paths.root={killed}", *COMMON, *overrides])
    step = _kill_after_first_checkpoint(_train(killed, *overrides), run_dir(cfg) / "checkpoints")
    assert not (run_dir(cfg) / "DONE").exists()
    resumed = _train(killed, *overrides)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()

    expected = read_record(run_dir(compose([f"paths.root={straight}", *COMMON, *overrides])))["finetune"]
    got = read_record(run_dir(cfg))["finetune"]
    assert got["resumed_from"] is not None and int(got["resumed_from"].split("-")[1]) >= step
    assert got["steps"] == expected["steps"] == 16
    assert [e["step"] for e in got["losses"]] == [e["step"] for e in expected["losses"]]
    for a, b in zip(got["losses"], expected["losses"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
