"""The paper's cost unit: GPU-hours per node = device hours × GPUs / 8 (imports nothing of ours).

The paper (Table 4 "Time") counts Azure ND A100 v4 nodes of 8 GPUs, priced per node-hour ($13.63 there), and
so do the planner, the run records and the analysis, whatever the cluster's own GPUs per node. A device hour
is a GPU's wall hour; a CPU run's device hours are its CPU time (lmm.training.attempts).
"""

from __future__ import annotations

PAPER_GPUS_PER_NODE = 8
COST_UNIT = "GPU-hours per node = device hours × GPUs / 8 (device hours: wall time on GPUs, CPU time on CPU)"


def gpu_hours_per_node(wall_hours: float, world: int) -> float:
    """Wall hours of `world` GPUs in the paper's unit."""
    return wall_hours * world / PAPER_GPUS_PER_NODE


def usd(gpu_hours_node: float, usd_per_gpu_hour_per_node: float) -> float:
    """Dollars of `gpu_hours_node` at the cluster's price per node-hour (`cluster.usd_per_gpu_hour_per_node`)."""
    return gpu_hours_node * float(usd_per_gpu_hour_per_node)
