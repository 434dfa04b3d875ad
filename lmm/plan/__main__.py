"""`python -m lmm.plan`: the Hydra app that prints the pre-flight plan of a run, or of a grid with -m.

Same config and overrides as `python -m lmm.train`. Table mode prints a rich table (and, for a single run,
the per-stage memory breakdown); `plan.format=json` prints one JSON object per run, one per line. With -m,
every job also writes its record to `<sweep dir>/<job>/plan.json` and the GridTotals callback (registered
here through `hydra.callbacks.plan_totals`) prints the grid's totals at the end; Hydra's own launch logging
is turned off so that stdout holds only the plan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import lmm.config  # noqa: F401  (registers the schema and resolvers before Hydra composes)
from lmm.plan.preflight import preflight
from lmm.plan.report import print_run, progress_line, record
from lmm.plan.totals import RECORD_FILE
from lmm.validate import validate

_CALLBACK = "hydra.callbacks.plan_totals"
PLANNER_OVERRIDES = (
    (_CALLBACK, f"++{_CALLBACK}._target_=lmm.plan.totals.GridTotals"),
    ("hydra/hydra_logging", "hydra/hydra_logging=disabled"),
)


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    validate(cfg)
    hc = HydraConfig.get()
    rec = record(preflight(cfg), overrides=list(hc.overrides.task))
    out_dir = Path(hc.runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORD_FILE).write_text(json.dumps(rec, indent=2) + "\n")
    if cfg.plan.format == "json":
        print(json.dumps(rec), flush=True)
    elif hc.mode == RunMode.MULTIRUN:
        print(progress_line(rec, str(hc.job.num)), flush=True)
    else:
        print_run(rec)
    return rec


def with_planner_overrides(argv: list[str]) -> list[str]:
    """argv plus the planner's Hydra settings, unless the command line sets them itself."""
    given = [a.lstrip("+~") for a in argv[1:]]
    extra = [override for key, override in PLANNER_OVERRIDES if not any(a.startswith(key) for a in given)]
    return argv + extra


if __name__ == "__main__":
    sys.argv = with_planner_overrides(sys.argv)
    main()
