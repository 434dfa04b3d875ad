"""Every path inside a run folder, named once (imports nothing of ours).

A stage-1 run folder holds the projector; a stage-2 one the projector and either `model/` (full fine-tuning:
a Hugging Face folder) or `adapter/` (PEFT adapters, with `model/` as an optional merged export), and
`eval/<benchmark>/<beam>/` per evaluation. Both have the run record, the done marker, the attempts log, the
failure marker and lock files while running, and `checkpoints/` while training (removed when it finishes).
"""

from __future__ import annotations

from pathlib import Path

RECORD_FILE = "results.json"  # the run record (lmm.records)
DONE_FILE = "DONE"  # written last: the run finished and its record is complete
FAILED_FILE = "FAILED"  # the last attempt's failure (lmm.launch.rundir)
ATTEMPTS_FILE = "attempts.json"  # one entry per attempt: world size, start and end (lmm.training.attempts)
LOCK_FILE = ".lock"  # held by the job training the run
EVAL_LOCK_FILE = ".eval.lock"  # held while an evaluation merges its scores into the record
PROJECTOR_FILE = "projector.safetensors"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
EVAL_DIR = "eval"
CONFIG_FILE = "config.yaml"  # the resolved config a run saves (python -m lmm.eval +run=PATH reads it)
JOBS_FILE = "jobs.jsonl"  # the SLURM jobs submitted for the run (lmm.launch.jobs)
JOB_LOGS_DIR = "jobs"  # jobs/<job id>/: submitit's scripts, pickles and logs of each job (the launcher)
WANDB_ID_FILE = "wandb_id"  # the W&B id a run was first tracked under, kept when `lmm.sweep migrate` renames it

# The names a finished or running run folder may hold at its top.
ENTRIES = frozenset({RECORD_FILE, DONE_FILE, FAILED_FILE, ATTEMPTS_FILE, LOCK_FILE, EVAL_LOCK_FILE, PROJECTOR_FILE,
                     MODEL_DIR, ADAPTER_DIR, CHECKPOINTS_DIR, EVAL_DIR, CONFIG_FILE, JOBS_FILE,
                     JOB_LOGS_DIR, WANDB_ID_FILE})


def projector_file(folder: Path) -> Path:
    return Path(folder) / PROJECTOR_FILE


def model_dir(folder: Path) -> Path:
    """The Hugging Face folder of a full fine-tuning run, or the merged export of an adapter run."""
    return Path(folder) / MODEL_DIR


def adapter_dir(folder: Path) -> Path:
    return Path(folder) / ADAPTER_DIR


def checkpoints_dir(folder: Path) -> Path:
    return Path(folder) / CHECKPOINTS_DIR


def eval_dir(folder: Path, benchmark: str, beam: str) -> Path:
    """Answers, judge grades and scores of one benchmark at one beam setting (`beam1`, `beam5`)."""
    return Path(folder) / EVAL_DIR / benchmark / beam
