"""One run end to end: stage 1 if needed (shared, never retrained), stage 2, the run record, DONE."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm.dryrun import stages_of
from lmm.launch.identity import run_dir, stage0_active, stage0_dir, stage1_dir, sweep_link
from lmm.launch.rundir import clear_failed, mark_failed, run_lock
from lmm.launch.store import link_into_sweep
from lmm.layout import CONFIG_FILE
from lmm.ranks import barrier, is_main_process
from lmm.records import build_run_record, build_stage0_record, build_stage1_record, is_done, mark_done, write_record
from lmm.training.stage import train_stage

log = logging.getLogger(__name__)


def _finish(folder: Path, cfg: DictConfig, record: dict) -> None:
    if is_main_process():
        OmegaConf.save(cfg, folder / CONFIG_FILE, resolve=True)
        write_record(folder, record)
        mark_done(folder)  # last: DONE only after every artifact and the record are saved
    barrier()


def run_stage0(cfg: DictConfig) -> Path | None:
    """Train the LLM from `model.base` (stage 0) unless its run is done; None when the LLM has a checkpoint."""
    if not stage0_active(cfg):
        return None
    def train(folder: Path) -> None:
        _finish(folder, cfg, build_stage0_record(cfg, train_stage(cfg, "stage0", folder)))

    return _train_shared(stage0_dir(cfg), "stage 0", "LLM", train)


def run_stage1(cfg: DictConfig) -> Path:
    """Train the shared stage-1 projector unless its run is already done (its stage-0 LLM first, if missing)."""
    def train(folder: Path) -> None:
        run_stage0(cfg)
        _finish(folder, cfg, build_stage1_record(cfg, train_stage(cfg, "pretrain", folder)))

    return _train_shared(stage1_dir(cfg), "stage 1", "projector", train)


def _train_shared(folder: Path, name: str, product: str, train) -> Path:
    """A stage shared by many runs (stage 0 by every run on its LLM, stage 1 by a grid): the first run trains it
    under the folder's lock, the others wait and then reuse it."""
    if is_done(folder):
        log.info("%s %s is done: reusing its %s", name, folder.name, product)
        return folder
    with run_lock(folder, wait=True):
        if is_done(folder):
            log.info("%s %s was trained meanwhile: reusing its %s", name, folder.name, product)
            return folder
        train(folder)
    return folder


class NotTrained(RuntimeError):
    """`task=eval` on a run that has not finished training."""


def run_pipeline(cfg: DictConfig) -> Path:
    """Run the stages this config asks for, then its evaluation (`task`: all, train or eval); returns the run folder.

    The run lives in the run store and appears in its sweep's view (a link). A finished run is not
    trained again; a running one (its lock held by another job) raises RunLocked; a failure leaves a
    FAILED note in the run folder (removed when a later attempt succeeds).
    """
    if cfg.stage.name == "stage0":
        return run_stage0(cfg)
    if cfg.stage.name == "pretrain":
        return run_stage1(cfg)
    target = run_dir(cfg)
    if os.environ.get("RANK", "0") == "0":
        link_into_sweep(target, sweep_link(cfg))
    if is_done(target) or cfg.task == "eval":
        if not is_done(target):
            raise NotTrained(f"run {target.name} has not finished training (no DONE in {target}): "
                             "train it first (task=all or task=train)")
        log.info("run %s is done: not trained again", target.name)
        evaluate_if_asked(cfg, target)
        return target
    with run_lock(target, wait=False):
        try:
            _train_run(cfg, target)
        except Exception as error:
            if is_main_process():
                mark_failed(target, error)
            raise
        if is_main_process():
            clear_failed(target)
    evaluate_if_asked(cfg, target)
    return target


def _train_run(cfg: DictConfig, target: Path) -> None:
    started = time.time()
    if cfg.stage.projector_path:  # no stage 1 to train it first; stage 2 reads the LLM (a no-op once done)
        run_stage0(cfg)
    stage1 = run_stage1(cfg) if "pretrain" in stages_of(cfg) else None
    projector = Path(cfg.stage.projector_path) if cfg.stage.projector_path else stage1 or stage1_dir(cfg)
    stats = train_stage(cfg, "finetune", target, projector)
    record = build_run_record(cfg, None, stats, projector, started)
    _finish(target, cfg, record)


def evaluate_if_asked(cfg: DictConfig, target: Path) -> None:
    """Evaluate a trained run on `eval.benchmarks` (benchmarks already scored are skipped) unless task=train."""
    if cfg.eval.benchmarks and cfg.task != "train" and is_main_process():
        from lmm.eval.runner import evaluate_run
        from lmm.tracking import log_eval_scores

        evaluate_run(cfg, target)
        log_eval_scores(target)  # into the run's W&B run when it was trained with logger=wandb
