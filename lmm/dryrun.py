"""The one-screen plan of a run that `dry_run=true` prints instead of training."""

from __future__ import annotations

from omegaconf import DictConfig

from lmm.launch.identity import run_dir, run_id, stage0_dir, stage1_dir, stage1_id, sweep_link
from lmm.launch.resources import accumulation_steps, world_size
from lmm.plan.memory import stage_zero
from lmm.plan.preflight import preflight
from lmm.plan.report import summary_line
from lmm.plan.workload import stages_of as planned_stages
from lmm.tuning import tuning_method

PRETRAIN_TRAINS = "projector (CLIP and LLM frozen)"
STAGE0_TRAINS = "the whole LLM from model.base, text only (no tower, no projector)"


def stages_of(cfg: DictConfig) -> list[str]:
    return {"stage0": ["stage0"], "pretrain": ["pretrain"], "finetune": ["finetune"],
            "both": ["pretrain", "finetune"]}[cfg.stage.name]


def _stage_lines(cfg: DictConfig, stage: str) -> list[str]:
    opt = {"stage0": cfg.stage0, "pretrain": cfg.pretrain}.get(stage, cfg.tuning)
    world = world_size(cfg, stage)
    nodes = world // cfg.cluster.gpus_per_node
    accum = accumulation_steps(opt.global_batch_size, opt.micro_batch_size, world)
    method = tuning_method(cfg.tuning.method)
    what = {"stage0": STAGE0_TRAINS, "pretrain": PRETRAIN_TRAINS}.get(stage) or method.trains
    data = {"stage0": cfg.stage0.data, "pretrain": cfg.pretrain_data}.get(stage, cfg.data)
    zero = stage_zero(cfg, stage)
    lines = [
        f"  [{stage}] trainable: {what}; DeepSpeed {'ZeRO-' + str(zero) if zero else 'off'}",
        f"    data {data.name}, lr {opt.lr:g}, epochs {opt.epochs:g}, max length {data.max_length}",
        f"    world {world} = {nodes} node(s) × {cfg.cluster.gpus_per_node} {cfg.cluster.gpu_type}; "
        f"micro {opt.micro_batch_size} × accumulation {accum} × world {world} = global {opt.global_batch_size}",
    ]
    if stage == "stage0":
        s = opt
        lines.append(f"    base {cfg.model.base} → {stage0_dir(cfg)}/model; {s.lr_scheduler} schedule, warm-up "
                     f"{s.warmup_ratio:g}, weight decay {s.weight_decay:g}, template {cfg.model.template}, "
                     "loss on assistant turns only")
    if stage == "finetune" and method.adapter:
        t = cfg.tuning
        lines.append(f"    {method.label} rank {t.rank}, alpha {t.alpha:g}, dropout {t.dropout:g}" +
                     (f", base {t.bits}-bit {t.quant_type}" if method.quantized else ""))
    return lines


def format_plan(cfg: DictConfig, stage1_present: bool, stage1_state: str | None = None, plan=None) -> str:
    """The plan: run id, stages, trainable parts, world size, batches, ZeRO stage, folders, and the planner's line.

    `stage1_state` replaces the stage-1 projector's state (e.g. "its own stage-1 job"); `plan` is the planner's
    result when the caller has it already (it is computed otherwise).
    """
    zero = cfg.deepspeed.stage
    lines = [
        f"run {run_id(cfg)}",
        f"  model {cfg.model.name} + vision {cfg.vision.name} ({cfg.vision.image_size}px) + projector "
        f"{cfg.projector.type}; seed {cfg.seed}; DeepSpeed {'ZeRO-' + str(zero) if zero else 'off'}",
        f"  setting {cfg.setting}: cluster {cfg.cluster.name} ({cfg.cluster.gpus_per_node} × {cfg.cluster.gpu_type} "
        f"per node), stage-1 data {cfg.pretrain_data.name}, stage-2 data {cfg.data.name}",
    ]
    plan = plan or preflight(cfg, stage1_present=stage1_present)
    for stage in planned_stages(cfg):  # stage 0 first where this job trains it
        if stage == "stage0" and plan.stage("stage0").reused:
            lines.append(f"  [stage0] LLM from {stage0_dir(cfg)}/model (done, or its own stage-0 job first)")
            continue
        lines += _stage_lines(cfg, stage)
    if cfg.stage.name not in ("pretrain", "stage0"):
        if cfg.stage.projector_path:
            source = f"stage.projector_path {cfg.stage.projector_path}"
        else:
            state = stage1_state or ("present, reused" if stage1_present else (
                "missing, trained first" if cfg.stage.name == "both" else "MISSING"))
            source = f"{stage1_id(cfg)} ({state})"
        lines.append(f"  stage-1 projector: {source}")
        lines.append(f"  stage-1 folder: {stage1_dir(cfg)}")
    lines.append(f"  output: {run_dir(cfg)}")
    if cfg.stage.name not in ("pretrain", "stage0"):
        lines.append(f"  listed in sweep {cfg.sweep}: {sweep_link(cfg)}")
    lines.append(f"  {summary_line(plan)}")
    if cfg.eval.benchmarks and cfg.task != "train" and cfg.stage.name not in ("pretrain", "stage0"):
        lines.append(f"  eval: {', '.join(cfg.eval.benchmarks)} (beams {cfg.eval.num_beams})")
    return "\n".join(lines)
