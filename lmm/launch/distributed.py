"""Sets torch.distributed's rank variables from SLURM (one task per GPU), torchrun, or a lone process."""

from __future__ import annotations

import os

RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# A process group of one process has no peer that must find its store: port 0 lets its TCPStore bind whichever
# port is free when it starts. A port looked up free beforehand (and closed again) was taken by another process
# in the seconds before the store bound it, often enough to fail CI with EADDRINUSE.
ANY_FREE_PORT = "0"


def in_job_task() -> bool:
    """True inside a submitit job (SLURM or local executor) or an `srun` task."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR")) or all(
        k in os.environ for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID"))


def setup_distributed_env(need_process_group: bool) -> dict[str, str]:
    """Export RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT before DeepSpeed/Trainer start.

    - Inside a submitit job or an srun task: submitit's TorchDistributedEnvironment reads them from
      the job's variables (first host of the node list as master, a port derived from the job id),
      multi-node included; a one-task job lets its store pick a free port instead.
      CUDA_VISIBLE_DEVICES is left alone: each task picks its GPU by LOCAL_RANK.
    - Under torchrun (RANK already set): nothing to do.
    - A lone process that needs a process group (DeepSpeed): rank 0 of 1, its store on a free local port.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        pass
    elif in_job_task():
        from submitit.helpers import TorchDistributedEnvironment

        os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # a plain srun task: SLURM's variables
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if os.environ["WORLD_SIZE"] == "1":
            # Not the port submitit derives from the job id (a local job's id is a process id; another job or any
            # socket may hold that port, and the process group then fails with EADDRINUSE).
            os.environ["MASTER_PORT"] = ANY_FREE_PORT
    elif need_process_group:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=ANY_FREE_PORT)
    return {k: os.environ[k] for k in RANK_VARS if k in os.environ}


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def threads_from_slurm() -> int | None:
    """Give each rank the CPUs SLURM allotted to its task (`--cpus-per-task`) as its thread count.

    Without this, torch takes every core it sees: on a shared node, more threads than the job's CPUs.
    A smaller OMP_NUM_THREADS (exported from the submitting shell) is kept. Returns the count set, or None
    outside a SLURM task.
    """
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if not cpus.isdigit():
        return None
    import torch

    threads = int(cpus)
    asked = os.environ.get("OMP_NUM_THREADS", "")
    if asked.isdigit() and 0 < int(asked) < threads:
        threads = int(asked)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for processes this one starts (data-loader workers)
    return threads
