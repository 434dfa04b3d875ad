"""`python -m lmm.sweep`: run a named grid from sweeps/, and show the state of every run of a sweep."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra_plugins.lmm_launcher.launcher import MANIFEST
from lmm.launch.rundir import is_locked, read_failure
from lmm.records import is_done

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"


@dataclass
class RunState:
    run_id: str
    state: str  # done | failed | running | pending | submitted | interrupted
    job_id: str | None
    log: str | None
    detail: str = ""


def _manifest_entries(sweep_dir: Path) -> dict[str, dict]:
    """The latest submission of each run, from the launcher's manifests under the sweep's .hydra/."""
    latest: dict[str, dict] = {}
    for manifest in sorted(sweep_dir.glob(f".hydra/*/{MANIFEST}"), key=lambda p: p.stat().st_mtime):
        for line in manifest.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                latest[entry["run_id"]] = entry
    return latest


def _scheduler_state(entry: dict) -> str | None:
    """SLURM's view of a job (PENDING, RUNNING, REQUEUED, ...) when sacct is available."""
    if not shutil.which("sacct") or not entry.get("job_id", "").isdigit():
        return None
    out = subprocess.run(["sacct", "-j", entry["job_id"], "-X", "-n", "-P", "-o", "State"],
                         capture_output=True, text=True, timeout=30)
    states = [s.strip().split()[0] for s in out.stdout.splitlines() if s.strip()]
    return states[-1] if states else None


def run_states(sweep_dir: Path) -> list[RunState]:
    """Every run of a sweep folder (runs/<sweep>) with its state, job id and log path."""
    entries = _manifest_entries(sweep_dir)
    folders = {p.name: p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    states = []
    for run_id in sorted(set(entries) | set(folders)):
        entry, folder = entries.get(run_id, {}), folders.get(run_id, sweep_dir / run_id)
        log, job = entry.get("stderr"), entry.get("job_id")
        failure = read_failure(folder)
        if is_done(folder):
            states.append(RunState(run_id, "done", job, log))
        elif is_locked(folder):
            states.append(RunState(run_id, "running", job, log))
        elif failure:
            states.append(RunState(run_id, "failed", failure.get("slurm_job_id") or job, log, failure["error"]))
        else:
            scheduler = _scheduler_state(entry) if entry else None
            if scheduler in ("PENDING", "REQUEUED", "CONFIGURING"):
                states.append(RunState(run_id, "pending", job, log, scheduler))
            elif scheduler == "RUNNING":
                states.append(RunState(run_id, "running", job, log))
            elif scheduler in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
                states.append(RunState(run_id, "failed", job, log, scheduler))
            elif entry:
                states.append(RunState(run_id, "submitted" if scheduler is None else "interrupted", job, log,
                                       scheduler or ""))
            else:
                states.append(RunState(run_id, "interrupted", None, None, "no DONE marker; re-run to resume"))
    return states


def print_status(sweep_dir: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    states = run_states(sweep_dir)
    table = Table(title=f"sweep {sweep_dir.name}: {len(states)} run(s)")
    for column in ("run", "state", "job", "log / detail"):
        table.add_column(column, overflow="fold")
    colours = {"done": "green", "failed": "red", "running": "cyan", "pending": "yellow"}
    for s in states:
        table.add_row(s.run_id, f"[{colours.get(s.state, 'white')}]{s.state}[/]", s.job_id or "–",
                      "\n".join(x for x in (s.log, s.detail) if x) or "–")
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
    args = parser.parse_args(argv)
    if args.command == "status":
        if not args.sweep_dir.is_dir():
            raise SystemExit(f"{args.sweep_dir} is not a folder (expected runs/<sweep>)")
        return print_status(args.sweep_dir)
    return run_sweep(args.name, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
