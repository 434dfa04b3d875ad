"""`python -m lmm.train`: the Hydra entry point that validates, plans and runs one grid point."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import lmm.config  # noqa: F401  (registers the schema and resolvers before Hydra composes)
from lmm.dryrun import format_plan
from lmm.launch.distributed import setup_distributed_env, threads_from_slurm
from lmm.launch.identity import stage1_dir
from lmm.plan.memory import stage_zero
from lmm.plan.workload import stages_of
from lmm.validate import validate


def stage1_present(cfg: DictConfig) -> bool:
    return (stage1_dir(cfg) / "DONE").exists()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    present = stage1_present(cfg)
    validate(cfg, stage1_exists=present, check_files=not cfg.dry_run)  # dry runs: configs, not data
    if cfg.dry_run:
        print(format_plan(cfg, present), flush=True)
        return
    threads_from_slurm()
    setup_distributed_env(need_process_group=any(stage_zero(cfg, s) > 0 for s in stages_of(cfg)))
    from lmm.pipeline import run_pipeline  # heavy imports (torch, transformers) only for real runs

    run_pipeline(cfg)


if __name__ == "__main__":
    main()
