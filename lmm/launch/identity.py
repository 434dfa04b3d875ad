"""Run identity: deterministic run ids from the resolved config, and the folders they name."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm.tuning import tuning_method

# The run store: every run lives once under runs/<store>/<run_id>; runs/<sweep>/ holds links to it.
STAGE0_STORE = "stage0"  # LLMs instruction-tuned from model.base (stage 0), shared by every run on that LLM
STAGE1_STORE = "stage1"
STAGE2_STORE = "stage2"
CHECKPOINT_STORE = "checkpoints"  # records of evaluated checkpoints (python -m lmm.eval +checkpoint=...)
STORES = (STAGE0_STORE, STAGE1_STORE, STAGE2_STORE, CHECKPOINT_STORE)
# A sweep names the folder runs/<sweep>/: a plain name, and never one of the stores themselves.
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESERVED_SWEEPS = STORES

# Keys that say where things are or how a run is watched, not what it computes: a moved data folder
# or another hub mirror must not change a run's identity.
_LOCATION_KEYS = {"path", "image_folder", "sharegpt_path", "num_workers", "tokenizer"}
# model.base counts through the stage-0 id (when stage 0 makes the LLM), so ids of models with a path stay as they were.
_MODEL_SOURCE_KEYS = {"base"}
# Stage-0 settings that change how it runs, not the weights it produces; and image settings its text-only data
# inherits from the run's tower (stage 0 reads no image: a 224-px and a 336-px run share one stage 0).
_STAGE0_BOOKKEEPING = {"zero_stage", "gradient_checkpointing", "image_size", "image_aspect", "max_bad_fraction"}
# Trainer settings that do not change the trained weights.
_TRAINER_BOOKKEEPING = {"save_steps", "save_total_limit", "logging_steps", "gradient_checkpointing"}


def _strip(node, drop: set[str]):
    if isinstance(node, dict):
        return {k: _strip(v, drop) for k, v in sorted(node.items()) if k not in drop}
    if isinstance(node, list):
        return [_strip(v, drop) for v in node]
    return node


def _digest(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# Data sections used to carry the tower's image size (`data.image_size`, removed: images are always preprocessed
# to the tower's size, and only a check read it). The payload keeps it, so the ids of runs on disk stay the same.
_DATA_SECTIONS = ("data", "pretrain_data")


def _section(cfg: DictConfig, key: str) -> dict:
    section = _strip(OmegaConf.to_container(cfg[key], resolve=True), _LOCATION_KEYS | _MODEL_SOURCE_KEYS)
    if key in _DATA_SECTIONS:
        section["image_size"] = int(cfg.vision.image_size)
    return section


def _model(cfg: DictConfig, recipes: bool = False) -> dict:
    """The model section without `recipe` (recipes=True: with it, as stage-1/2 ids hashed it before)."""
    # A stage reads its own recipe through its resolved section (stage 1 `pretrain`, stage 2 `tuning`), already
    # hashed: another stage's or method's recipe (a 65B LoRA lr) must not retrain stage 1 or a full run.
    section = _section(cfg, "model")
    return section if recipes else {k: v for k, v in section.items() if k != "recipe"}


def _trainer(cfg: DictConfig) -> dict:
    return _strip(OmegaConf.to_container(cfg.trainer, resolve=True), _TRAINER_BOOKKEEPING)


def stage0_active(cfg: DictConfig) -> bool:
    """Whether the run's LLM comes from stage 0: no checkpoint (`model.path` null) but a base LLM to tune."""
    return not cfg.model.path and bool(cfg.model.get("base"))


def stage0_id(cfg: DictConfig) -> str:
    """Id of the stage-0 run: the base LLM, its shape and template, the stage-0 recipe and data, seed."""
    payload = {
        "stage": "stage0",
        "base": str(cfg.model.base),
        "model": _model(cfg),
        "stage0": _strip(_section(cfg, "stage0"), _STAGE0_BOOKKEEPING | {"name"}),
        "seed": int(cfg.seed),
    }
    return f"s0-{cfg.model.name}-{cfg.stage0.data.name}-{_digest(payload)}"


def _with_stage0(cfg: DictConfig, payload: dict) -> dict:
    """A stage-1/2 payload gains the stage-0 id only when stage 0 makes the LLM (other ids stay as they were)."""
    return {**payload, "stage0": stage0_id(cfg)} if stage0_active(cfg) else payload


