"""Gradient checkpointing's automatic default: on only when the planner predicts stage 2 would not fit without it."""

from __future__ import annotations

import copy
import logging

from omegaconf import DictConfig, OmegaConf, open_dict

from lmm.plan.memory import estimate_memory, stage_zero
from lmm.plan.params import count_params
from lmm.plan.workload import workload

log = logging.getLogger(__name__)


def checkpointing_needed(root: DictConfig) -> bool:
    """What `trainer.gradient_checkpointing`'s default (`${lmm.checkpointing:}`) resolves to.

    Recomputing every block's forward costs about a third more compute, so it is worth it only where the
    activations would not fit otherwise. The decision is stage 2's, under the planner's conservative peak
    (micro-batches of the longest samples); stage 1 follows the same flag, and the planner sizes it so (a
    stage 1 that does not fit is raised to ZeRO-3, or refused with the fix, before submission). Unknown
    memory (no `cluster.gpu_mem_gb`) or a config the planner cannot size counts as "does not fit": on.
    """
    try:
        plain = copy.deepcopy(root)
        OmegaConf.set_readonly(plain, False)
        with open_dict(plain):
            plain.trainer.gradient_checkpointing = False  # the copy no longer refers back to this resolver
        w = workload(plain, "finetune", zero_stage=stage_zero(plain, "finetune"))
        fits = estimate_memory(plain, count_params(plain), w).fits
    except Exception as error:  # noqa: BLE001 -- a partial config (tests, tools): the safe choice
        log.debug("gradient checkpointing on: the planner could not size the run (%s)", error)
        return True
    return fits is not True
