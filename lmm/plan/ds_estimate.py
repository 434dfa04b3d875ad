"""DeepSpeed's own ZeRO-2/3 model-state memory estimators, called with parameter counts (nothing is built)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache


def _quiet_import(module: str):
    """Import a DeepSpeed module without the 'Setting accelerator to CPU' line it logs to stdout on CPU hosts."""
    import importlib

    log = logging.getLogger("DeepSpeed")

    def only_errors(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    log.addFilter(only_errors)
    try:
        return importlib.import_module(module)
    finally:
        log.removeFilter(only_errors)


@cache
def _estimator(stage: int) -> Callable:
    if stage == 2:
        return _quiet_import("deepspeed.runtime.zero.stage_1_and_2").estimate_zero2_model_states_mem_needs
    return _quiet_import("deepspeed.runtime.zero.stage3").estimate_zero3_model_states_mem_needs


def zero_model_states_bytes(stage: int, trained_params: int, largest_layer_params: int, gpus_per_node: int,
                            nodes: int) -> int | None:
    """Per-GPU bytes DeepSpeed estimates for the params, gradients and Adam states of `trained_params`.

    bf16 mixed precision, no offload: ZeRO-2 = 2P + 18P/world (bf16 weights stay whole on every GPU;
    bf16 + fp32 gradients, fp32 master weights and Adam m, v are partitioned); ZeRO-3 = 18P/world +
    4 × the largest layer (gathered whole for its forward/backward). None for stage 0 (no ZeRO).
    """
    if stage == 2:
        _, gpu = _estimator(2)(total_params=trained_params, num_gpus_per_node=gpus_per_node, num_nodes=nodes,
                               cpu_offload=False)
        return int(gpu)
    if stage == 3:
        _, gpu, _ = _estimator(3)(total_params=trained_params, largest_layer_params=largest_layer_params,
                                  num_gpus_per_node=gpus_per_node, num_nodes=nodes, cpu_offload=False,
                                  cpu_offload_params=False)
        return int(gpu)
    return None