def stage1_id(cfg: DictConfig, recipes: bool = False) -> str:
    """Id of the stage-1 run: LLM, tower, projector, stage-1 data and optimisation, seed.

    Not the ZeRO stage: it does not change what stage 1 computes, and QLoRA runs (ZeRO-2) share
    the stage 1 of LoRA and full runs (ZeRO-3), as in the paper. Nor stage 2's recipes (`model.recipe`);
    recipes=True gives the id that hashed them, which `python -m lmm.sweep migrate` renames.
    """
    payload = {
        "stage": "pretrain",
        "model": _model(cfg, recipes),
        **{k: _section(cfg, k) for k in ("vision", "projector", "pretrain_data")},
        "pretrain": {k: v for k, v in _section(cfg, "pretrain").items() if k != "zero_stage"},
        "trainer": {k: v for k, v in _trainer(cfg).items() if k != "projector_lr"},
        "seed": int(cfg.seed),
    }
    payload = _with_stage0(cfg, payload)
    slug = f"s1-{cfg.model.name}-{cfg.vision.name}-{cfg.projector.name}-{cfg.pretrain_data.name}"
    return f"{slug}-{_digest(payload)}"


def _tuning_slug(cfg: DictConfig) -> str:
    t = cfg.tuning
    return tuning_method(t.method).slug(t.rank)


def stage2_id(cfg: DictConfig, recipes: bool = False) -> str:
    """Id of the stage-2 run: everything stage 1 depends on, plus tuning, data and the projector source.

    Not the recipes of other stages or methods (`model.recipe`: its own are in `tuning`); recipes=True gives
    the id that hashed them, which `python -m lmm.sweep migrate` renames.
    """
    source = cfg.stage.projector_path or stage1_id(cfg, recipes)
    payload = {
        "stage": "finetune",
        "stage1": source,
        "model": _model(cfg, recipes),
        **{k: _section(cfg, k) for k in ("vision", "projector", "tuning", "data")},
        "trainer": _trainer(cfg),
        "deepspeed_stage": int(cfg.deepspeed.stage),
        "seed": int(cfg.seed),
    }
    payload = _with_stage0(cfg, payload)  # also when stage.projector_path replaces stage 1's id
    slug = f"{cfg.model.name}-{cfg.vision.name}-{cfg.projector.name}-{_tuning_slug(cfg)}-{cfg.data.name}"
    return f"{slug}-{_digest(payload)}"


def run_id(cfg: DictConfig) -> str:
    """The id of the run this config describes (stage 0 / stage 1 for stage=stage0 / pretrain, else stage 2)."""
    if cfg.stage.name == "stage0":
        return stage0_id(cfg)
    return stage1_id(cfg) if cfg.stage.name == "pretrain" else stage2_id(cfg)


def runs_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.runs_dir).expanduser().resolve()


def stage0_dir(cfg: DictConfig) -> Path:
    """The stage-0 run (its LLM in model/) is shared by every run that starts from the same tuned LLM."""
    return runs_dir(cfg) / STAGE0_STORE / stage0_id(cfg)


def stage1_dir(cfg: DictConfig) -> Path:
    """Stage-1 runs are shared by every stage-2 run with the same LLM, tower, projector, data and seed."""
    return runs_dir(cfg) / STAGE1_STORE / stage1_id(cfg)


def run_dir(cfg: DictConfig) -> Path:
    """The run's one folder in the run store, whichever sweeps use it (they link to it: `sweep_link`)."""
    if cfg.stage.name == "stage0":
        return stage0_dir(cfg)
    if cfg.stage.name == "pretrain":
        return stage1_dir(cfg)
    return runs_dir(cfg) / STAGE2_STORE / stage2_id(cfg)


def sweep_link(cfg: DictConfig) -> Path:
    """Where the run appears in its sweep's view: runs/<sweep>/<run_id>, a link into the store."""
    return runs_dir(cfg) / cfg.sweep / run_id(cfg)


def sweep_problems(sweep: str) -> list[str]:
    """Why a sweep name cannot name a folder runs/<sweep>/ (empty when it can)."""
    if not SWEEP_NAME.fullmatch(sweep):
        return [f"sweep = {sweep!r} must be a plain name (letters, digits, '_', '.', '-', starting with a letter "
                "or digit): it names the folder runs/<sweep>/."]
    if sweep in RESERVED_SWEEPS:
        return [f"sweep = {sweep!r} is reserved: runs/{sweep}/ is the run store itself. Pick another name."]
    return []
