"""`TrainingArguments` for one stage, derived from the run config."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import TrainingArguments

from lmm.launch.resources import accumulation_steps, world_size
from lmm.plan.memory import stage_zero
from lmm.training.deepspeed_config import deepspeed_config
from lmm.training.speed import compute_dtype, training_speed_arguments


def stage_optim(cfg: DictConfig, stage: str) -> DictConfig:
    """lr, batch sizes and epochs of a stage: the `stage0` or `pretrain` block, or the tuning method."""
    if stage == "stage0":
        return cfg.stage0
    return cfg.pretrain if stage == "pretrain" else cfg.tuning


def stage_data(cfg: DictConfig, stage: str) -> DictConfig:
    """The data section a stage trains on."""
    if stage == "stage0":
        return cfg.stage0.data
    return cfg.pretrain_data if stage == "pretrain" else cfg.data


def _schedule(cfg: DictConfig, stage: str) -> DictConfig:
    """Warm-up, decay and weight decay: stage 0 has its own (FastChat's), stages 1-2 share `trainer`'s."""
    return cfg.stage0 if stage == "stage0" else cfg.trainer


def training_arguments(cfg: DictConfig, stage: str, output_dir: Path, run_name: str) -> TrainingArguments:
    opt = stage_optim(cfg, stage)
    world = world_size(cfg, stage)
    bf16 = compute_dtype(cfg) == torch.bfloat16
    data = stage_data(cfg, stage)
    schedule = _schedule(cfg, stage)
    return TrainingArguments(
        output_dir=str(output_dir),
        run_name=run_name,
        per_device_train_batch_size=int(opt.micro_batch_size),
        gradient_accumulation_steps=accumulation_steps(opt.global_batch_size, opt.micro_batch_size, world),
        learning_rate=float(opt.lr),
        num_train_epochs=float(opt.epochs),
        max_steps=int(cfg.trainer.max_steps),
        warmup_steps=float(schedule.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=schedule.lr_scheduler,
        weight_decay=float(schedule.weight_decay),
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=int(cfg.trainer.logging_steps),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=int(cfg.trainer.save_steps),
        save_total_limit=None if cfg.trainer.save_total_limit is None else int(cfg.trainer.save_total_limit),
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        dataloader_num_workers=int(data.num_workers),
        remove_unused_columns=False,  # pixel_values and friends are not in the model's signature
        report_to=["wandb"] if cfg.logger.name == "wandb" else [],
        deepspeed=deepspeed_config(cfg.deepspeed, bf16, stage_zero(cfg, stage)),
        disable_tqdm=True,
        # Text-only (mixed-in) batches leave the projector unused in that step.
        ddp_find_unused_parameters=bool(data.sharegpt_ratio > 0),
        **training_speed_arguments(cfg),  # fused AdamW, TF32, torch.compile, pinned memory (`speed`)
    )
