"""Run-folder state beside the record: the lock that stops a run from running twice, and failure notes."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from lmm.atomic import write_json_atomic
from lmm.layout import ATTEMPTS_FILE, FAILED_FILE, LOCK_FILE


class RunLocked(RuntimeError):
    """Another process holds the run's lock: the run is already running."""


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _process_group():
    """torch.distributed with its process group started when several ranks must agree on a lock (the Trainer
    reuses it); None for one process, which then never loads torch here (the analysis reads run folders too)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def is_locked(folder: Path) -> bool:
    """True when a live process holds the run's lock (a dead holder's lock is released by the OS)."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextmanager
def run_lock(folder: Path, wait: bool):
    """Hold the run folder's lock on rank 0 while every rank works inside the block.

    wait=False raises RunLocked (on every rank) when another job holds it; wait=True blocks until
    it is free (stage 1, which concurrent stage-2 runs share: the second one then finds it done).
    """
    folder = Path(folder)
    dist = _process_group()
    handle, error = None, None
    if _rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the whole block
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            handle.seek(0), handle.truncate(), handle.write(json.dumps(_holder())), handle.flush()
        except BlockingIOError:
            handle.seek(0)
            error = f"run {folder.name} is already running ({handle.read().strip() or 'holder unknown'})"
            handle.close()
            handle = None
    if dist is not None:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise RunLocked(error)
    try:
        yield
    finally:
        if dist is not None:
            dist.barrier()
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def read_attempts(folder: Path) -> list[dict]:
    """The stage's attempts so far (an unreadable file restarts the count: it is only ever written whole)."""
    path = Path(folder) / ATTEMPTS_FILE
    try:
        entries = json.loads(path.read_text()) if path.exists() else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return entries if isinstance(entries, list) else []


def job_log() -> str | None:
    """The log (stderr) of the submitit job this process runs in, where its traceback lands."""
    if not os.environ.get("SUBMITIT_EXECUTOR") or not os.environ.get("SUBMITIT_FOLDER"):
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:  # noqa: BLE001 - a note without its log path beats no note
        return None


def mark_failed(folder: Path, error: BaseException) -> None:
    """Leave the error beside the run so a status table can show it (cleared when the run succeeds)."""
    write_json_atomic(Path(folder) / FAILED_FILE, {
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error))[-8000:],
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "log": job_log(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })


def read_failure(folder: Path) -> dict | None:
    path = Path(folder) / FAILED_FILE
    return json.loads(path.read_text()) if path.exists() else None


def clear_failed(folder: Path) -> None:
    (Path(folder) / FAILED_FILE).unlink(missing_ok=True)
