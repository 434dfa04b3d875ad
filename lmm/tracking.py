"""Weights & Biases tracking (`logger=wandb`): one W&B run per run folder, same id across requeues.

`start_tracking` opens the W&B run before the Trainer is built into training, so the Trainer's own
`WandbCallback` (report_to="wandb") logs loss, learning rate, tokens/s and peak memory into *our* run:
id = the run id (resume="allow": a requeued job continues the same W&B run; a run renamed by
`lmm.sweep migrate` keeps its first one), group = the sweep, job_type = the stage, config = the Hydra
choices as top-level keys + `hp` (resolved hyper-parameters) + `cfg` (the whole resolved config).
`finish_tracking` adds the stage's statistics and cost to the run summary; `log_eval_scores(run_dir)` adds
the evaluation scores of a run record when they land.

Every W&B file stays out of $HOME: the run's files go under the run folder (`<run>/wandb/`), W&B's
cache, config, data and artifact folders under `paths.cache_dir/wandb/` (unless WANDB_CACHE_DIR,
WANDB_CONFIG_DIR, WANDB_DATA_DIR or WANDB_ARTIFACT_DIR are set). Works offline (`WANDB_MODE=offline`,
or `logger.mode=offline`); an offline run is uploaded later with `wandb sync <run>/wandb/offline-run-*`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm.launch.identity import stage0_id, stage1_id, stage2_id
from lmm.layout import WANDB_ID_FILE
from lmm.ranks import is_main_process
from lmm.records import choices, eval_scores, hparams, read_record, stage_summary

log = logging.getLogger(__name__)

# W&B's environment variables for its folders -> the sub-folder of <paths.cache_dir>/wandb they get.
WANDB_FOLDERS = {"WANDB_CACHE_DIR": "cache", "WANDB_CONFIG_DIR": "config", "WANDB_DATA_DIR": "data",
                 "WANDB_ARTIFACT_DIR": "artifacts"}
# Characters W&B refuses in run ids (wandb_settings.validate_run_id) and a conservative length cap.
_RESERVED = re.compile(r"[:;,#?/'\\%\s]")
_MAX_ID = 128


def enabled(cfg: DictConfig) -> bool:
    return cfg.logger.name == "wandb"


def configure_environment(cache_dir: str | Path) -> dict[str, str]:
    """Point W&B's cache/config/data/artifact folders under `cache_dir/wandb` (explicit env vars win)."""
    base = Path(cache_dir).expanduser().resolve() / "wandb"
    for var, sub in WANDB_FOLDERS.items():
        if not os.environ.get(var):
            os.environ[var] = str(base / sub)
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    return {var: os.environ[var] for var in WANDB_FOLDERS}


def wandb_run_id(run_id: str) -> str:
    """The W&B id of a run: the run id itself (reserved characters replaced; hashed if very long)."""
    clean = _RESERVED.sub("-", run_id)
    if len(clean) > _MAX_ID:
        clean = f"{clean[:_MAX_ID - 9]}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    return clean


def folder_wandb_id(folder: str | Path, run_id: str) -> str:
    """The W&B id of the run in `folder`: the one it was first tracked under when `lmm.sweep migrate` has since
    renamed it (its `wandb_id` file: a resumed or evaluated run goes on in that W&B run), else its run id's."""
    kept = Path(folder) / WANDB_ID_FILE
    if not kept.is_file():
        return wandb_run_id(run_id)
    wandb_id = kept.read_text().strip()
    if not wandb_id or wandb_run_id(wandb_id) != wandb_id:  # W&B would make up an id, or refuse this one
        log.warning("%s holds no usable W&B id (%r): tracked under the run id's instead; write the id the run was "
                    "first tracked under there to go on in that W&B run", kept, wandb_id[:80])
        return wandb_run_id(run_id)
    return wandb_id


def tracking_config(cfg: DictConfig, stage: str, run_id: str) -> dict:
    """The W&B config of a run: Hydra choices as top-level keys, then ids, hyper-parameters, the config."""
    return {
        **choices(cfg),
        "run_id": run_id,
        "sweep": cfg.sweep,
        "train_stage": stage,
        "stage1_run_id": stage1_id(cfg),
        "seed": int(cfg.seed),
        "hp": hparams(cfg),
        "cfg": OmegaConf.to_container(cfg, resolve=True),
    }


def _init(cfg_logger, *, run_id: str, group: str, job_type: str, config: dict | None, folder: Path,
          wandb_id: str, mode: str | None = None):
    import wandb

    return wandb.init(
        project=cfg_logger.get("project") or "lmm",
        entity=cfg_logger.get("entity"),
        id=wandb_id,
        name=run_id,
        resume="allow",
        group=group,
        job_type=job_type,
        config=config,
        dir=str(folder),
        mode=mode or cfg_logger.get("mode") or "online",
        settings=wandb.Settings(disable_git=True, save_code=False),
    )


