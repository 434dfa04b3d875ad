"""Trains one stage in a run folder: resumes from its latest checkpoint, saves its artifacts, returns stats."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, CLIPImageProcessor

from lmm.layout import adapter_dir, checkpoints_dir, model_dir
from lmm.models.assemble import assemble, num_image_tokens
from lmm.models.build import build_model, save_projector
from lmm.models.checkpoint import export_merged
from lmm.models.trainable import parameter_table
from lmm.ranks import barrier, is_main_process
from lmm.tracking import finish_tracking, start_tracking
from lmm.training import preemption
from lmm.training.arguments import training_arguments
from lmm.training.attempts import AttemptLog
from lmm.training.checkpoints import ManifestCallback, latest_checkpoint
from lmm.training.data import build_training_data
from lmm.training.trainer import LmmTrainer, peak_memory_gb
from lmm.tuning import tuning_method

log = logging.getLogger(__name__)


def _save_artifacts(cfg: DictConfig, stage: str, trainer: LmmTrainer, out_dir: Path, assembled: Path,
                    tokenizer=None) -> None:
    """stage 0: the LLM's Hugging Face folder. stage 1: the projector. stage 2: a Hugging Face folder (full) or
    adapters (+ merged export)."""
    if stage == "stage0":
        from lmm.training.stage0 import save_stage0

        save_stage0(trainer, tokenizer, out_dir, write=is_main_process())
        barrier()
        return
    save_projector(trainer.model, out_dir, write=is_main_process())
    if stage == "pretrain":
        return
    if not tuning_method(cfg.tuning.method).adapter:
        trainer.save_model(str(model_dir(out_dir)))
        if is_main_process():
            AutoTokenizer.from_pretrained(assembled).save_pretrained(model_dir(out_dir))
            CLIPImageProcessor.from_pretrained(assembled).save_pretrained(model_dir(out_dir))
    else:
        trainer.save_model(str(adapter_dir(out_dir)))
        barrier()
        if cfg.tuning.merge_on_save and is_main_process():
            export_merged(cfg, out_dir)
    barrier()


def _loss_history(trainer: LmmTrainer) -> list[dict]:
    return [{"step": e["step"], "loss": e["loss"], "lr": e.get("learning_rate")}
            for e in trainer.state.log_history if "loss" in e]


def mean_loss(losses: list[dict]) -> float | None:
    """Mean training loss over every optimizer step of every segment (each logged loss is the mean since
    the previous log, so it weighs by the steps it covers); the Trainer's own counts only the last segment."""
    total, steps, previous = 0.0, 0, 0
    for entry in losses:
        span = int(entry["step"]) - previous
        total, steps, previous = total + float(entry["loss"]) * span, steps + span, int(entry["step"])
    return total / steps if steps else None


def train_stage(cfg: DictConfig, stage: str, out_dir: Path, stage1_projector: Path | None = None) -> dict:
    """Train `stage` ("stage0", "pretrain" or "finetune") into `out_dir`; returns the stage's statistics."""
    started, cpu_started = time.time(), time.process_time()
    if stage == "stage0":  # the base LLM alone, text only (lmm.training.stage0)
        from lmm.training.stage0 import base_source, build_stage0

        model, tokenizer = build_stage0(cfg)
        assembled, processor, image_tokens = base_source(cfg), None, 1
    else:
        assembled = assemble(cfg)
        tokenizer = AutoTokenizer.from_pretrained(assembled)
        processor = CLIPImageProcessor.from_pretrained(assembled)
        model = build_model(cfg, stage, stage1_projector)
        image_tokens = num_image_tokens(cfg.vision)
    data = build_training_data(cfg, stage, tokenizer, processor, image_tokens)
    ckpt_dir = checkpoints_dir(out_dir)
    args = training_arguments(cfg, stage, ckpt_dir, run_name=out_dir.name)
    trainer = LmmTrainer(
        model=model, args=args, train_dataset=data.dataset, data_collator=data.collator,
        train_sampler_factory=data.sampler_factory,
        projector_lr=cfg.trainer.projector_lr if stage == "finetune" else None,
    )
    resume = latest_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming %s from %s", stage, resume)
        trainer.restore_counters(resume)
    world = max(trainer.args.world_size, 1)
    trainer.add_callback(ManifestCallback())  # signs each checkpoint: resume trusts only this run's
    attempts = AttemptLog(out_dir, stage, world, write=is_main_process(), started=started, cpu_started=cpu_started,
                          device=trainer.args.device.type)
    trainer.add_callback(attempts)
    preempt = preemption.PreemptionCallback() if preemption.install() else None
    if preempt:
        trainer.add_callback(preempt)
    tracking = start_tracking(cfg, out_dir, stage, trainer)  # W&B run: ours (id, group, config), before train
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if preempt and preempt.stopped_at is not None:
        attempts.update(preempt.stopped_at, outcome="preempted")
        preemption.requeue(preempt.stopped_at)  # the checkpoint is saved: requeue; nothing below runs
    _save_artifacts(cfg, stage, trainer, out_dir, assembled, tokenizer)
    attempts.update(int(trainer.state.global_step), outcome="finished")
    table = parameter_table(trainer.model)
    losses = _loss_history(trainer)
    stats = {
        "stage": stage,
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0),
        "tokens": int(trainer.tokens_seen * world),  # this rank's count × ranks (batches are balanced)
        "padding_fraction": round(1 - trainer.tokens_seen / trainer.padded_tokens_seen, 4)
        if trainer.padded_tokens_seen else None,
        **attempts.totals(),  # wall_time_s, gpu_seconds and attempts over every attempt
        "train_runtime_s": round(float(result.metrics.get("train_runtime", 0.0)), 2),
        "world_size": world,
        "params_trainable": sum(c["trainable"] for c in table.values()),
        "params_total": sum(c["trainable"] + c["frozen"] for c in table.values()),
        "params_by_component": table,
        "peak_memory_gb": round(peak_memory_gb(), 3),
        "final_loss": losses[-1]["loss"] if losses else None,
        "mean_train_loss": mean_loss(losses),
        "losses": losses,
        "resumed_from": resume.name if resume else None,
        "data": data.stats,
        "assembled": str(assembled),
    }
    finish_tracking(tracking, stats)
    barrier()
    if is_main_process():
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: its artifacts replace the checkpoints
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return stats
