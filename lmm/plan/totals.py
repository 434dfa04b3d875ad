"""Grid totals of a `python -m lmm.plan -m` sweep: a Hydra callback that collects the jobs' plans and sums them.

`GridTotals.on_job_end` keeps each job's record (the app's return value: the planner's local launcher
runs the jobs in this process); `on_multirun_end` prints the grid's table with a totals row, or, with
plan.format=json, prints the totals to stderr so that stdout stays one JSON object per run, and writes
them to `<sweep dir>/plan_totals.json` either way. A stage-1 run shared by several grid points is counted
once, as training would run it once. Jobs also write `<their output dir>/plan.json`; when no record came
back in-process (a launcher running jobs elsewhere), the totals are read from those files under the sweep
folder instead (which holds them all unless `sweep` itself differs between jobs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lmm.plan.report import console, constant_line, runs_table

RECORD_FILE = "plan.json"
TOTALS_FILE = "plan_totals.json"


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(sum(values))


def grid_totals(records: Iterable[dict]) -> dict:
    """Totals over runs: verdict counts, and GPU-hours per node and $ with each stage run counted once."""
    records = list(records)
    stage_runs: dict[str, dict] = {}
    for r in records:
        for s in r["stages"]:
            if not s["reused"]:
                stage_runs.setdefault(s["run_id"], s)
    verdicts = [r["fits"] for r in records]
    return {
        "runs": len(records),
        "stage_runs": len(stage_runs),
        "fits": sum(v is True for v in verdicts),
        "oom": sum(v is False for v in verdicts),
        "unknown": sum(v is None for v in verdicts),
        "oom_runs": [r["run_id"] for r in records if r["fits"] is False],
        "gpu_hours_per_node": _sum([s["gpu_hours_per_node"] for s in stage_runs.values()]),
        "usd": _sum([s["usd"] for s in stage_runs.values()]),
        "max_mem_per_gpu_gb": max((r["mem_per_gpu_gb"] for r in records), default=None),
    }


def load_records(sweep_dir: Path) -> list[dict]:
    """The plan.json of every job under the sweep folder, in job order."""
    files = sorted(Path(sweep_dir).glob(f"**/{RECORD_FILE}"),
                   key=lambda p: (not p.parent.name.isdigit(), int(p.parent.name) if p.parent.name.isdigit() else 0,
                                  p.parent.name))
    return [json.loads(f.read_text()) for f in files]


class GridTotals(Callback):
    """Registered by `python -m lmm.plan` as hydra.callbacks.plan_totals; prints the grid's totals."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            self.records.append(job_return.return_value)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = self.records or load_records(sweep_dir)
        if not records:
            return
        totals = grid_totals(records)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / TOTALS_FILE).write_text(json.dumps(totals, indent=2) + "\n")
        if config.plan.format == "json":
            print(json.dumps({"grid_totals": totals}), file=sys.stderr, flush=True)
            return
        out = console()
        out.print(runs_table(records, totals, title=f"pre-flight plan of the grid ({sweep_dir})"))
        out.print(constant_line(records[0]), highlight=False)
        if totals["oom"]:
            out.print(f"{totals['oom']} run(s) predicted OOM: python -m lmm.plan <their overrides> shows the "
                      "breakdown; lmm.plan.preflight.check_fits lists the fixes.", highlight=False)
