"""The pre-flight planner: parameters, memory per GPU (fits/OOM), time, GPU-hours per node and $ of a run.

Public API:
- `preflight(cfg) -> PlanResult`: the plan of every stage `stage.name` runs.
- `check_fits(cfg)`: the gate before submission; raises `PredictedOOM` (naming the run, the predicted and the
  available memory, and the fixes that would fit) unless the run fits or `plan.force=true`.
- `calibrate(cfg, gpu_hours_per_node, stage)`: the achieved TFLOP/s per GPU that reproduces a measured run.
- `python -m lmm.plan [-m] <overrides>`: the CLI (see `lmm/plan/__main__.py`).
"""

from lmm.plan.cost import Throughput, calibrate, paper_calibration, throughput
from lmm.plan.preflight import PlanResult, PredictedOOM, StagePlan, check_fits, preflight

__all__ = ["PlanResult", "PredictedOOM", "StagePlan", "Throughput", "calibrate", "check_fits",
           "paper_calibration", "preflight", "throughput"]
