"""Time and money: the achieved-FLOP/s constant (set, or the calibration passed in), wall hours, dollars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from lmm import units
from lmm.plan.flops import epoch_flops
from lmm.plan.params import count_params
from lmm.plan.workload import workload
from lmm.units import PAPER_GPUS_PER_NODE


@dataclass(frozen=True)
class Throughput:
    """The time model's one efficiency constant: achieved FLOP/s per GPU, and where it came from."""

    tflops_per_gpu: float
    source: str


def stage_flops(cfg: DictConfig, stage: str) -> float | None:
    """Total training FLOPs of one stage of the run (None when its data size is unknown)."""
    flops = epoch_flops(cfg, count_params(cfg), workload(cfg, stage))
    return None if flops is None else flops.total


def calibrate(cfg: DictConfig, gpu_hours_per_node: float, stage: str = "finetune") -> float:
    """Achieved TFLOP/s per GPU that makes the time model reproduce one measured run of `cfg`'s stage.

    `gpu_hours_per_node` is the measured cost in the paper's unit (wall hours × GPUs / 8).
    """
    flops = stage_flops(cfg, stage)
    if flops is None:
        raise ValueError(f"cannot calibrate on {stage} of a config without data.num_samples")
    gpu_seconds = gpu_hours_per_node * PAPER_GPUS_PER_NODE * 3600
    return flops / gpu_seconds / 1e12


def throughput(cfg: DictConfig, calibration: Callable[[], Throughput]) -> Throughput:
    """`plan.achieved_tflops_per_gpu` when set, else `calibration()` (the caller's default: the planner passes
    `lmm.plan.table4.paper_calibration`, called only when needed since it composes and sizes a config)."""
    value = cfg.plan.achieved_tflops_per_gpu
    if value is not None:
        return Throughput(float(value), "set by plan.achieved_tflops_per_gpu")
    return calibration()


def wall_hours(flops: float, world: int, tflops_per_gpu: float) -> float:
    return flops / (world * tflops_per_gpu * 1e12) / 3600


def usd(gpu_hours_node: float, cfg: DictConfig) -> float:
    """Dollars at the run's cluster price (`lmm.units.usd`)."""
    return units.usd(gpu_hours_node, cfg.cluster.usd_per_gpu_hour_per_node)
