"""Checks of a composed run config (fields, ranges, choices, shapes, files), run before anything is built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm.eval.benchmarks import BENCHMARK_NAMES
from lmm.launch.identity import stage0_active, sweep_problems
from lmm.launch.resources import world_size
from lmm.prepare import missing_files
from lmm.reproduce import stage1_command
from lmm.stage0 import stage0_in_job
from lmm.tuning import METHOD_NAMES, METHODS

STAGES = ("pretrain", "finetune", "both", "stage0")
PROJECTORS = ("linear", "mlp2x_gelu")
TEMPLATES = ("plain", "vicuna_v1", "llama_2")
PRECISIONS = ("auto", "bf16", "fp32")
DATA_KINDS = ("llava", "synthetic")
LOGGER_MODES = ("online", "offline", "disabled")
# transformers' SchedulerType values that train with our TrainingArguments as they are. The others need
# `lr_scheduler_kwargs` (cosine_with_min_lr, cosine_warmup_with_min_lr, warmup_stable_decay) or an
# evaluation metric (reduce_lr_on_plateau, greedy); tests check this split against transformers' list.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")
# Top-level keys outside the schema that a command declares for itself (`python -m lmm.eval +run=PATH`),
# and Hydra's own node in configs a launcher composes.
FREE_FORM_KEYS = ("run", "hydra")


class ConfigError(ValueError):
    """An invalid config: the message names every offending field and how to fix it."""


def _batch_problems(prefix: str, opt, world: int, cfg_stage: str) -> list[str]:
    problems = []
    if opt.lr <= 0:
        problems.append(f"{prefix}.lr = {opt.lr} must be > 0 (the paper: 1e-4 stage 1, 2e-5 full, 1e-4 LoRA).")
    gbs, mbs = int(opt.global_batch_size), int(opt.micro_batch_size)
    nodes_field = "pretrain.nodes" if cfg_stage == "pretrain" else "tuning.nodes"
    if gbs <= 0 or mbs <= 0:
        problems.append(f"{prefix}.global_batch_size = {gbs} and {prefix}.micro_batch_size = {mbs} must be > 0.")
    elif world > 0 and gbs % (mbs * world):  # world < 1 is reported with the field that makes it so
        problems.append(
            f"{prefix}.global_batch_size = {gbs} is not divisible by {prefix}.micro_batch_size ({mbs}) × "
            f"world size ({world} = {nodes_field} × cluster.gpus_per_node): pick a global batch that is a "
            f"multiple of {mbs * world}, or change the micro-batch or node count."
        )
    if opt.epochs <= 0:
        problems.append(f"{prefix}.epochs = {opt.epochs} must be > 0.")
    return problems


def _at_least(out: list[str], cfg: DictConfig, key: str, low: float, why: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and value < low:
        out.append(f"{key} = {value} must be >= {low:g}{why}.")


def _choice(out: list[str], cfg: DictConfig, key: str, choices: tuple[str, ...], why: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        out.append(f"{key} = {value!r} must be one of {', '.join(choices)}{why}.")


def _unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys the structured schema does not declare (Hydra lets `+key=value` add them to typed sections)."""
    found: list[str] = []
    schema = node._metadata.object_type
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in list(node):
        path = f"{prefix}{key}"
        if declared is not None and key not in declared and not (prefix == "" and key in FREE_FORM_KEYS):
            found.append(path)
        elif declared is not None and key in declared:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                found += _unknown_keys(child, f"{path}.")
    return found


def _unknown_key_problems(cfg: DictConfig) -> list[str]:
    out = []
    for key in _unknown_keys(cfg):
        section, _, _ = key.rpartition(".")
        where = f"the `{section}` section" if section else "the run config"
        out.append(f"{key} is not a setting of {where} (a typo, or a `+` that added it?): remove it; "
                   f"`python -m lmm.train --cfg job` lists every setting.")
    return out


