"""The time model against the paper's Table 4: its reported values (read from the reference CSV, the only
copy), the default calibration on its 7B full column, and predicted vs reported GPU-hours per node.

`python -m lmm.plan.table4 [COLUMN]` prints the comparison (calibrated on the 7B full column by default).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from functools import lru_cache

from hydra import compose as hydra_compose
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lmm import PAPER_TABLES_CSV
from lmm.config import compose
from lmm.launch.resources import world_size
from lmm.plan.cost import Throughput, calibrate, stage_flops, wall_hours
from lmm.units import gpu_hours_per_node

# The default calibration: Table 4's "7B full" column, one epoch of LLaVA-80K at 336 px (full fine-tuning,
# 4 nodes × 8 A100-80G, ZeRO-3), stage 2 only as Table 4 counts it.
PAPER_REFERENCE = "7b_full"
PAPER_REFERENCE_STAGE = "finetune"


@lru_cache(maxsize=1)
def table4_reported() -> dict[str, tuple[float, float]]:
    """Table 4 by experiment file (conf/experiment/table4/<name>.yaml): (GPU-hours per node, trainable params B)."""
    values: dict[str, dict[str, float]] = {}
    with open(PAPER_TABLES_CSV, newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        for row in rows:
            if row["table"] == "4" and row["system"] == "LLaVA" and row["experiment"].startswith("table4/"):
                values.setdefault(row["experiment"].removeprefix("table4/"), {})[row["metric"]] = float(row["value"])
    return {name: (v["gpu_hours_per_node"], v["params_trainable_b"]) for name, v in values.items()}


def _compose(overrides: list[str]) -> DictConfig:
    """A config from the conf tree, inside a running Hydra app (its global state) or outside it."""
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="train", overrides=overrides)
    return compose(overrides)


@lru_cache(maxsize=1)
def paper_calibration() -> Throughput:
    """The planner's default constant: the achieved TFLOP/s per GPU that reproduces Table 4's 7B full column."""
    hours = table4_reported()[PAPER_REFERENCE][0]
    value = calibrate(_compose([f"experiment=table4/{PAPER_REFERENCE}"]), hours, PAPER_REFERENCE_STAGE)
    return Throughput(value, f"calibrated on the paper's Table 4, 7B full = {hours:g} GPU-hours per node "
                             f"(experiment=table4/{PAPER_REFERENCE}, one epoch of LLaVA-80K)")


@dataclass(frozen=True)
class Row:
    column: str
    predicted: float
    reported: float

    @property
    def error(self) -> float:
        return self.predicted / self.reported - 1


def compare(calibrate_on: str = PAPER_REFERENCE) -> tuple[float, list[Row]]:
    """Calibrate the achieved TFLOP/s per GPU on one column, predict all nine (stage 2 only, as Table 4)."""
    reported = table4_reported()
    cfgs = {name: compose([f"experiment=table4/{name}"]) for name in reported}
    tflops = calibrate(cfgs[calibrate_on], reported[calibrate_on][0], "finetune")
    rows = []
    for name, cfg in cfgs.items():
        world = world_size(cfg, "finetune")
        predicted = gpu_hours_per_node(wall_hours(stage_flops(cfg, "finetune"), world, tflops), world)
        rows.append(Row(name, predicted, reported[name][0]))
    return tflops, rows


def format_comparison(tflops: float, rows: list[Row], calibrate_on: str = PAPER_REFERENCE) -> str:
    lines = [f"Table 4, GPU-hours per node (calibrated on {calibrate_on}: {tflops:.1f} TFLOP/s per GPU)",
             f"{'column':<12} {'predicted':>9} {'reported':>9} {'error':>7}"]
    lines += [f"{r.column:<12} {r.predicted:9.2f} {r.reported:9.2f} {r.error:+7.1%}" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    column = sys.argv[1] if len(sys.argv) > 1 else PAPER_REFERENCE
    print(format_comparison(*compare(column), calibrate_on=column))
