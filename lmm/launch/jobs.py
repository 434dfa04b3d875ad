"""The jobs of a run, recorded in its folder (`jobs.jsonl`), and what SLURM says of them (squeue, then sacct).

Each submission appends one line: kind (stage1 | train | eval), job id, resources, dependencies and the
paths of its logs. The launcher reads it to skip runs whose job is still queued or running; `lmm.sweep
status` reads it to show a run's job, its state, pending reason and log.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lmm.layout import JOBS_FILE

# SLURM states of a job that will still run (or is running): a re-submit must not duplicate it.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                           "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD"})
QUERY_TIMEOUT_S = 30


@dataclass(frozen=True)
class QueueState:
    """SLURM's view of one job."""

    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    reason: str = ""  # why a pending job waits: Resources, Priority, Dependency, PartitionConfig, ...
    restarts: int = 0  # requeues so far

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def record_job(folder: Path, entry: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / JOBS_FILE, "a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def read_jobs(folder: Path) -> list[dict]:
    """The run's job entries, oldest first (unreadable lines are skipped: a line is written whole or not)."""
    path = Path(folder) / JOBS_FILE
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("job_id"):
            entries.append(entry)
    return entries


def latest_job(folder: Path, kind: str | None = None) -> dict | None:
    jobs = [j for j in read_jobs(folder) if kind is None or j.get("kind") == kind]
    return jobs[-1] if jobs else None


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout if out.returncode == 0 else ""


def state_name(text: str) -> str:
    """A SLURM state as sacct or submitit gives it, without the detail some carry: "CANCELLED by 0" → CANCELLED
    (UNKNOWN for an empty one)."""
    return (str(text).split() or ["UNKNOWN"])[0].upper()


def slurm_job_ids(jobs) -> list[str]:
    """Ids of the jobs (jobs.jsonl entries, None for none) that went to SLURM: a local executor's job id is a
    process id, which SLURM does not know or, worse, knows as another job (and a SLURM query without a
    controller retries for about 10 s). Entries from before `executor` was recorded count as SLURM's."""
    return [str(j["job_id"]) for j in jobs if j and j.get("executor", "slurm") == "slurm"]


def queue_states(job_ids: list[str]) -> dict[str, QueueState]:
    """SLURM's state of each job id (numeric ids only; the local executor's are not SLURM's).

    squeue knows queued and running jobs (with the pending reason and restart count); sacct the
    finished ones. Ids neither knows are left out.
    """
    ids = sorted({str(j) for j in job_ids if str(j).isdigit()})
    if not ids or not shutil.which("squeue"):
        return {}
    states: dict[str, QueueState] = {}
    for line in _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"]).splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        if job.strip() in ids:
            states[job.strip()] = QueueState(state.strip(), "" if reason.strip() == "None" else reason.strip())
    missing = [j for j in ids if j not in states]
    if missing and shutil.which("sacct"):
        for line in _run(["sacct", "-X", "-n", "-P", "-j", ",".join(missing), "-o", "JobID,State"]).splitlines():
            job, _, state = line.partition("|")
            if job in missing and state:
                states[job] = QueueState(state_name(state))
    restarts = _restarts([j for j, s in states.items() if s.active])
    return {j: QueueState(s.state, s.reason, restarts.get(j, 0)) for j, s in states.items()}


def _restarts(job_ids: list[str]) -> dict[str, int]:
    """Requeue counts of queued or running jobs (scontrol's Restarts=)."""
    out = {}
    for job in job_ids:
        for token in _run(["scontrol", "-o", "show", "job", job]).split():
            if token.startswith("Restarts="):
                out[job] = int(token.split("=", 1)[1] or 0)
    return out