def _shape_problems(cfg: DictConfig) -> list[str]:
    out = []
    m, v = cfg.model, cfg.vision
    for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size"):
        _at_least(out, cfg, f"model.{key}", 1)
    if m.num_heads >= 1 and m.hidden_size % m.num_heads:
        out.append(f"model.num_heads = {m.num_heads} does not divide model.hidden_size = {m.hidden_size}: "
                   "every attention head gets hidden_size / num_heads dimensions.")
    kv = m.num_kv_heads
    if kv is not None and (kv < 1 or (m.num_heads >= 1 and m.num_heads % kv)):
        out.append(f"model.num_kv_heads = {kv} must be >= 1 and divide model.num_heads = {m.num_heads} "
                   "(grouped-query attention shares each key/value head among num_heads / num_kv_heads heads).")
    if v.num_heads >= 1 and v.hidden_size % v.num_heads:
        out.append(f"vision.num_heads = {v.num_heads} does not divide vision.hidden_size = {v.hidden_size}.")
    _at_least(out, cfg, "vision.num_heads", 1)
    if v.patch_size < 1:
        out.append(f"vision.patch_size = {v.patch_size} must be >= 1.")
    elif v.image_size % v.patch_size:
        out.append(f"vision.image_size = {v.image_size} must be a multiple of vision.patch_size = {v.patch_size}.")
    return out


def _range_problems(cfg: DictConfig) -> list[str]:
    out = []
    tr = cfg.trainer
    _at_least(out, cfg, "trainer.save_steps", 1, " (optimizer steps between checkpoints)")
    if tr.max_steps != -1 and tr.max_steps < 1:
        out.append(f"trainer.max_steps = {tr.max_steps} must be -1 (train for the epochs) or >= 1.")
    _at_least(out, cfg, "trainer.logging_steps", 1)
    if tr.save_total_limit is not None and tr.save_total_limit < 0:
        out.append(f"trainer.save_total_limit = {tr.save_total_limit} must be >= 0, or null (0 and null keep "
                   "every checkpoint).")
    _at_least(out, cfg, "trainer.weight_decay", 0)
    if tr.warmup_ratio < 0 or tr.warmup_ratio >= 1:
        out.append(f"trainer.warmup_ratio = {tr.warmup_ratio} must be in [0, 1) (the paper: 0.03).")
    if tr.projector_lr is not None and tr.projector_lr <= 0:
        out.append(f"trainer.projector_lr = {tr.projector_lr} must be > 0 or null.")
    if not 0 <= cfg.seed < 2**32:
        out.append(f"seed = {cfg.seed} must be in [0, 2^32) (numpy's seed range).")
    for key in ("cluster.gpus_per_node", "cluster.cpus_per_task", "cluster.timeout_min", "tuning.nodes",
                "pretrain.nodes", "eval.num_beams", "eval.max_new_tokens", "eval.batch_size",
                "eval.judge.max_workers"):
        _at_least(out, cfg, key, 1)
    for key in ("eval.judge.max_parse_failures", "eval.judge.max_retries"):
        _at_least(out, cfg, key, 0)
    if cfg.eval.judge.timeout_s <= 0:
        out.append(f"eval.judge.timeout_s = {cfg.eval.judge.timeout_s} must be > 0.")
    for name, runs in cfg.eval.judge.num_runs.items():
        if runs < 1:
            out.append(f"eval.judge.num_runs.{name} = {runs} must be >= 1.")
    return out


def _choice_problems(cfg: DictConfig) -> list[str]:
    out = []
    _choice(out, cfg, "stage.name", STAGES)
    _choice(out, cfg, "tuning.method", METHOD_NAMES)
    _choice(out, cfg, "projector.type", PROJECTORS)
    _choice(out, cfg, "model.template", TEMPLATES)
    _choice(out, cfg, "trainer.precision", PRECISIONS, " (auto: bf16 on GPU, fp32 on CPU)")
    _choice(out, cfg, "trainer.lr_scheduler", LR_SCHEDULERS,
            " (transformers' schedulers that need no lr_scheduler_kwargs or evaluation metric)")
    _choice(out, cfg, "logger.mode", LOGGER_MODES)
    if cfg.deepspeed.stage not in (0, 2, 3):
        out.append(f"deepspeed.stage = {cfg.deepspeed.stage} must be 0 (none), 2 or 3.")
    unknown = [b for b in cfg.eval.benchmarks if b not in BENCHMARK_NAMES]
    if unknown:
        out.append(f"eval.benchmarks has unknown {', '.join(map(repr, unknown))}: the benchmarks are "
                   f"{', '.join(BENCHMARK_NAMES)} (or pick a preset: eval=paper, eval=table3, ...).")
    return out


