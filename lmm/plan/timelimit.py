"""Whether a SLURM job ends within its time limit and the requeues its launcher allows it, as predicted."""

from __future__ import annotations

import math

# The field that sets each kind of job's nodes (lmm.launch.resources.world_size).
NODES_FIELD = {"stage0": "stage0.nodes", "stage1": "pretrain.nodes", "train": "tuning.nodes"}


def allocations(wall_hours: float, time_min: int) -> int:
    """The allocations of `time_min` minutes a job of `wall_hours` takes: each time-out requeues it, and it
    resumes from its last checkpoint."""
    return max(1, math.ceil(wall_hours * 60 / time_min))


def time_note(wall_hours: float | None, nodes: int, time_min: int, max_requeues: int) -> str | None:
    """The dry run's line for a job predicted to outlast its time limit; None when one allocation is enough
    (or its time is unknown)."""
    if wall_hours is None or allocations(wall_hours, time_min) == 1:
        return None
    n = allocations(wall_hours, time_min)
    return (f"time: {wall_hours:.1f} h predicted on {nodes} node(s), over the {time_min}-min limit: {n} allocations "
            f"({n - 1} requeue(s) of the {max_requeues} allowed, each resuming from its last checkpoint)")


def time_problem(kind: str, run_id: str, wall_hours: float | None, nodes: int, time_min: int,
                 max_requeues: int) -> str | None:
    """Why a job would be abandoned unfinished, all its GPU-hours lost: it needs more requeues than allowed.
    None when it ends within them (or its time is unknown)."""
    if wall_hours is None or allocations(wall_hours, time_min) - 1 <= max_requeues:
        return None
    n = allocations(wall_hours, time_min)
    allowed = max_requeues + 1
    return (f"[{kind}] {run_id} is predicted to take {wall_hours:.1f} h on {nodes} node(s): {n} allocations of "
            f"{time_min} min, but hydra.launcher.max_num_timeout={max_requeues} allows {allowed}, and it would be "
            f"abandoned unfinished. Fixes: more nodes ({NODES_FIELD[kind]}="
            f"{math.ceil(nodes * wall_hours * 60 / (time_min * allowed))}), "
            f"cluster.timeout_min={math.ceil(wall_hours * 60 / allowed)}, hydra.launcher.max_num_timeout={n - 1}, "
            "or plan.force=true.")
