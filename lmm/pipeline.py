"""One run end to end: stage 1 if needed (shared, never retrained), stage 2, the run record, DONE."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm.dryrun import stages_of
from lmm.launch.identity import run_dir, run_id, stage1_dir, stage1_id
from lmm.records import is_done, mark_done, read_record, write_record
from lmm.training.stage import barrier, is_main_process, train_stage

log = logging.getLogger(__name__)


def _choices(cfg: DictConfig) -> dict:
    return {
        "model": cfg.model.name, "vision": cfg.vision.name, "projector": cfg.projector.name,
        "tuning": cfg.tuning.name, "data": cfg.data.name, "pretrain_data": cfg.pretrain_data.name,
        "stage": cfg.stage.name, "deepspeed": cfg.deepspeed.name, "cluster": cfg.cluster.name,
    }


def _finish(folder: Path, cfg: DictConfig, record: dict) -> None:
    if is_main_process():
        OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
        write_record(folder, record)
        mark_done(folder)  # last: DONE only after every artifact and the record are saved
    barrier()


def run_stage1(cfg: DictConfig) -> Path:
    """Train the shared stage-1 projector unless its run is already done."""
    folder = stage1_dir(cfg)
    if is_done(folder):
        log.info("stage 1 %s is done: reusing its projector", folder.name)
        return folder
    stats = train_stage(cfg, "pretrain", folder)
    _finish(folder, cfg, {"run_id": stage1_id(cfg), "kind": "stage1", "choices": _choices(cfg),
                          "seed": int(cfg.seed), "pretrain": stats, "assembled": stats["assembled"]})
    return folder


def run_pipeline(cfg: DictConfig) -> Path:
    """Run the stages this config asks for; returns the run folder. A finished run is skipped."""
    target = run_dir(cfg)
    if is_done(target):
        log.info("run %s is done: skipped", target.name)
        evaluate_if_asked(cfg, target)
        return target
    started = time.time()
    stage1 = None
    if "pretrain" in stages_of(cfg):
        stage1 = run_stage1(cfg)
        if cfg.stage.name == "pretrain":
            return stage1
    projector = Path(cfg.stage.projector_path) if cfg.stage.projector_path else stage1 or stage1_dir(cfg)
    stats = train_stage(cfg, "finetune", target, projector)
    record = {
        "run_id": run_id(cfg),
        "kind": "stage2",
        "sweep": cfg.sweep,
        "choices": _choices(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": int(cfg.seed),
        "stage1": {"run_id": stage1_id(cfg), "folder": str(projector)},
        "finetune": stats,
        "assembled": stats["assembled"],
        "wall_time_s": round(time.time() - started, 2),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if (projector / "results.json").exists():
        record["stage1"]["wall_time_s"] = read_record(projector).get("pretrain", {}).get("wall_time_s")
    _finish(target, cfg, record)
    evaluate_if_asked(cfg, target)
    return target


def evaluate_if_asked(cfg: DictConfig, target: Path) -> None:
    """Evaluate a trained run on `eval.benchmarks` (benchmarks already scored are skipped)."""
    if cfg.eval.benchmarks and is_main_process():
        from lmm.eval.runner import evaluate_run

        evaluate_run(cfg, target)
