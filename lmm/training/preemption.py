"""Time-limit and pre-emption signals: save a checkpoint at the next optimizer step, then requeue the job.

submitit's own handler checkpoints the callable and requeues at once, from inside the signal handler:
everything since the last `trainer.save_steps` checkpoint would be lost. Inside a submitit job,
`install()` replaces it with one that only raises a flag; `PreemptionCallback` sees the flag at the
next step boundary (all ranks agree through one all-reduce), makes the Trainer save and stop, and
`requeue()` then hands over to submitit's handler, which requeues the job (rank 0) while the other ranks
wait to be stopped. At most the step in progress is redone.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback

log = logging.getLogger(__name__)
SIGNAL = signal.SIGUSR2  # submitit's sbatch asks SLURM for `--signal=USR2@90` before the time limit
# How long ranks other than 0 wait for the requeue to stop them before giving up.
OTHER_RANKS_WAIT_S = 600

_state = {"requested": False, "previous": None}


def _on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _state["requested"] = True
    log.warning("received %s: saving a checkpoint at the next step, then requeueing", signal.Signals(signum).name)


def install() -> bool:
    """Inside a submitit job, defer its requeue signal to the next step boundary; False elsewhere."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    current = signal.getsignal(SIGNAL)
    if current is not _on_signal:
        _state["previous"] = current
        signal.signal(SIGNAL, _on_signal)
    return True


def requested() -> bool:
    """Whether any rank has been signalled (the same answer on every rank)."""
    flag = torch.tensor([1.0 if _state["requested"] else 0.0])
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


class PreemptionCallback(TrainerCallback):
    """Save and stop at the first step boundary after the signal."""

    def __init__(self) -> None:
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if requested():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
            log.warning("pre-emption: checkpoint at step %d, then requeue", state.global_step)
        return control


class Preempted(RuntimeError):
    """Training stopped for a requeue after saving its checkpoint (nothing else is to be saved)."""


def requeue(step: int) -> None:
    """After the checkpoint of `step` is on disk: requeue through submitit (rank 0), or wait to be stopped."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    previous = _state["previous"]
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        if callable(previous):
            previous(SIGNAL, None)  # submitit: checkpoint the callable, `scontrol requeue`, exit
        raise Preempted(f"stopped at step {step} for a requeue; its checkpoint is saved")
    time.sleep(OTHER_RANKS_WAIT_S)  # rank 0's requeue ends this process
    raise Preempted(f"stopped at step {step}; the requeue did not end this rank within {OTHER_RANKS_WAIT_S} s")
