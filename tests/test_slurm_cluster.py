"""The one-node SLURM cluster of scripts/slurm/ runs submitit jobs: results, tasks, failures, requeues.

Needs the cluster up (`scripts/slurm/install.sh && scripts/slurm/start.sh`); the whole module is
skipped otherwise. Every wait has a deadline, so a broken cluster fails a test instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from omegaconf import OmegaConf

from lmm.launch.jobs import ACTIVE_STATES, state_name

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

REPO = Path(__file__).resolve().parents[1]
PRESET = OmegaConf.load(REPO / "conf" / "cluster" / "localhost_slurm.yaml")
DEADLINE_S = 45  # per wait; each test stays well under a minute on an idle cluster

# Jobs unpickle this module's functions in a fresh interpreter where tests/ is not importable:
# ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _executor(folder: Path, **params) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(
        slurm_partition=PRESET.partition, timeout_min=5, nodes=1, tasks_per_node=1, cpus_per_task=1
    )
    ex.update_parameters(**params)
    return ex


def _state(job: submitit.Job) -> str:
    return job.watcher.get_state(job.job_id, mode="force")


def _final_state(job: submitit.Job, deadline_s: float = DEADLINE_S) -> str:
    """The job's state once SLURM's accounting has it ended: a job's result file can come back while sacct still
    reports PENDING (seen on a cluster just started), so a state read at once is a race."""
    t0 = time.monotonic()
    while True:
        state = state_name(_state(job))  # "CANCELLED by 0" → CANCELLED
        if state not in ACTIVE_STATES | {"UNKNOWN"} or time.monotonic() - t0 >= deadline_s:
            return state
        time.sleep(0.5)


def _wait_done(job: submitit.Job, deadline_s: float = DEADLINE_S) -> float:
    """Polls sacct until the job is finished; returns the seconds waited. Never hangs."""
    t0 = time.monotonic()
    while not job.done(force_check=True):
        if time.monotonic() - t0 > deadline_s:
            state = _state(job)
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {deadline_s} s (state {state}); cancelled")
        time.sleep(0.5)
    return time.monotonic() - t0


def _wait_for(predicate, what: str, job: submitit.Job, deadline_s: float = DEADLINE_S) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > deadline_s:
            state = _state(job)
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id}: {what} not seen after {deadline_s} s (state {state}); cancelled")
        time.sleep(0.2)


# ----------------------------------------------------------------------------- job functions
def where_am_i(x: int) -> dict:
    return {
        "square": x * x,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "host": socket.gethostname(),
    }


def allreduce_rank() -> dict:
    import torch
    import torch.distributed as dist

    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    dist.init_process_group(backend="gloo", timeout=datetime.timedelta(seconds=30))
    try:
        t = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(t)
        return {
            "procid": int(os.environ["SLURM_PROCID"]),
            "ntasks": int(os.environ["SLURM_NTASKS"]),
            "rank": dist.get_rank(),
            "world": dist.get_world_size(),
            "sum": t.item(),
        }
    finally:
        dist.destroy_process_group()


def sleep_forever(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def slot_holder(seconds: float) -> dict:
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "gpus": os.environ.get("SLURM_GPUS_ON_NODE")}


class Counter(submitit.helpers.Checkpointable):
    """Counts to n_steps, one step a second, keeping the count in a file; resumes from that file."""

    def __call__(self, folder: str, n_steps: int) -> int:
        count_file, log_file = Path(folder, "count"), Path(folder, "steps.log")
        step = int(count_file.read_text()) if count_file.exists() else 0
        attempt = os.environ.get("SLURM_RESTART_COUNT", "0")
        while step < n_steps:
            time.sleep(1)
            step += 1
            tmp = count_file.with_suffix(".tmp")
            tmp.write_text(str(step))
            tmp.replace(count_file)
            with log_file.open("a") as f:
                f.write(f"{step} {attempt} {time.time():.3f}\n")
        return step


# ----------------------------------------------------------------------------- tests
def test_function_runs_on_the_cluster_and_returns(tmp_path):
    """(a) submitit → sbatch → srun → the function's return value comes back through the folder."""
    job = _executor(tmp_path).submit(where_am_i, 7)
    _wait_done(job)
    out = job.result()
    assert out["square"] == 49
    assert out["job_id"] == job.job_id
    assert out["partition"] == PRESET.partition
    assert _final_state(job) == "COMPLETED"


