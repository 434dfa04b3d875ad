"""The one place that decides what trains per stage and tuning method, and reports it as a table."""

from __future__ import annotations

import logging
from collections import defaultdict

from omegaconf import DictConfig
from torch import nn

from lmm.models.llava import base_llava, projector_module
from lmm.tuning import tuning_method

log = logging.getLogger(__name__)
COMPONENTS = ("vision_tower", "multi_modal_projector", "language_model", "lm_head", "lora")


def lora_config(tuning: DictConfig):
    """PEFT's adapter config of the run's tuning method (LoRA, or DoRA with its magnitudes)."""
    return tuning_method(tuning.method).peft_config(tuning)


def apply_trainability(model: nn.Module, stage: str, tuning: DictConfig, seed: int | None = None) -> nn.Module:
    """Freeze and unfreeze (or wrap with LoRA) for a stage; returns the model to train.

    stage 1: projector only. stage 2 full: projector + LLM (embeddings and head included).
    Adapter methods (LoRA, QLoRA, DoRA): adapters on the LLM + projector, initialised from `seed`.
    CLIP is always frozen.
    """
    model.requires_grad_(False)
    method = tuning_method(tuning.method)
    if stage == "finetune" and method.adapter:
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import set_seed

        if method.quantized:
            # Keeps norms in fp32 and enables input grads so checkpointed 4-bit blocks backpropagate.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if seed is not None:
            # LoRA's A matrices are drawn from the global RNG: without this, two identical runs (or ranks)
            # start from different adapters whenever anything drew random numbers before.
            set_seed(int(seed))
        model = get_peft_model(model, lora_config(tuning))
    elif stage == "finetune":
        llava = base_llava(model)
        llava.model.language_model.requires_grad_(True)
        llava.lm_head.requires_grad_(True)
    projector_module(model).requires_grad_(True)
    return model


def component_of(name: str) -> str:
    if "lora_" in name:
        return "lora"
    for component in COMPONENTS:
        if component in name:
            return component
    return "other"


def parameter_table(model: nn.Module) -> dict[str, dict[str, int]]:
    """Trainable and frozen parameter counts per component (4-bit weights counted as parameters)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: {"trainable": 0, "frozen": 0})
    for name, param in model.named_parameters():
        count = param.numel() * (2 if param.__class__.__name__ == "Params4bit" else 1)
        table[component_of(name)]["trainable" if param.requires_grad else "frozen"] += count
    return dict(table)


def format_parameter_table(table: dict[str, dict[str, int]]) -> str:
    lines = [f"{'component':<24}{'trainable':>14}{'frozen':>16}"]
    for component, counts in table.items():
        lines.append(f"{component:<24}{counts['trainable']:>14,}{counts['frozen']:>16,}")
    total_t = sum(c["trainable"] for c in table.values())
    total_f = sum(c["frozen"] for c in table.values())
    lines.append(f"{'total':<24}{total_t:>14,}{total_f:>16,}")
    return "\n".join(lines)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}
