"""Whether a run can start on this machine: GPUs for a GPU cluster's run, RAM for a CPU run.

`python -m lmm.train` asks before anything is built or downloaded, so that e.g. `model=33b` on a laptop is
refused in seconds with the numbers and the command that runs it where it fits, instead of fetching 65 GB.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from lmm.plan.host import gpus_here
from lmm.plan.preflight import GIB, preflight

# The command line that runs a run on GPUs through SLURM (the cluster preset the paper setting picks).
GPU_COMMAND = "python -m lmm.train -m hydra/launcher=slurm {overrides}"


class CannotRunHere(RuntimeError):
    """The run cannot start on this machine; the message says why, with the numbers, and what to run instead."""


def _command(overrides: Sequence[str], cluster: str) -> str:
    kept = [o for o in overrides if not o.startswith(("cluster=", "hydra/launcher=", "dry_run="))]
    return GPU_COMMAND.format(overrides=" ".join([*kept, f"cluster={cluster}"]))


def check_here(cfg: DictConfig, overrides: Sequence[str] = (), in_job: bool = False) -> None:
    """Raise CannotRunHere when this machine lacks the GPUs or the memory the run needs.

    `in_job`: the process runs inside a scheduled job (SLURM/submitit), which asked for its resources.
    """
    c = cfg.cluster
    gpu_cluster = c.gpu_type != "cpu"
    if gpu_cluster and not in_job and gpus_here() == 0:
        raise CannotRunHere(
            f"cluster={c.name} describes nodes of {c.gpus_per_node} × {c.gpu_type}, and this machine has no GPU: "
            f"submit the run to that cluster with\n    {_command(overrides, c.name)}\n"
            "or run a tiny model here (model=tiny_s, the CPU setting).")
    if gpu_cluster or cfg.plan.force:
        return
    plan = preflight(cfg)
    if plan.fits is False:
        need = max(s.memory.total for s in plan.stages if not s.reused) / GIB
        raise CannotRunHere(
            f"model={cfg.model.name} on this machine (cluster={c.name}: {c.gpus_per_node} process(es) on the CPU) "
            f"needs about {need * int(c.gpus_per_node):.1f} GB of memory ({need:.1f} GB per process in fp32, at "
            "least), "
            f"and this machine has {plan.gpu_mem_gb * int(c.gpus_per_node):.1f} GB. Run it on GPUs:\n"
            f"    {_command(overrides, 'a100_80g')}\n"
            "(or plan.force=true to try anyway).")