@dataclass
class Tracking:
    """An open W&B run of one stage."""

    run: object
    cfg: DictConfig
    stage: str
    run_id: str


def _reassert_choices_callback(run, config: dict):
    """A Trainer callback that puts our top-level keys back after the WandbCallback merged
    TrainingArguments into the config (its `deepspeed` field would shadow the `deepspeed` choice)."""
    from transformers import TrainerCallback

    class ReassertChoices(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                run.config.update(config, allow_val_change=True)

    return ReassertChoices()


def start_tracking(cfg: DictConfig, out_dir: Path, stage: str, trainer=None) -> Tracking | None:
    """Open the stage's W&B run (main process only) before `trainer.train`; None when not tracking."""
    if not enabled(cfg) or not is_main_process():
        return None

    configure_environment(cfg.paths.cache_dir)
    run_id = {"stage0": stage0_id, "pretrain": stage1_id}.get(stage, stage2_id)(cfg)  # each stage's own W&B run
    config = tracking_config(cfg, stage, run_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _init(OmegaConf.to_container(cfg.logger, resolve=True), run_id=run_id, group=cfg.sweep,
                job_type=stage, config=config, folder=out_dir, wandb_id=folder_wandb_id(out_dir, run_id))
    if trainer is not None:
        top_level = {k: v for k, v in config.items() if k not in ("hp", "cfg")}
        trainer.add_callback(_reassert_choices_callback(run, top_level))
    return Tracking(run, cfg, stage, run_id)


def stage_summary_metrics(cfg: DictConfig, stage: str, stats: dict, run_id: str) -> dict:
    """The stage's statistics and cost as flat W&B summary keys (`<stage>/...`)."""
    summary = stage_summary(cfg, stats, run_id)
    keys = ("steps", "tokens", "wall_time_s", "world_size", "nodes", "gpu_hours", "gpu_hours_per_node", "usd",
            "params_trainable", "params_total", "peak_memory_gb", "final_loss")
    return {f"{stage}/{k}": summary[k] for k in keys if summary.get(k) is not None}


def finish_tracking(tracking: Tracking | None, stats: dict | None = None) -> None:
    """Add the stage's statistics to the run summary and close the W&B run."""
    if tracking is None:
        return
    if stats is not None:
        tracking.run.summary.update(stage_summary_metrics(tracking.cfg, tracking.stage, stats, tracking.run_id))
    tracking.run.finish()


def eval_summary_metrics(record: dict) -> dict:
    """A record's eval scores (and run cost) as flat W&B summary keys:
    `eval/<benchmark>/beam<k>/{overall,std,<category>}`, `cost/{gpu_hours_per_node,usd}/<stage>`."""
    out: dict[str, float] = {}
    for benchmark, beam, score in eval_scores(record):
        prefix = f"eval/{benchmark}/beam{beam}"
        for key in ("overall", "std"):
            if isinstance(score.get(key), (int, float)):
                out[f"{prefix}/{key}"] = score[key]
        for name, value in (score.get("categories") or {}).items():
            if isinstance(value, (int, float)):
                out[f"{prefix}/{name}"] = value
    for unit in ("gpu_hours_per_node", "usd"):
        for stage, value in ((record.get("cost") or {}).get(unit) or {}).items():
            if value is not None:
                out[f"cost/{unit}/{stage}"] = value
    return out


def log_eval_scores(run_dir: str | Path, *, mode: str | None = None, force: bool = False) -> bool:
    """Log a run record's eval scores into its W&B run (resumed by id); True when something was logged.

    Runs trained with `logger=none` are skipped unless `force`; `mode` overrides the recorded
    logger.mode (e.g. "offline").
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    config = record.get("config") or {}
    logger = config.get("logger") or {}
    if logger.get("name") != "wandb" and not force:
        return False
    metrics = eval_summary_metrics(record)
    if not any(k.startswith("eval/") for k in metrics):
        return False
    configure_environment((config.get("paths") or {}).get("cache_dir") or run_dir / ".cache")
    run = _init(logger, run_id=record["run_id"], group=record.get("sweep") or "default",
                job_type="finetune" if record.get("kind") == "stage2" else "pretrain", config=None,
                folder=run_dir, mode=mode, wandb_id=folder_wandb_id(run_dir, record["run_id"]))
    run.summary.update(metrics)
    run.finish()
    return True
