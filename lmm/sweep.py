"""`python -m lmm.sweep`: run a named grid from sweeps/, and show the state of every run of a sweep."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lmm.launch.jobs import latest_job, queue_states, slurm_job_ids
from lmm.launch.rundir import is_locked, read_attempts
from lmm.launch.store import migrate
from lmm.layout import (
    ATTEMPTS_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    DONE_FILE,
    FAILED_FILE,
    JOBS_FILE,
    LOCK_FILE,
    RECORD_FILE,
)

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"
# A folder is a run when it holds one of these (a sweep view may also hold plots/ and the like).
RUN_MARKERS = (RECORD_FILE, DONE_FILE, FAILED_FILE, LOCK_FILE, CONFIG_FILE, JOBS_FILE, CHECKPOINTS_DIR, ATTEMPTS_FILE)


@dataclass
class RunState:
    run_id: str
    state: str  # done | failed | running | pending | submitted | interrupted | corrupt
    job_id: str | None
    log: str | None
    detail: str = ""
    attempts: int = 0


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    """(content, None) or (None, what is wrong with the file)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{path.name} is corrupt ({type(error).__name__}: {error})"
    return (content, None) if isinstance(content, dict) else (None, f"{path.name} is corrupt (not a JSON object)")


def _run_folders(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any((p / m).exists() for m in RUN_MARKERS))


def run_states(sweep_dir: Path) -> list[RunState]:
    """Every run of a sweep view (runs/<sweep>) with its state, its job, log and requeue count."""
    folders = _run_folders(sweep_dir)
    jobs = {f: latest_job(f, "train") or latest_job(f) for f in folders}
    queue = queue_states(slurm_job_ids(jobs.values()))
    states = []
    for folder in folders:
        job = jobs[folder] or {}
        job_id, log = job.get("job_id"), job.get("stderr")
        attempts = len(read_attempts(folder))
        state = RunState(folder.name, "", job_id, log, attempts=attempts)
        if (folder / RECORD_FILE).exists() and (folder / DONE_FILE).exists():
            record, problem = _read_json(folder / RECORD_FILE)
            state.state, state.detail = ("corrupt", f"{folder / RECORD_FILE}: {problem}") if problem else ("done", "")
            if record and record.get("slurm_job_id"):
                state.job_id = record["slurm_job_id"]
        elif is_locked(folder):
            state.state = "running"
        elif (folder / FAILED_FILE).exists():
            failure, problem = _read_json(folder / FAILED_FILE)
            if problem:
                state.state, state.detail = "corrupt", f"{folder / FAILED_FILE}: {problem}"
            else:
                state.state, state.detail = "failed", str(failure.get("error", ""))
                state.job_id = failure.get("slurm_job_id") or job_id
                state.log = failure.get("log") or log
        else:
            scheduler = queue.get(str(job_id)) if job_id else None
            if scheduler is None:
                state.state = "submitted" if job else "interrupted"
                state.detail = "" if job else "no DONE marker; re-run to resume"
            elif scheduler.state == "RUNNING":
                state.state = "running"
            elif scheduler.active:
                reason = f" ({scheduler.reason})" if scheduler.reason else ""
                state.state, state.detail = "pending", scheduler.state + reason
            elif scheduler.state == "COMPLETED":
                state.state, state.detail = "interrupted", "job ended without DONE; re-run to resume"
            else:
                state.state, state.detail = "failed", scheduler.state
            if scheduler is not None and scheduler.restarts:
                state.attempts = max(state.attempts, scheduler.restarts + 1)
        states.append(state)
    return states


def print_status(sweep_dir: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    states = run_states(sweep_dir)
    table = Table(title=f"sweep {sweep_dir.name}: {len(states)} run(s)")
    for column in ("run", "state", "job", "attempts", "log / detail"):
        table.add_column(column, overflow="fold")
    colours = {"done": "green", "failed": "red", "corrupt": "red", "running": "cyan", "pending": "yellow"}
    for s in states:
        table.add_row(s.run_id, f"[{colours.get(s.state, 'white')}]{s.state}[/]", s.job_id or "–",
                      str(s.attempts or "–"), "\n".join(x for x in (s.log, s.detail) if x) or "–")
    Console(width=200).print(table)
    counts = {state: sum(s.state == state for s in states) for state in sorted({s.state for s in states})}
    print(", ".join(f"{n} {state}" for state, n in counts.items()))
    return 0


def run_sweep(name: str, overrides: list[str]) -> int:
    """`python -m lmm.train -m` over the named grid of sweeps/ (extra overrides are added)."""
    if not (SWEEPS_DIR / f"{name}.yaml").exists():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise SystemExit(f"unknown sweep {name!r}; known: {', '.join(known)}")
    cmd = [sys.executable, "-m", "lmm.train", "-m", "--config-dir", str(SWEEPS_DIR), "--config-name", name,
           *overrides]
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmm.sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="state of every run of a sweep folder (runs/<sweep>)")
    status.add_argument("sweep_dir", type=Path)
    run = commands.add_parser("run", help="launch a named grid from sweeps/ (then Hydra overrides)")
    run.add_argument("name")
    run.add_argument("overrides", nargs="*")
    move = commands.add_parser("migrate", help="move runs/<sweep>/<id> folders of the older layout into the run "
                                               "store (runs/stage2/) and link them back, and rename stored runs "
                                               "to their current id; nothing is retrained")
    move.add_argument("runs_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        if not args.runs_dir.is_dir():
            raise SystemExit(f"{args.runs_dir} is not a folder (expected the runs folder, e.g. runs)")
        print(migrate(args.runs_dir).summary())
        return 0
    if args.command == "status":
        if not args.sweep_dir.is_dir():
            raise SystemExit(f"{args.sweep_dir} is not a folder (expected runs/<sweep>)")
        return print_status(args.sweep_dir)
    return run_sweep(args.name, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
