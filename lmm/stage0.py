"""Stage 0's rule: when a run trains its LLM from `model.base` first (its checks: lmm.validate)."""

from __future__ import annotations

from omegaconf import DictConfig

from lmm.launch.identity import stage0_active

# Stage names (`stage.name`) whose job trains a missing stage 0 before anything else.
RUNS_STAGE0_FIRST = ("both", "pretrain")


def stage0_in_job(cfg: DictConfig) -> bool:
    """Whether this job may train stage 0: `stage=stage0`, or stage 1 (alone or before stage 2) on a stage-0 LLM."""
    return cfg.stage.name == "stage0" or (cfg.stage.name in RUNS_STAGE0_FIRST and stage0_active(cfg))
