"""DeepSpeed for real on CPU (gloo): ZeRO-2 and ZeRO-3, one process and two through torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmm.config import compose
from lmm.launch.identity import run_dir
from lmm.models.checkpoint import load_trained
from lmm.records import is_done, read_record

REPO = Path(__file__).resolve().parents[1]
CASES = {
    # (processes, overrides)
    "zero3-full-2proc": (2, ["deepspeed=zero3", "tuning=full"]),
    "zero3-lora-2proc": (2, ["deepspeed=zero3", "tuning=lora"]),
    "zero2-qlora-2proc": (2, ["deepspeed=zero2", "tuning=qlora"]),
    "zero2-full-1proc": (1, ["deepspeed=zero2", "tuning=full"]),
}


def _launch(root: Path, processes: int, overrides: list[str]) -> subprocess.CompletedProcess:
    args = [f"paths.root={root}", "debug=fast", "tuning.rank=8", f"cluster.gpus_per_node={processes}", *overrides]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "-m", "lmm.train"]
    else:
        cmd = [sys.executable, "-m", "lmm.train"]
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
    return subprocess.run([*cmd, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_deepspeed_trains_saves_and_reloads(tmp_path, case):
    processes, overrides = CASES[case]
    out = _launch(tmp_path, processes, overrides)
    assert out.returncode == 0, out.stderr[-4000:]
    cfg = compose([f"paths.root={tmp_path}", "debug=fast", "tuning.rank=8",
                   f"cluster.gpus_per_node={processes}", *overrides])
    folder = run_dir(cfg)
    assert is_done(folder)
    stats = read_record(folder)["finetune"]
    assert stats["world_size"] == processes and stats["steps"] == 3
    assert all(e["loss"] > 0 for e in stats["losses"])
    # ZeRO-3 gathers the partitioned weights for the saved folder: it reloads whole.
    model = load_trained(folder)
    assert model.config.text_config.hidden_size == cfg.model.hidden_size
