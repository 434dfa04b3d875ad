"""The pre-flight check: a run's plan (parameters, memory, time, cost) and the fits-or-fail gate before submission."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from lmm.launch.identity import run_id, stage0_dir, stage0_id, stage1_dir, stage1_id, stage2_id
from lmm.plan.cost import Throughput, throughput, usd, wall_hours
from lmm.plan.flops import SampleFlops, epoch_flops
from lmm.plan.memory import GIB, MemoryEstimate, estimate_memory, memory_budget_gb, stage_zero
from lmm.plan.params import ParamCounts, count_params, trainable_params
from lmm.plan.table4 import paper_calibration
from lmm.plan.workload import StageWorkload, stages_of, workload
from lmm.tuning import TuningMethod, tuning_method
from lmm.units import gpu_hours_per_node


@dataclass(frozen=True)
class StagePlan:
    """The plan of one stage: what it trains, its memory per GPU, its FLOPs, time and cost."""

    stage: str
    run_id: str
    workload: StageWorkload
    params_trainable: int
    memory: MemoryEstimate
    flops: SampleFlops | None  # all epochs; None when the data size is unknown
    wall_hours: float | None
    gpu_hours_per_node: float | None
    usd: float | None
    reused: bool = False  # stage 1 already trained (DONE on disk): planned but not run, costs nothing

    @property
    def fits(self) -> bool | None:
        return self.memory.fits


@dataclass(frozen=True)
class PlanResult:
    """The plan of one run (one grid point): its stages and their totals."""

    run_id: str
    cfg_summary: str
    params: ParamCounts
    stages: tuple[StagePlan, ...]
    throughput: Throughput
    gpu_mem_gb: float
    gpu_type: str

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.stage == name)

    @property
    def params_total(self) -> int:
        return self.params.total

    @property
    def params_trainable(self) -> int:
        """Trainable parameters of the run's last stage (stage 2 unless stage=pretrain)."""
        return self.stages[-1].params_trainable

    @property
    def mem_per_gpu_gb(self) -> float:
        """The highest peak of the stages that run, in GiB."""
        return max(s.memory.total for s in self.stages if not s.reused) / GIB

    @property
    def fits(self) -> bool | None:
        verdicts = [s.fits for s in self.stages if not s.reused]
        if any(v is False for v in verdicts):
            return False
        return None if any(v is None for v in verdicts) else True

    @property
    def verdict(self) -> str:
        return {True: "fits", False: "OOM", None: "unknown"}[self.fits]

    def _sum(self, key: str) -> float | None:
        values = [getattr(s, key) for s in self.stages if not s.reused]
        return None if any(v is None for v in values) else float(sum(values))

    @property
    def wall_hours(self) -> float | None:
        return self._sum("wall_hours")

    @property
    def gpu_hours_per_node(self) -> float | None:
        return self._sum("gpu_hours_per_node")

    @property
    def usd(self) -> float | None:
        return self._sum("usd")


def plan_stage(cfg: DictConfig, stage: str, counts: ParamCounts, thr: Throughput, reused: bool = False) -> StagePlan:
    w = workload(cfg, stage, stage_zero(cfg, stage))
    flops = epoch_flops(cfg, counts, w)
    wall = None if flops is None else wall_hours(flops.total, w.world, thr.tflops_per_gpu)
    gpu_h = None if wall is None else gpu_hours_per_node(wall, w.world)
    return StagePlan(
        stage=stage,
        run_id={"stage0": stage0_id, "pretrain": stage1_id}.get(stage, stage2_id)(cfg),
        workload=w,
        params_trainable=trainable_params(counts, stage, w.method),
        memory=estimate_memory(cfg, counts, w),
        flops=flops,
        wall_hours=wall,
        gpu_hours_per_node=gpu_h,
        usd=None if gpu_h is None else usd(gpu_h, cfg),
        reused=reused,
    )


def _summary(cfg: DictConfig) -> str:
    t = cfg.tuning
    method = tuning_method(t.method).table_label(t.rank)
    zero = int(cfg.deepspeed.stage)
    return (f"{cfg.model.name} {method} {cfg.vision.image_size}px {cfg.data.name}, "
            f"{'ZeRO-' + str(zero) if zero else 'no ZeRO'}, {cfg.stage.name}")


def preflight(cfg: DictConfig, stage1_present: bool | None = None, stage0_present: bool | None = None,
              calibration: Callable[[], Throughput] = paper_calibration) -> PlanResult:
    """Plan every stage `stage.name` runs: parameters, memory per GPU and verdict, time and cost.

    With stage=both, a stage-1 run already on disk (`stage1_present`, looked up when None) is reused and
    costs nothing, as `lmm.train` would do; so is a stage-0 LLM on disk (`stage0_present`, looked up when None;
    the launcher passes True for a job that waits for its own stage-0 job), or any stage 0 once stage 1 is there.
    `calibration` gives the achieved TFLOP/s per GPU when `plan.achieved_tflops_per_gpu` is unset (default:
    Table 4's 7B full column).
    """
    counts = count_params(cfg)
    thr = throughput(cfg, calibration)
    if stage1_present is None:
        stage1_present = (stage1_dir(cfg) / "DONE").exists()
    names = stages_of(cfg)
    if stage0_present is None:
        stage0_present = "stage0" in names and (stage0_dir(cfg) / "DONE").exists()

    def reused(s: str) -> bool:
        if s == "stage0":
            return cfg.stage.name != "stage0" and (stage0_present or stage1_present)
        return s == "pretrain" and cfg.stage.name == "both" and stage1_present

    stages = tuple(plan_stage(cfg, s, counts, thr, reused=reused(s)) for s in names)
    return PlanResult(run_id=run_id(cfg), cfg_summary=_summary(cfg), params=counts, stages=stages,
                      throughput=thr, gpu_mem_gb=round(memory_budget_gb(cfg), 1),
                      gpu_type=str(cfg.cluster.gpu_type))