def _sweep_problems(cfg: DictConfig) -> list[str]:
    return sweep_problems(str(cfg.sweep))


def _tuning_problems(cfg: DictConfig) -> list[str]:
    out = []
    t, ds = cfg.tuning, cfg.deepspeed
    method = METHODS.get(str(t.method))
    if method is None:  # reported by _choice_problems
        return out
    if method.adapter:
        if t.rank <= 0:
            out.append(f"tuning.rank = {t.rank} must be > 0 for {t.method}: set tuning.rank=64 (the paper's).")
        if t.alpha <= 0:
            out.append(f"tuning.alpha = {t.alpha} must be > 0 for {t.method}: the paper uses 2 × tuning.rank.")
        if not 0 <= t.dropout < 1:
            out.append(f"tuning.dropout = {t.dropout} must be in [0, 1).")
    if method.quantized:
        if ds.stage == 3:
            out.append(
                f"tuning.method = {t.method} with deepspeed.stage = 3: 4-bit base weights cannot be partitioned by "
                "ZeRO-3. Use deepspeed=zero2 (the paper's choice for QLoRA) or deepspeed=none."
            )
        if t.bits != method.base_bits:
            out.append(f"tuning.bits = {t.bits} must be {method.base_bits} for {t.method} (or use tuning=lora).")
        if t.quant_type not in ("nf4", "fp4"):
            out.append(f"tuning.quant_type = {t.quant_type!r} must be nf4 (the paper's) or fp4.")
    elif t.bits != 16:
        quantized = ", ".join(f"tuning={m.name}" for m in METHODS.values() if m.quantized)
        out.append(f"tuning.bits = {t.bits} with tuning.method = {t.method}: 4-bit needs {quantized}.")
    return out


def _data_problems(cfg: DictConfig) -> list[str]:
    out = []
    for key in ("data", "pretrain_data"):
        d = cfg[key]
        _choice(out, cfg, f"{key}.kind", DATA_KINDS)
        _choice(out, cfg, f"{key}.image_aspect", ("pad", "resize", "crop"))
        if d.sharegpt_ratio < 0 or (d.sharegpt_ratio > 0 and not d.sharegpt_path):
            out.append(f"{key}.sharegpt_ratio = {d.sharegpt_ratio} needs >= 0 and a {key}.sharegpt_path.")
        if d.max_length < 1:
            out.append(f"{key}.max_length = {d.max_length} must be >= 1 (tokens per sample, the image as one).")
        elif d.max_length > cfg.model.max_position_embeddings:
            out.append(
                f"{key}.max_length = {d.max_length} exceeds model.max_position_embeddings = "
                f"{cfg.model.max_position_embeddings}."
            )
        if not 0 <= d.max_bad_fraction <= 1:
            out.append(f"{key}.max_bad_fraction = {d.max_bad_fraction} must be in [0, 1] (the fraction of images "
                       "that may be missing or unreadable).")
        _at_least(out, cfg, f"{key}.num_workers", 0)
    return out


def _file_problems(cfg: DictConfig, stage1_exists: bool | None) -> list[str]:
    """Files a real run reads that are not there, each data set and benchmark file with the `python -m
    lmm.prepare ...` command that fetches it (generated synthetic data is made on first use; pretrained
    weights are checked, and fetched when reachable, by lmm.models.weights)."""
    from lmm.launch.store import former_id_problems  # the run store: not needed by the field checks

    out = missing_files(cfg, stage1_exists, models=False) + former_id_problems(cfg)
    projector = cfg.stage.projector_path
    if projector and cfg.stage.name != "pretrain" and not Path(projector).exists():
        out.append(f"stage.projector_path = {projector} does not exist (a projector.safetensors or a stage-1 run "
                   "folder).")
    return out