def test_two_tasks_all_reduce_with_gloo(tmp_path):
    """(b) tasks_per_node=2: SLURM_PROCID 0/1, SLURM_NTASKS=2, and a 2-rank gloo all-reduce works."""
    job = _executor(tmp_path, tasks_per_node=2).submit(allreduce_rank)
    _wait_done(job)
    results = sorted(job.results(), key=lambda r: r["procid"])
    assert [r["procid"] for r in results] == [0, 1]
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["ntasks"] == 2 and r["world"] == 2 for r in results)
    assert all(r["sum"] == 3.0 for r in results)  # (0 + 1) + (1 + 1)


def test_cancelled_job_is_reported_failed(tmp_path):
    """(c) a job killed by scancel never writes a result: sacct says CANCELLED and result() raises."""
    marker = tmp_path / "running"
    job = _executor(tmp_path).submit(sleep_forever, str(marker))
    job._results_timeout_s = 2  # submitit waits 15 s for a result file that will never come
    _wait_for(marker.exists, "the function starting", job)
    job.cancel()
    waited = _wait_done(job, deadline_s=30)
    assert _final_state(job).startswith("CANCELLED")
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="CANCELLED"):
        job.result()
    assert waited < 30


def test_killed_process_is_reported_failed(tmp_path):
    """(c) a task SIGKILLed (as by the OOM killer) is FAILED in sacct and result() raises."""
    job = _executor(tmp_path).submit(kill_myself)
    job._results_timeout_s = 2
    _wait_done(job, deadline_s=30)
    assert _final_state(job) == "FAILED"
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="FAILED"):
        job.result()


def test_preset_slots_run_two_jobs_side_by_side(tmp_path):
    """The localhost_slurm preset's request (1 GPU slot, 1 CPU, mem_gb_per_node) is accepted and two
    such jobs share the node at the same time (gres slots + DefMemPerCPU/--mem fit twice)."""
    ex = _executor(
        tmp_path,
        gpus_per_node=PRESET.gpus_per_node,
        tasks_per_node=PRESET.gpus_per_node,
        cpus_per_task=PRESET.cpus_per_task,
        mem_gb=PRESET.mem_gb_per_node,
    )
    jobs = [ex.submit(slot_holder, 4.0) for _ in range(2)]
    for job in jobs:
        _wait_done(job)
    a, b = (job.result() for job in jobs)
    assert a["start"] < b["end"] and b["start"] < a["end"], (a, b)  # the runs overlap
    assert a["gpus"] == b["gpus"] == "1", (a, b)  # each holds one of the node's 2 slots


def test_requeue_resumes_from_checkpoint(tmp_path):
    """(d) a time-out signal makes submitit checkpoint and `scontrol requeue`; the requeued job resumes
    from its counter file and finishes: the steps continue 1..n without a restart from 1."""
    n_steps = 6
    job = _executor(tmp_path / "submitit").submit(Counter(), str(tmp_path), n_steps)
    count_file = tmp_path / "count"
    _wait_for(lambda: count_file.exists() and int(count_file.read_text() or 0) >= 2, "step 2", job)
    t_interrupt = time.time()
    job._interrupt(timeout=True)  # USR2 only: what SLURM sends before a time-out
    _wait_done(job, deadline_s=50)
    assert job.result() == n_steps

    lines = [line.split() for line in (tmp_path / "steps.log").read_text().splitlines()]
    steps = [int(s) for s, _, _ in lines]
    attempts = [int(a) for _, a, _ in lines]
    assert steps == list(range(1, n_steps + 1)), steps  # continued, never restarted
    assert attempts[0] == 0 and attempts[-1] >= 1, attempts  # it really was requeued
    first_after = min(float(t) for _, a, t in lines if int(a) >= 1)
    requeue_s = first_after - 1.0 - t_interrupt  # the first step after a restart takes 1 s
    print(f"requeue: interrupt → resumed in {requeue_s:.1f} s")
    assert requeue_s < 40
