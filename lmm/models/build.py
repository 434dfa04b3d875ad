"""Builds the model of one training stage: loads the assembled LLaVA, the stage-1 projector, trainability."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from lmm.layout import PROJECTOR_FILE
from lmm.models.assemble import assemble
from lmm.models.llava import LmmLlava, projector_module, projector_state_dict
from lmm.models.trainable import apply_trainability, format_parameter_table, parameter_table
from lmm.plan.memory import stage_zero
from lmm.training.speed import compute_dtype, model_load_kwargs, trained_weights_in_fp32
from lmm.tuning import tuning_method

log = logging.getLogger(__name__)
# bitsandbytes matches skip-module names from the start of the module path.
QLORA_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def quantization_config(cfg: DictConfig, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    t = cfg.tuning
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=t.quant_type,
                              bnb_4bit_use_double_quant=bool(t.double_quant), bnb_4bit_compute_dtype=dtype,
                              llm_int8_skip_modules=QLORA_SKIP_MODULES)


@contextmanager
def _whole(module, modifier_rank: int | None):
    """The module's full weights inside the block, gathering (and re-partitioning) ZeRO-3 shards."""
    params = list(module.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
            yield
    else:
        yield


def load_projector(model, path: Path) -> None:
    """Load projector weights (a file, or a folder holding one) into a possibly ZeRO-3 model."""
    path = Path(path)
    file = path / PROJECTOR_FILE if path.is_dir() else path
    module, state = projector_module(model), load_file(str(file))
    with _whole(module, modifier_rank=0):
        module.load_state_dict(state, strict=True)


def save_projector(model, folder: Path, write: bool = True) -> None:
    """Save the projector's weights to `folder`; every rank calls it (ZeRO-3 gathers), `write` ranks save."""
    with _whole(projector_module(model), modifier_rank=None):
        state = {k: v.contiguous() for k, v in projector_state_dict(model).items()}
    if write:
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file(state, str(Path(folder) / PROJECTOR_FILE))


def build_model(cfg: DictConfig, stage: str, stage1_projector: Path | None = None):
    """The model to train in `stage`, with the stage-1 projector loaded for stage 2."""
    from transformers import set_seed

    folder = assemble(cfg)
    dtype = compute_dtype(cfg)
    kwargs = model_load_kwargs(cfg)  # the attention kernel (speed.attn_implementation)
    if stage == "finetune" and tuning_method(cfg.tuning.method).quantized:
        kwargs["quantization_config"] = quantization_config(cfg, dtype)
    # Any weight from_pretrained has to initialise (none is expected) comes from the run's seed too.
    set_seed(int(cfg.seed))
    model = LmmLlava.from_pretrained(folder, dtype=dtype, **kwargs)
    if stage1_projector is not None:
        load_projector(model, stage1_projector)
    model = apply_trainability(model, stage, cfg.tuning, seed=int(cfg.seed))
    if dtype != torch.float32 and trained_weights_in_fp32(model, stage_zero(cfg, stage)):
        log.info("no DeepSpeed: trained weights kept in fp32 (its master copy), the frozen ones in %s", dtype)
    # Both stages: stage 1's LLM is frozen, but the projector's gradient flows back through every block, so
    # its activations are all kept unless recomputed (LLaVA's pretrain script checkpoints too; the planner
    # sizes stage 1 by the same flag).
    if cfg.trainer.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    log.info("parameters (%s, %s):\n%s", stage, cfg.tuning.method if stage == "finetune" else "projector",
             format_parameter_table(parameter_table(model)))
    return model