class PredictedOOM(RuntimeError):
    """A run predicted to exceed its GPUs' memory; the message names the run, the numbers and the fixes."""


def _variant(cfg: DictConfig, changes: dict) -> DictConfig:
    out = copy.deepcopy(cfg)
    for key, value in changes.items():
        OmegaConf.update(out, key, value, merge=False)
    return out


def _fallback(method: TuningMethod, to: TuningMethod, zero: int) -> tuple[str, dict]:
    """The switch to the method's lighter fallback: from full, the paper's rank 64; to a 4-bit base, ZeRO-2."""
    text, changes = f"tuning={to.name}", {"tuning.method": to.name, "tuning.bits": to.base_bits}
    if to.adapter and not method.adapter:
        changes.update({"tuning.rank": 64, "tuning.alpha": 128})
    if to.quantized and zero == 3:
        text, changes = f"{text} deepspeed=zero2", {**changes, "deepspeed.stage": 2}
    return text, changes


def fixes(cfg: DictConfig, stage: str) -> list[tuple[str, float, bool | None]]:
    """Candidate fixes for a stage that does not fit: (overrides, predicted GiB per GPU, fits), best first."""
    t, zero = cfg.tuning, stage_zero(cfg, stage)
    own_nodes = stage == "pretrain" and cfg.stage.name == "pretrain"
    nodes_key = "pretrain.nodes" if own_nodes else "tuning.nodes"
    micro_key = "pretrain.micro_batch_size" if stage == "pretrain" else "tuning.micro_batch_size"
    opt = cfg.pretrain if stage == "pretrain" else t
    method = tuning_method(t.method) if stage == "finetune" else None
    candidates: list[tuple[str, dict]] = []
    if zero != 3 and not (method is not None and method.quantized):
        candidates.append(("deepspeed=zero3", {"deepspeed.stage": 3}))
    if method is not None and method.fallback:
        candidates.append(_fallback(method, tuning_method(method.fallback), zero))
    nodes = int(cfg.pretrain.nodes if own_nodes else t.nodes)
    for k in (2, 4):
        candidates.append((f"{nodes_key}={nodes * k}", {nodes_key: nodes * k}))
    if not cfg.trainer.gradient_checkpointing:
        candidates.append(("trainer.gradient_checkpointing=true", {"trainer.gradient_checkpointing": True}))
    micro = int(opt.micro_batch_size)
    while micro > 1:
        micro //= 2
        candidates.append((f"{micro_key}={micro}", {micro_key: micro}))
    out = []
    for text, changes in candidates:
        variant = _variant(cfg, changes)
        mem = estimate_memory(variant, count_params(variant), workload(variant, stage, stage_zero(variant, stage)))
        out.append((text, mem.total / GIB, mem.fits))
    return sorted(out, key=lambda x: (x[2] is not True, x[1]))


def oom_message(cfg: DictConfig, result: PlanResult) -> str:
    """The error text for a run that does not fit: run, stage, memory breakdown, GPU memory, fixes."""
    lines = []
    for s in result.stages:
        if s.reused or s.fits is not False:
            continue
        m = s.memory
        zero = s.workload.zero_stage
        lines.append(
            f"run {s.run_id} [{s.stage}] is predicted to run out of GPU memory: {m.total / GIB:.1f} GB per GPU "
            f"> {result.gpu_mem_gb:g} GB ({result.gpu_type}, "
            f"{'cluster.gpu_mem_gb' if cfg.cluster.gpu_mem_gb else 'this machine: RAM / processes per node'}).")
        lines.append(
            f"  per GPU: weights {m.gib('weights'):.1f}, gradients {m.gib('gradients'):.1f}, optimizer "
            f"{m.gib('optimizer'):.1f}, activations {m.gib('activations'):.1f}, buffers {m.gib('buffers'):.1f} GB "
            f"({s.workload.method}, {'ZeRO-' + str(zero) if zero else 'no ZeRO'} over {s.workload.world} GPUs, "
            f"micro-batch {s.workload.micro_batch} × {s.workload.seq_peak} tokens, gradient checkpointing "
            f"{'on' if s.workload.gradient_checkpointing else 'off'})")
        if zero != 3 and m.weights > m.gpu_mem / 2:
            lines.append("  (only ZeRO-3 partitions the weights: under ZeRO-2 every GPU holds all of them)")
        lines.append("  fixes, with the memory they predict per GPU:")
        for text, gib, fits in fixes(cfg, s.stage)[:6]:
            lines.append(f"    {text:<40} {gib:7.1f} GB  {'fits' if fits else 'OOM'}")
    lines.append("  or submit anyway with plan.force=true.")
    return "\n".join(lines)


def check_fits(cfg: DictConfig, result: PlanResult | None = None) -> PlanResult:
    """Raise PredictedOOM unless every stage the run executes fits its GPUs' memory (or `plan.force=true`).

    For the launcher, before submitting a job: call with the job's composed config; returns the plan when
    the run fits (or when the GPU memory is unknown: cluster.gpu_mem_gb = 0, or when forced).
    """
    result = result or preflight(cfg)
    if result.fits is False and not cfg.plan.force:
        raise PredictedOOM(oom_message(cfg, result))
    return result
