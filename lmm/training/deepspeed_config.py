"""The DeepSpeed config dict generated from the `deepspeed/` group ("auto" values filled by the Trainer)."""

from __future__ import annotations

from omegaconf import DictConfig


def deepspeed_config(ds: DictConfig, bf16: bool, zero_stage: int) -> dict | None:
    """ZeRO-2 or ZeRO-3 config for `TrainingArguments(deepspeed=...)`; None when DeepSpeed is off.

    `zero_stage` is the training stage's own (`lmm.plan.memory.stage_zero`): stage 1 may differ from `ds.stage`.
    """
    if zero_stage == 0:
        return None
    zero: dict = {
        "stage": zero_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if zero_stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # Saving a Hugging Face folder needs the full weights gathered on rank 0.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
        if ds.offload_param:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
