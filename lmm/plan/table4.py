"""The time model against the paper's Table 4: predicted vs reported GPU-hours per node, from one calibration.

`python -m lmm.plan.table4` prints the comparison (calibrated on the 7B full column by default).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from lmm.plan.cost import calibrate, gpu_hours_per_node, stage_flops, wall_hours
from lmm.validate import world_size

# Table 4 (one epoch of LLaVA-80K at 336 px): GPU-hours per node and trainable parameters (B), by the
# experiment file of each column (conf/experiment/table4/<name>.yaml).
TABLE4_REPORTED = {
    "7b_full": (1.3, 7.0),
    "13b_lora64": (2.1, 0.26),
    "13b_full": (2.3, 13.0),
    "33b_lora8": (4.62, 0.06),
    "33b_qlora64": (4.68, 0.49),
    "33b_lora64": (4.79, 0.49),
    "33b_full": (5.80, 33.0),
    "65b_lora64": (9.17, 0.81),
    "65b_full": (13.50, 65.0),
}


@dataclass(frozen=True)
class Row:
    column: str
    predicted: float
    reported: float

    @property
    def error(self) -> float:
        return self.predicted / self.reported - 1


def compare(calibrate_on: str = "7b_full") -> tuple[float, list[Row]]:
    """Calibrate the achieved TFLOP/s per GPU on one column, predict all nine (stage 2 only, as Table 4)."""
    from lmm.config import compose

    cfgs = {name: compose([f"experiment=table4/{name}"]) for name in TABLE4_REPORTED}
    tflops = calibrate(cfgs[calibrate_on], TABLE4_REPORTED[calibrate_on][0], "finetune")
    rows = []
    for name, cfg in cfgs.items():
        world = world_size(cfg, "finetune")
        predicted = gpu_hours_per_node(wall_hours(stage_flops(cfg, "finetune"), world, tflops), world)
        rows.append(Row(name, predicted, TABLE4_REPORTED[name][0]))
    return tflops, rows


def format_comparison(tflops: float, rows: list[Row], calibrate_on: str = "7b_full") -> str:
    lines = [f"Table 4, GPU-hours per node (calibrated on {calibrate_on}: {tflops:.1f} TFLOP/s per GPU)",
             f"{'column':<12} {'predicted':>9} {'reported':>9} {'error':>7}"]
    lines += [f"{r.column:<12} {r.predicted:9.2f} {r.reported:9.2f} {r.error:+7.1%}" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    column = sys.argv[1] if len(sys.argv) > 1 else "7b_full"
    print(format_comparison(*compare(column), calibrate_on=column))
