"""Time and money: the achieved-FLOP/s constant (set or calibrated), wall hours, GPU-hours per node, dollars."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from omegaconf import DictConfig

# The paper's cost unit: total GPU-hours divided by 8 GPUs per node (Azure ND A100 v4), priced at
# cluster.usd_per_gpu_hour_per_node ($13.63 per node-hour there). Fixed at 8 whatever the cluster has.
PAPER_GPUS_PER_NODE = 8

# The default calibration: Table 4's "7B full" column, 1.3 GPU-hours per node for one epoch of
# LLaVA-80K at 336 px (full fine-tuning, 4 nodes × 8 A100-80G, ZeRO-3).
PAPER_REFERENCE_OVERRIDES = ("experiment=table4/7b_full",)
PAPER_REFERENCE_GPU_HOURS_PER_NODE = 1.3
PAPER_REFERENCE_STAGE = "finetune"


@dataclass(frozen=True)
class Throughput:
    """The time model's one efficiency constant: achieved FLOP/s per GPU, and where it came from."""

    tflops_per_gpu: float
    source: str


def stage_flops(cfg: DictConfig, stage: str) -> float | None:
    """Total training FLOPs of one stage of the run (None when its data size is unknown)."""
    from lmm.plan.flops import epoch_flops
    from lmm.plan.params import count_params
    from lmm.plan.workload import workload

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


def _compose(overrides: tuple[str, ...]) -> DictConfig:
    """Compose a config from the conf tree, inside a running Hydra app (its global state) or outside it."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose

        return compose(config_name="train", overrides=list(overrides))
    from lmm.config import compose as lmm_compose

    return lmm_compose(list(overrides))


@lru_cache(maxsize=1)
def paper_calibration() -> Throughput:
    """The default constant: calibrated on Table 4's 7B full column (composed from the conf tree)."""
    reference = _compose(PAPER_REFERENCE_OVERRIDES)
    value = calibrate(reference, PAPER_REFERENCE_GPU_HOURS_PER_NODE, PAPER_REFERENCE_STAGE)
    return Throughput(value, f"calibrated on the paper's Table 4, 7B full = {PAPER_REFERENCE_GPU_HOURS_PER_NODE} "
                             f"GPU-hours per node (experiment=table4/7b_full, one epoch of LLaVA-80K)")


def throughput(cfg: DictConfig) -> Throughput:
    """`plan.achieved_tflops_per_gpu` when set, else the paper calibration."""
    value = cfg.plan.achieved_tflops_per_gpu
    if value is not None:
        return Throughput(float(value), "set by plan.achieved_tflops_per_gpu")
    return paper_calibration()


def wall_hours(flops: float, world: int, tflops_per_gpu: float) -> float:
    return flops / (world * tflops_per_gpu * 1e12) / 3600


def gpu_hours_per_node(wall: float, world: int) -> float:
    """The paper's unit: wall hours × GPUs / 8."""
    return wall * world / PAPER_GPUS_PER_NODE


def usd(gpu_hours_node: float, cfg: DictConfig) -> float:
    return gpu_hours_node * float(cfg.cluster.usd_per_gpu_hour_per_node)
