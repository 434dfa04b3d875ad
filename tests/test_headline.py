"""The headline command does what its user means: a paper-size model brings the paper's setting, a tiny one
the CPU setting; what cannot run on this machine is refused in seconds, before anything is built or fetched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmm.config import compose

REPO = Path(__file__).resolve().parents[1]


def _train(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmm.train", *args, f"paths.root={tmp_path}"], cwd=tmp_path,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("model", ["7b", "13b", "13b_llama2", "33b", "65b", "70b"])
def test_a_paper_size_model_brings_the_papers_setting(model, monkeypatch):
    monkeypatch.delenv("LMM_CLUSTER", raising=False)
    cfg = compose([f"model={model}"])
    assert (cfg.setting, cfg.vision.name, cfg.pretrain_data.name, cfg.data.name, cfg.deepspeed.name,
            cfg.cluster.name) == ("paper", "clip_l14_336", "laion_cc_sbu_558k", "llava_80k", "paper", "a100_80g")
    assert compose([f"model={model}", "tuning=qlora"]).deepspeed.stage == 2  # ZeRO-2 for QLoRA, as the paper


def test_the_cluster_of_the_paper_setting_is_the_users_and_everything_can_be_overridden(monkeypatch):
    monkeypatch.setenv("LMM_CLUSTER", "localhost_slurm")
    assert compose(["model=33b"]).cluster.name == "localhost_slurm"
    cfg = compose(["model=33b", "vision=clip_l14_224", "data=llava_80k_sharegpt", "deepspeed=zero2", "cluster=local"])
    assert (cfg.vision.name, cfg.data.name, cfg.deepspeed.stage, cfg.cluster.name) == \
        ("clip_l14_224", "llava_80k_sharegpt", 2, "local")
    # An experiment file still decides what it states (Table 3's 224 px row), the command line over it.
    assert compose(["experiment=table3/33b_224"]).vision.name == "clip_l14_224"
    assert compose(["experiment=table3/33b_224", "vision=clip_l14_336"]).vision.name == "clip_l14_336"


def test_a_tiny_model_keeps_the_cpu_setting():
    cfg = compose(["model=tiny_m"])
    assert (cfg.setting, cfg.vision.name, cfg.data.name, cfg.deepspeed.stage, cfg.cluster.name) == \
        ("cpu", "tiny_32", "synthetic", 0, "local")


def test_headline_dry_run_shows_the_papers_setting_for_every_point(tmp_path, monkeypatch):
    monkeypatch.delenv("LMM_CLUSTER", raising=False)
    out = _train(tmp_path, "-m", "model=33b,65b", "tuning=lora,full", "dry_run=true", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    plans = out.stdout.split("\nrun ")[1:]  # Hydra's own lines first
    assert len(plans) == 4
    for plan in plans:
        assert "vision clip_l14_336 (336px)" in plan and "DeepSpeed ZeRO-3" in plan
        assert "setting paper: cluster a100_80g (8 × A100-80G per node), stage-1 data laion_cc_sbu_558k, " \
               "stage-2 data llava_80k" in plan


def test_a_paper_run_on_this_cpu_machine_is_refused_in_seconds_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.delenv("LMM_CLUSTER", raising=False)
    started = time.monotonic()
    out = _train(tmp_path, "model=33b")
    assert out.returncode == 2 and time.monotonic() - started < 60
    assert "cluster=a100_80g describes nodes of 8 × A100-80G, and this machine has no GPU" in out.stderr
    assert "python -m lmm.train -m hydra/launcher=slurm model=33b" in out.stderr
    assert "Traceback" not in out.stderr

    out = _train(tmp_path, "model=33b", "cluster=local")
    assert out.returncode == 2
    assert "model=33b on this machine (cluster=local: 1 process(es) on the CPU) needs about" in out.stderr
    needed = float(out.stderr.split("needs about ")[1].split(" GB")[0])
    available = float(out.stderr.split("and this machine has ")[1].split(" GB")[0])
    assert needed > available > 0
    # Only Hydra's own log folder was written: no run folder, nothing assembled or fetched.
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["default"]
    assert [p.name for p in (tmp_path / "runs" / "default").iterdir()] == [".hydra"]
    assert not (tmp_path / ".cache" / "assembled").exists() and not (tmp_path / "data").exists()


def test_missing_weights_fail_in_seconds_with_one_line_and_the_fetch_command(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on: the Hub is unreachable
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    out = _train(tmp_path, "model.path=nobody/missing-llm", "debug=fast",
                 env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert out.returncode == 2 and time.monotonic() - started < 30
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("lmm.train: not started: model=tiny_s: nobody/missing-llm is not in the Hugging "
                              "Face cache and cannot be fetched now")
    assert "is unreachable" in message and message.endswith("fetch it with: python -m lmm.prepare models tiny_s")
    assert "Traceback" not in out.stderr and out.stderr.count("Retrying") == 0

    out = _train(tmp_path, "model.path=nobody/missing-llm", "debug=fast", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "(HF_HUB_OFFLINE=1)" in out.stderr
