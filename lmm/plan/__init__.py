"""The pre-flight planner: parameters, memory per GPU (fits/OOM), time, GPU-hours per node and $ of a run.

Modules (imported by their own names: this package file imports nothing, so that `lmm.config`, whose
gradient-checkpointing default asks `lmm.plan.checkpointing`, does not load the planner's top, which
composes configs for its calibration):
- `preflight.preflight(cfg) -> PlanResult`: the plan of every stage `stage.name` runs; `preflight.check_fits(cfg)`
  the gate before submission (raises `PredictedOOM` naming the run, the memory and the fixes that would fit).
- `params`, `workload`, `memory`, `flops`: parameter counts, per-stage inputs, memory per GPU, FLOPs.
- `cost`: time and money from an achieved TFLOP/s per GPU (`calibrate(cfg, gpu_hours_per_node, stage)`).
- `table4`: the paper's Table 4 (from the reference CSV), the default calibration on its 7B full column
  (`paper_calibration()`), and `python -m lmm.plan.table4` (predicted vs reported).
- `python -m lmm.plan [-m] <overrides>`: the CLI (see `lmm/plan/__main__.py`).
"""
