"""The run record (`results.json`) and the `DONE` marker: its schema, built, read and written only here.

A stage-2 record (`kind: "stage2"`, in runs/<sweep>/<run_id>) holds:

- identity: `run_id`, `kind`, `sweep`, `seed`, `started_at`, `finished_at`, `slurm_job_id`;
- `choices`: the Hydra group choices (model, vision, projector, tuning, data, pretrain_data, stage,
  deepspeed, cluster, logger, eval) and `config`: the whole resolved config;
- `hparams`: the resolved hyper-parameters the analysis groups by (`nominal_params_b`, `image_size`,
  `method`, `rank`, `alpha`, `lr`, batch sizes, `epochs`, `nodes`, `mixing_ratio`, `deepspeed_stage`, and
  stage 1's `pretrain_*`);
- `resources`: `gpu_type`, `gpus_per_node`, `nodes`, `world_size`, `usd_per_gpu_hour_per_node`;
- `stages`: `{"pretrain": summary | None, "finetune": summary}`, each summary with `run_id`, `steps`,
  `tokens`, `epochs`, `wall_time_s`, `train_runtime_s`, `world_size`, `gpus`, `nodes`, `gpu_hours`,
  `gpu_hours_per_node`, `usd`, `params_trainable`, `params_total`, `peak_memory_gb`, `final_loss`;
- `cost`: `gpu_hours_per_node` and `usd`, each `{"pretrain", "finetune", "total"}` (the paper's unit:
  device hours × GPUs / 8, priced at `cluster.usd_per_gpu_hour_per_node`, $13.63 by default). `total`
  counts the run's stage 1 in full even when other runs share it; the analysis counts a shared stage 1
  once per sweep;
- `finetune`: the stage's raw statistics from `train_stage` (loss curve in `finetune.losses`),
  `stage1`: `{run_id, folder, wall_time_s}`, `assembled`: the base model folder; `stage0`: `{run_id, folder}` of
  the stage-0 run that made the LLM (only when it did: model.path null, model.base set);
- `eval`: `{benchmark: {"beam<k>": {"overall", "categories", "judge_model", "runs", "std", ...}}}`, empty
  until evaluation merges its scores (`set_eval_score`, or `update_record(folder, eval=...)`).

A stage-0 record (`kind: "stage0"`, runs/stage0/<id>, beside its LLM folder `model/`) has the identity, `base`,
`hparams` (the stage-0 recipe), `resources`, `stages: {"stage0": summary}` (tokens seen, wall time, GPU-hours per
node, $) and `cost`, plus `stage0`: its raw statistics (loss curve included).

A stage-1 record (`kind: "stage1"`, runs/stage1/<id>) has the same identity, choices, hparams, resources,
`stages: {"pretrain": summary}` and `cost`, plus `pretrain`: its raw statistics (loss curve included).

Wall time, GPU-hours and tokens of a stage sum over every attempt at it (requeues, resumes after a kill);
`attempts` counts them (`attempts.json` in the stage's folder lists each).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from lmm.atomic import write_json_atomic
from lmm.launch.identity import run_id, stage1_id
from lmm.layout import DONE_FILE, RECORD_FILE
from lmm.tuning import tuning_method
from lmm.units import COST_UNIT, gpu_hours_per_node, usd

# 2: hparams, resources, per-stage summaries with cost, eval placeholder.
SCHEMA_VERSION = 2
# The Hydra config groups a record names its choice of (`choices`), in this order.
CHOICE_GROUPS = ("model", "vision", "projector", "tuning", "data", "pretrain_data", "stage", "deepspeed",
                 "cluster", "logger", "eval")


def write_record(folder: Path, record: dict) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(folder) / RECORD_FILE
    write_json_atomic(path, record)
    return path


def read_record(folder: Path) -> dict:
    return json.loads((Path(folder) / RECORD_FILE).read_text())


def update_record(folder: Path, **fields) -> dict:
    """Merge fields into an existing record (e.g. eval scores added after training)."""
    record = read_record(folder)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    write_record(folder, record)
    return record


def is_done(folder: Path) -> bool:
    """A run is finished only when its record and its DONE marker are both there."""
    return (Path(folder) / DONE_FILE).exists() and (Path(folder) / RECORD_FILE).exists()


def mark_done(folder: Path) -> None:
    (Path(folder) / DONE_FILE).write_text("done\n")


# -- building a record ------------------------------------------------------------------------------


def choices(cfg) -> dict:
    """The Hydra group choices of a run, by group name."""
    return {group: cfg[group].name for group in CHOICE_GROUPS if group in cfg}


def hparams(cfg) -> dict:
    """The resolved hyper-parameters that tell runs apart in tables and plots."""
    t, p = cfg.tuning, cfg.pretrain
    adapter = tuning_method(t.method).adapter
    return {
        "nominal_params_b": float(cfg.model.nominal_params_b),
        "image_size": int(cfg.vision.image_size),
        "patch_size": int(cfg.vision.patch_size),
        "projector_type": str(cfg.projector.type),
        "method": str(t.method),
        "rank": int(t.rank) if adapter else None,
        "alpha": float(t.alpha) if adapter else None,
        "dropout": float(t.dropout) if adapter else None,
        "bits": int(t.bits),
        "lr": float(t.lr),
        "global_batch_size": int(t.global_batch_size),
        "micro_batch_size": int(t.micro_batch_size),
        "epochs": float(t.epochs),
        "nodes": int(t.nodes),
        "mixing_ratio": float(cfg.data.sharegpt_ratio),
        "max_length": int(cfg.data.max_length),
        "deepspeed_stage": int(cfg.deepspeed.stage),
        "max_steps": int(cfg.trainer.max_steps),
        "pretrain_lr": float(p.lr),
        "pretrain_global_batch_size": int(p.global_batch_size),
        "pretrain_epochs": float(p.epochs),
        "pretrain_nodes": int(p.nodes),
    }


def _round(value: float | None) -> float | None:
    """Six significant digits: tiny CPU runs cost 1e-4 GPU-hours per node, paper runs 10."""
    return None if value is None else float(f"{float(value):.6g}")


def stage_summary(cfg, stats: dict, run_id: str) -> dict:
    """One stage's statistics, resources and cost (GPU-hours per node and $) from `train_stage`'s stats."""
    world = max(int(stats.get("world_size") or 1), 1)
    wall_s = float(stats.get("wall_time_s") or 0.0)
    # Summed over every attempt (requeues, resumes), each with its own world size.
    gpu_h = float(stats.get("gpu_seconds") or wall_s * world) / 3600
    gph_node = gpu_hours_per_node(gpu_h, 1)
    return {
        "run_id": run_id,
        "steps": stats.get("steps"),
        "tokens": stats.get("tokens"),
        "epochs": stats.get("epochs"),
        "wall_time_s": wall_s,
        "attempts": int(stats.get("attempts") or 1),
        "train_runtime_s": stats.get("train_runtime_s"),
        "world_size": world,
        "gpus": world,
        "nodes": max(1, math.ceil(world / max(int(cfg.cluster.gpus_per_node), 1))),
        "gpu_hours": _round(gpu_h),
        "gpu_hours_per_node": _round(gph_node),
        "usd": _round(usd(gph_node, cfg.cluster.usd_per_gpu_hour_per_node)),
        "params_trainable": stats.get("params_trainable"),
        "params_total": stats.get("params_total"),
        "peak_memory_gb": stats.get("peak_memory_gb"),
        "final_loss": stats.get("final_loss"),
    }


def _cost(cfg, stages: dict) -> dict:
    def per_stage(key: str) -> dict:
        values = {name: (s[key] if s else None) for name, s in stages.items()}
        values["total"] = _round(sum(v for v in values.values() if v is not None))
        return values

    return {
        "gpu_hours_per_node": per_stage("gpu_hours_per_node"),
        "usd": per_stage("usd"),
        "usd_per_gpu_hour_per_node": float(cfg.cluster.usd_per_gpu_hour_per_node),
        "unit": f"{COST_UNIT}; the paper's unit, one A100 node = 8 GPUs",
    }


def _resources(cfg, summary: dict) -> dict:
    return {
        "gpu_type": str(cfg.cluster.gpu_type),
        "gpus_per_node": int(cfg.cluster.gpus_per_node),
        "nodes": summary["nodes"],
        "world_size": summary["world_size"],
        "usd_per_gpu_hour_per_node": float(cfg.cluster.usd_per_gpu_hour_per_node),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def build_stage1_record(cfg, stats: dict) -> dict:
    """The record of a stage-1 run (the shared projector), from `train_stage`'s stats."""
    from omegaconf import OmegaConf

    summary = stage_summary(cfg, stats, stage1_id(cfg))
    stages = {"pretrain": summary}
    return {
        "run_id": stage1_id(cfg),
        "kind": "stage1",
        "sweep": cfg.sweep,
        "seed": int(cfg.seed),
        "finished_at": _now(),
        "choices": choices(cfg),
        "hparams": hparams(cfg),
        "resources": _resources(cfg, summary),
        "stages": stages,
        "cost": _cost(cfg, stages),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "pretrain": stats,
        "assembled": stats["assembled"],
        **({"stage0": stage0_pointer(cfg)} if stage0_pointer(cfg) else {}),
    }


