"""Stage 0's model: the base LLM as a plain causal LM (no vision tower), fully trained, saved as an HF folder."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, set_seed

from lmm.data.tokenizer import load_tokenizer
from lmm.layout import model_dir
from lmm.models.trainable import format_parameter_table, parameter_table
from lmm.plan.memory import stage_zero
from lmm.training.speed import compute_dtype, model_load_kwargs, trained_weights_in_fp32

log = logging.getLogger(__name__)


def base_source(cfg: DictConfig) -> str:
    """The base LLM stage 0 starts from: `model.base`, a hub id or a local folder."""
    return str(cfg.model.base)


def build_stage0(cfg: DictConfig):
    """(model, tokenizer) for stage 0: the base LLM, every parameter trainable, and the run's tokenizer.

    The tokenizer is the one stages 1-2 use (the `<image>` token and the pad token added), so the tuned LLM is
    saved with the embedding rows they expect; the new rows start at the mean embedding (transformers' default).
    """
    source = base_source(cfg)
    tokenizer = load_tokenizer(cfg.model.tokenizer or source, cache_dir=cfg.paths.cache_dir)
    set_seed(int(cfg.seed))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=compute_dtype(cfg), **model_load_kwargs(cfg))
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64 if cfg.setting == "paper" else None)
    model.config.pad_token_id = tokenizer.pad_token_id
    for param in model.parameters():
        param.requires_grad_(True)  # full fine-tuning, as FastChat trains Vicuna
    trained_weights_in_fp32(model, stage_zero(cfg, "stage0"))
    if cfg.stage0.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    log.info("parameters (stage0, full):\n%s", format_parameter_table(parameter_table(model)))
    return model, tokenizer


def save_stage0(trainer, tokenizer, out_dir: Path, write: bool) -> Path:
    """The tuned LLM as a Hugging Face folder (safetensors + tokenizer) at out_dir/model; every rank calls it
    (ZeRO-3 gathers the weights), `write` ranks save the tokenizer."""
    folder = model_dir(out_dir)
    trainer.save_model(str(folder))
    if write:
        tokenizer.save_pretrained(folder)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return folder