def problems(cfg: DictConfig, stage1_exists: bool | None = None, check_files: bool = False) -> list[str]:
    """Every problem of the config, each naming its fields and the fix; empty when valid.

    `stage1_exists` tells whether the stage-1 run this config needs is on disk (None = not checked).
    `check_files`: also report data, projector and benchmark files that are missing. Only for a run that is
    about to start: dry runs and plans look at configs (the paper's) on machines without their data.
    """
    out = _unknown_key_problems(cfg)
    out += _choice_problems(cfg)
    out += _sweep_problems(cfg)
    out += _tuning_problems(cfg)
    out += _shape_problems(cfg)
    out += _data_problems(cfg)
    out += _range_problems(cfg)
    stage = cfg.stage.name
    if stage in ("pretrain", "both"):
        out += _batch_problems("pretrain", cfg.pretrain, world_size(cfg, "pretrain"), stage)
    if stage in ("finetune", "both"):
        out += _batch_problems("tuning", cfg.tuning, world_size(cfg, "finetune"), stage)
    out += stage0_problems(cfg, world_size(cfg, "stage0"))
    if stage == "finetune" and not cfg.stage.projector_path and stage1_exists is False:
        out.append(
            "stage.name = finetune but no stage-1 projector: stage.projector_path is null and the stage-1 run "
            f"for this LLM, tower, projector, stage-1 data and seed does not exist. Produce it with:\n"
            f"    {stage1_command(cfg)}\n  or run both stages with stage=both, or set stage.projector_path."
        )
    if check_files:
        out += _file_problems(cfg, stage1_exists)
    return out


def validate(cfg: DictConfig, stage1_exists: bool | None = None, check_files: bool = False) -> None:
    """Raise one ConfigError listing every problem of the config."""
    _raise(problems(cfg, stage1_exists, check_files))


def validate_files(cfg: DictConfig, stage1_exists: bool | None = None) -> None:
    """Raise one ConfigError listing the files a real run reads that are missing, for a config `validate`
    has already passed (its field checks are not run again)."""
    _raise(_file_problems(cfg, stage1_exists))


def _raise(found: list[str]) -> None:
    if found:
        raise ConfigError("Invalid config:\n  - " + "\n  - ".join(found))


def stage0_problems(cfg: DictConfig, world: int) -> list[str]:
    """Every problem of the stage-0 settings (each naming its fields and the fix); empty when valid."""
    m, s = cfg.model, cfg.stage0
    out = []
    if m.local_only and not m.path and not m.get("base"):
        out.append(f"model.path = null and model.base = null: model={m.name} has no public weights. Set "
                   f"LMM_VICUNA_65B=/path/to/vicuna-65b (or paths.vicuna_65b=...) to use your own, or "
                   f"model.base=huggyllama/llama-65b (a base LLM's hub id or folder) to train it first (stage 0).")
    if cfg.stage.name == "stage0" and not stage0_active(cfg):
        out.append(f"stage=stage0 trains model.base into the LLM, but model.path = {m.path!r} and model.base = "
                   f"{m.get('base')!r}: stage 0 needs model.path=null and a model.base.")
    if not stage0_in_job(cfg):
        return out
    out += _batch_problems("stage0", s, world, "stage0")
    if s.lr_scheduler not in LR_SCHEDULERS:
        out.append(f"stage0.lr_scheduler = {s.lr_scheduler!r} must be one of {', '.join(LR_SCHEDULERS)} "
                   "(FastChat's: cosine).")
    if not 0 <= s.warmup_ratio < 1:
        out.append(f"stage0.warmup_ratio = {s.warmup_ratio} must be in [0, 1) (FastChat's: 0.03).")
    if s.weight_decay < 0:
        out.append(f"stage0.weight_decay = {s.weight_decay} must be >= 0 (FastChat's: 0).")
    if s.zero_stage not in (0, 2, 3):
        out.append(f"stage0.zero_stage = {s.zero_stage} must be 0 (none), 2 or 3 (FastChat's FSDP full_shard ≈ 3).")
    if s.nodes < 1:
        out.append(f"stage0.nodes = {s.nodes} must be >= 1.")
    if m.template == "plain":
        out.append("model.template = plain: stage 0 teaches the model's chat template; use vicuna_v1 (FastChat's).")
    if not 1 <= s.data.max_length <= m.max_position_embeddings:
        out.append(f"stage0.data.max_length = {s.data.max_length} must be in [1, model.max_position_embeddings = "
                   f"{m.max_position_embeddings}].")
    return out