def stage0_pointer(cfg) -> dict | None:
    """{run_id, folder} of the stage-0 run whose LLM this run starts from; None when the LLM has a checkpoint."""
    from lmm.launch.identity import stage0_active, stage0_dir

    if not stage0_active(cfg):
        return None
    folder = stage0_dir(cfg)
    return {"run_id": folder.name, "folder": str(folder)}


def build_stage0_record(cfg, stats: dict) -> dict:
    """The record of a stage-0 run (the LLM instruction-tuned from `model.base`), from `train_stage`'s stats:
    tokens seen, GPU-hours per node and $ in `stages.stage0` and `cost`, the loss curve in `stage0.losses`."""
    from omegaconf import OmegaConf

    from lmm.launch.identity import stage0_id

    summary = stage_summary(cfg, stats, stage0_id(cfg))
    stages = {"stage0": summary}
    s = cfg.stage0
    return {
        "run_id": stage0_id(cfg),
        "kind": "stage0",
        "sweep": cfg.sweep,
        "seed": int(cfg.seed),
        "finished_at": _now(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "base": str(cfg.model.base),
        "model": str(cfg.model.name),
        "hparams": {"lr": float(s.lr), "global_batch_size": int(s.global_batch_size),
                    "micro_batch_size": int(s.micro_batch_size), "epochs": float(s.epochs), "nodes": int(s.nodes),
                    "lr_scheduler": str(s.lr_scheduler), "warmup_ratio": float(s.warmup_ratio),
                    "weight_decay": float(s.weight_decay), "max_length": int(s.data.max_length),
                    "zero_stage": int(s.zero_stage), "template": str(cfg.model.template),
                    "data": str(s.data.name)},
        "resources": _resources(cfg, summary),
        "stages": stages,
        "cost": _cost(cfg, stages),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "stage0": stats,
        "assembled": stats["assembled"],  # the base LLM it started from
    }


def _stage1_summary(cfg, stage1_stats: dict | None, stage1_folder: Path | None) -> dict | None:
    """Stage 1's summary: from its stats when this job trained it, else from its record on disk."""
    if stage1_stats is not None:
        return stage_summary(cfg, stage1_stats, stage1_id(cfg))
    if stage1_folder is None or not (Path(stage1_folder) / RECORD_FILE).exists():
        return None  # an explicit projector file from elsewhere: its cost is unknown
    record = read_record(stage1_folder)
    summary = (record.get("stages") or {}).get("pretrain")
    if summary is None and "pretrain" in record:  # a schema-1 record: priced with this run's cluster
        summary = stage_summary(cfg, record["pretrain"], record.get("run_id", Path(stage1_folder).name))
    return summary


def build_run_record(cfg, stage1_stats: dict | None, stage2_stats: dict, stage1_folder: Path | None,
                     started: float) -> dict:
    """The full record of a stage-2 run.

    `stage1_stats` are stage 1's stats when this job trained it (None: read from `stage1_folder`'s
    record, the shared stage-1 run); `started` is the job's start (time.time()).
    """
    from omegaconf import OmegaConf

    finetune = stage_summary(cfg, stage2_stats, run_id(cfg))
    pretrain = _stage1_summary(cfg, stage1_stats, stage1_folder)
    stages = {"pretrain": pretrain, "finetune": finetune}
    stage1 = {"run_id": stage1_id(cfg), "folder": str(stage1_folder) if stage1_folder else None,
              "wall_time_s": pretrain["wall_time_s"] if pretrain else None}
    return {
        "run_id": run_id(cfg),
        "kind": "stage2",
        "sweep": cfg.sweep,
        "seed": int(cfg.seed),
        "started_at": _iso(started),
        "finished_at": _now(),
        "wall_time_s": finetune["wall_time_s"],  # stage 2's, over every attempt (stage 1 is its own run)
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "choices": choices(cfg),
        "hparams": hparams(cfg),
        "resources": _resources(cfg, finetune),
        "stages": stages,
        "cost": _cost(cfg, stages),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "stage1": stage1,
        **({"stage0": stage0_pointer(cfg)} if stage0_pointer(cfg) else {}),
        "finetune": stage2_stats,
        "assembled": stage2_stats["assembled"],
        "eval": {},
    }


# -- evaluation scores ------------------------------------------------------------------------------


def beam_key(beam: int) -> str:
    return f"beam{int(beam)}"


def set_eval_score(folder: Path, benchmark: str, beam: int, score: dict) -> dict:
    """Put one benchmark's score at `eval.<benchmark>.beam<k>`, keeping every other score."""
    record = read_record(folder)
    evals = record.setdefault("eval", {}) or {}
    evals.setdefault(benchmark, {})[beam_key(beam)] = score
    record["eval"] = evals
    write_record(folder, record)
    return record


def eval_scores(record: dict) -> Iterator[tuple[str, int, dict]]:
    """(benchmark, beam, score) for every score in a record."""
    for benchmark, by_beam in sorted((record.get("eval") or {}).items()):
        if not isinstance(by_beam, dict):
            continue
        for key, score in sorted(by_beam.items()):
            if key.startswith("beam") and key[4:].isdigit() and isinstance(score, dict):
                yield benchmark, int(key[4:]), score
