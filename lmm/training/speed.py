"""The run's GPU speed settings (`speed`, and the compute dtype `trainer.precision` gives) as from_pretrained and
TrainingArguments keyword arguments."""

from __future__ import annotations

import importlib.util

import torch
from omegaconf import DictConfig

ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")


def compute_dtype(cfg: DictConfig) -> torch.dtype:
    """bf16 on GPU (the paper's setting), fp32 on CPU unless asked."""
    precision = cfg.trainer.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def trained_weights_in_fp32(model: torch.nn.Module, zero_stage: int) -> int:
    """Without DeepSpeed, cast the trained weights of a bf16 model to fp32 (and return how many tensors).

    DeepSpeed's bf16 mode keeps an fp32 master copy of the trained weights in its optimizer. Without it,
    AdamW would update the bf16 weights themselves and round away every step smaller than bf16's resolution
    (2^-8 of the weight): at the paper's full fine-tuning lr of 2e-5, nearly all of them. Here the trained
    weights are the fp32 masters, the frozen ones stay bf16, and the Trainer's autocast runs the matmuls in
    bf16 (as the planner's memory model counts it: fp32 weights and gradients + Adam, 20 bytes a parameter).
    """
    if zero_stage != 0:
        return 0
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def attn_implementation(cfg: DictConfig) -> str:
    """`speed.attn_implementation`, with auto = flash_attention_2 where it can run (flash-attn installed, bf16
    on CUDA), else sdpa (PyTorch's fused kernels; the same math as eager, without the s × s matrix)."""
    choice = str(cfg.speed.attn_implementation)
    if choice not in ATTENTION:
        raise ValueError(f"speed.attn_implementation={choice!r}: choose one of {', '.join(ATTENTION)}")
    if choice != "auto":
        return choice
    if (torch.cuda.is_available() and compute_dtype(cfg) == torch.bfloat16
            and importlib.util.find_spec("flash_attn") is not None):
        return "flash_attention_2"
    return "sdpa"


def model_load_kwargs(cfg: DictConfig) -> dict:
    """Keyword arguments of `from_pretrained` that choose the attention kernel."""
    return {"attn_implementation": attn_implementation(cfg)}


def _tf32_capable() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8  # Ampere and newer


def training_speed_arguments(cfg: DictConfig) -> dict:
    """`TrainingArguments` keywords: fused AdamW, TF32, torch.compile, pinned batches.

    TF32 stays unset (None: PyTorch's own default) where the GPU has none or there is no GPU, since
    TrainingArguments refuses tf32=True there.
    """
    s = cfg.speed
    return {
        "optim": "adamw_torch_fused" if s.fused_adamw else "adamw_torch",
        "tf32": bool(s.tf32) if _tf32_capable() else None,
        "torch_compile": bool(s.torch_compile),
        "dataloader_pin_memory": bool(s.pin_memory),
    }
