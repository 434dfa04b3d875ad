"""`python -m lmm.train`: the Hydra entry point that validates, plans and runs one grid point."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import lmm.config  # noqa: F401  (registers the schema and resolvers before Hydra composes)
from lmm.dryrun import format_plan
from lmm.launch.distributed import setup_distributed_env, threads_from_slurm
from lmm.launch.identity import stage1_dir
from lmm.plan.here import CannotRunHere, check_here
from lmm.plan.memory import stage_zero
from lmm.plan.workload import stages_of
from lmm.validate import ConfigError, validate, validate_files


def stage1_present(cfg: DictConfig) -> bool:
    return (stage1_dir(cfg) / "DONE").exists()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    present = stage1_present(cfg)
    validate(cfg, stage1_exists=present)
    if cfg.dry_run:  # configs only: a dry run reads no data
        print(format_plan(cfg, present), flush=True)
        return
    refuse_unless_ready(cfg, present)
    threads_from_slurm()
    setup_distributed_env(need_process_group=any(stage_zero(cfg, s) > 0 for s in stages_of(cfg)))
    from lmm.pipeline import run_pipeline  # heavy imports (torch, transformers) only for real runs

    run_pipeline(cfg)


def refuse_unless_ready(cfg: DictConfig, stage1_exists: bool) -> None:
    """Before anything is built or fetched: this machine can hold the run (GPUs, RAM), its files are there and
    its pretrained weights are on disk or fetchable. Otherwise one message and exit code 2, no traceback."""
    from lmm.models.weights import MissingWeights, check_weights

    try:
        check_here(cfg, HydraConfig.get().overrides.task, in_job=bool(os.environ.get("SLURM_JOB_ID")))
        validate_files(cfg, stage1_exists=stage1_exists)  # `main` has validated the config itself
        check_weights(cfg)
    except (CannotRunHere, ConfigError, MissingWeights) as error:
        print(f"lmm.train: not started: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
