"""Multi-node jobs on the two-node local cluster (scripts/slurm/start.sh starts lmm0 and lmm1).

A paper-shaped grid in one submission: stage 1 on one node, stage 2 full fine-tuning (ZeRO-3) and
LoRA (ZeRO-2) each on 2 nodes × 1 task and on 1 node × 2 tasks. The 2-node runs see one process
group across the nodes (ranks and node ids from SLURM) and train exactly as the 2-process one-node
runs on the same batches; stage 1 is trained once for all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmm.config import compose
from lmm.launch.identity import run_dir, stage1_dir
from lmm.launch.jobs import read_jobs
from lmm.launch.rundir import read_attempts
from lmm.records import read_record

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
REPO = Path(__file__).resolve().parents[1]
COMMON = ["debug=fast", "cluster=localhost_slurm", "tuning.rank=8"]
# name: (method, ZeRO stage, nodes, GPUs per node)
SHAPES = {"full_2x1": ("full", 3, 2, 1), "full_1x2": ("full", 3, 1, 2),
          "lora_2x1": ("lora", 2, 2, 1), "lora_1x2": ("lora", 2, 1, 2)}


def _nodes() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%D"], capture_output=True, text=True, timeout=30)
    return sum(int(n) for n in out.stdout.split() if n.isdigit())


def _experiments(conf: Path) -> None:
    (conf / "experiment").mkdir(parents=True)
    for name, (method, zero, nodes, gpus) in SHAPES.items():
        (conf / "experiment" / f"{name}.yaml").write_text(textwrap.dedent(f"""\
            # @package _global_
            defaults:
              - override /tuning: {method}
              - override /deepspeed: zero{zero}
            tuning:
              nodes: {nodes}
            cluster:
              gpus_per_node: {gpus}
            """))


def _folder(root: Path, name: str) -> Path:
    method, zero, nodes, gpus = SHAPES[name]
    return run_dir(compose([f"paths.root={root}", *COMMON, f"tuning={method}", f"deepspeed=zero{zero}",
                            f"tuning.nodes={nodes}", f"cluster.gpus_per_node={gpus}"]))


def test_two_node_runs_train_as_one_process_group_and_match_one_node_runs(tmp_path):
    if _nodes() < 2:
        pytest.skip("the local cluster has one node: start it with scripts/slurm/start.sh (two nodes by default)")
    conf = tmp_path / "conf"
    _experiments(conf)
    cmd = [sys.executable, "-m", "lmm.train", "-m", "--config-dir", str(conf), "hydra/launcher=slurm",
           f"experiment={','.join(SHAPES)}", f"paths.root={tmp_path}", *COMMON]
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "5 job(s) submitted (0 stage0, 1 stage1, 4 train, 0 eval)" in log
    assert log.count("(2 node(s) × 1 task(s))") == 2 and log.count("(1 node(s) × 2 task(s))") == 2, log[-4000:]

    # Stage 1: one job on one node, trained once, shared by the four runs.
    stage1 = stage1_dir(compose([f"paths.root={tmp_path}", *COMMON]))
    assert [(j["kind"], j["nodes"]) for j in read_jobs(stage1)] == [("stage1", 1)]
    assert len(read_attempts(stage1)) == 1

    records = {name: read_record(_folder(tmp_path, name)) for name in SHAPES}
    for name, (_, _, nodes, gpus) in SHAPES.items():
        record = records[name]
        assert record["resources"]["nodes"] == nodes and record["finetune"]["world_size"] == 2
        assert record["stages"]["finetune"]["gpus"] == 2
        job = [j for j in read_jobs(_folder(tmp_path, name)) if j["kind"] == "train"][-1]
        assert (job["nodes"], job["tasks_per_node"]) == (nodes, gpus)
        assert record["slurm_job_id"] == job["job_id"]
        logs = [Path(job["stdout"].replace("_0_log.out", f"_{rank}_log.out")).read_text() for rank in (0, 1)]
        # submitit's job environment of each rank: node 0 and 1 of 2 nodes, or local ranks 0 and 1 of one.
        expected = ([f"local_rank=0(1), node={r}(2), global_rank={r}(2)" for r in (0, 1)] if nodes == 2 else
                    [f"local_rank={r}(2), node=0(1), global_rank={r}(2)" for r in (0, 1)])
        for rank_log, env_line in zip(logs, expected):
            assert env_line in rank_log, rank_log[:2000]
        nodelist = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job["job_id"], "-o", "NodeList"],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
        assert nodelist == "lmm[0-1]" if nodes == 2 else nodelist in ("lmm0", "lmm1"), nodelist

    # Two nodes × one task train exactly as one node × two tasks on the same batches.
    for method in ("full", "lora"):
        two_nodes = records[f"{method}_2x1"]["finetune"]["losses"]
        one_node = records[f"{method}_1x2"]["finetune"]["losses"]
        assert [e["step"] for e in two_nodes] == [e["step"] for e in one_node] == [1, 2, 3]
        for a, b in zip(two_nodes, one_node):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), (method, two_nodes, one_node)
    # GPU-hours follow the world size: 2 ranks for rank 0's device time (CPU time on CPU), over 8 GPUs per node.
    finetune = records["full_2x1"]["stages"]["finetune"]
    [attempt] = read_attempts(_folder(tmp_path, "full_2x1"))
    assert finetune["gpu_hours"] == pytest.approx(attempt["cpu_time_s"] * 2 / 3600, rel=1e-3)
