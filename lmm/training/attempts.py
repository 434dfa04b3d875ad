"""Every attempt at training a stage (first job, requeues, resumes), so wall time and GPU-hours sum over all.

An attempt's device time is wall time × ranks on accelerators; on CPU it is the rank's CPU time × ranks: the
cores' busy time, which does not grow while the run waits for a core that other processes share (the toy
study runs one job per core beside other jobs' start-ups, so its wall times carry their load).

`attempts.json` in the stage's folder holds one entry per attempt, rewritten (atomically, by the main
process) at each log and checkpoint: a job killed without warning still leaves its time up to its last
log. Work redone after a kill is counted too: it was paid for.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from transformers import TrainerCallback

from lmm.atomic import write_json_atomic
from lmm.launch.rundir import read_attempts
from lmm.layout import ATTEMPTS_FILE


def device_seconds(entry: dict) -> float:
    """One attempt's device time: wall × ranks, or on CPU the rank's CPU time × ranks (see the docstring)."""
    busy = entry.get("cpu_time_s") if entry.get("device") == "cpu" else None
    return float((entry.get("wall_time_s") if busy is None else busy) or 0) * int(entry.get("world_size") or 1)


class AttemptLog(TrainerCallback):
    """This attempt's entry in the stage's attempts file, kept current during training."""

    def __init__(self, folder: Path, stage: str, world_size: int, write: bool, started: float | None = None,
                 cpu_started: float | None = None, device: str | None = None):
        self.path = Path(folder) / ATTEMPTS_FILE
        self.write = write
        self.started = started or time.time()
        self.cpu_started = time.process_time() if cpu_started is None else cpu_started
        self.previous = read_attempts(folder)
        self.entry = {
            "attempt": len(self.previous) + 1,
            "stage": stage,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "host": socket.gethostname(),
            "world_size": int(world_size),
            "device": device,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started)),
            "wall_time_s": 0.0,
            "cpu_time_s": 0.0,
            "first_step": None,
            "last_step": None,
            "outcome": "running",
        }

    def update(self, step: int | None = None, outcome: str | None = None) -> None:
        self.entry["wall_time_s"] = round(time.time() - self.started, 2)
        self.entry["cpu_time_s"] = round(time.process_time() - self.cpu_started, 2)
        if step is not None:
            if self.entry["first_step"] is None:
                self.entry["first_step"] = step
            self.entry["last_step"] = step
        if outcome:
            self.entry["outcome"] = outcome
        if self.write:
            write_json_atomic(self.path, [*self.previous, self.entry])

    @property
    def all(self) -> list[dict]:
        return [*self.previous, self.entry]

    def totals(self) -> dict:
        """Wall seconds and device seconds (`gpu_seconds`) over every attempt, and how many there were."""
        entries = self.all
        return {
            "attempts": len(entries),
            "wall_time_s": round(sum(float(e.get("wall_time_s") or 0) for e in entries), 2),
            "gpu_seconds": round(sum(device_seconds(e) for e in entries), 2),
        }

    def on_train_begin(self, args, state, control, **kwargs):
        self.entry["resumed_at_step"] = int(state.global_step)
        self.update()

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.update(int(state.global_step))

    def on_save(self, args, state, control, **kwargs):
        self.update(int(state.global_step))
