"""Cross-field checks of a composed run config, run before anything is built or submitted."""

from __future__ import annotations

from omegaconf import DictConfig

METHODS = ("full", "lora", "qlora")
STAGES = ("pretrain", "finetune", "both")
PROJECTORS = ("linear", "mlp2x_gelu")
TEMPLATES = ("plain", "vicuna_v1", "llama_2")


class ConfigError(ValueError):
    """An invalid config: the message names every offending field and how to fix it."""


def world_size(cfg: DictConfig, stage: str) -> int:
    """Ranks of a stage: nodes × GPUs per node. A stage=both job runs stage 1 on the job's (stage-2) nodes."""
    nodes = cfg.pretrain.nodes if stage == "pretrain" and cfg.stage.name == "pretrain" else cfg.tuning.nodes
    return int(nodes) * int(cfg.cluster.gpus_per_node)


def accumulation_steps(global_batch: int, micro_batch: int, world: int) -> int:
    """Gradient-accumulation steps that turn micro-batches on `world` ranks into the global batch."""
    return global_batch // (micro_batch * world)


def _batch_problems(prefix: str, opt, world: int, cfg_stage: str) -> list[str]:
    problems = []
    if opt.lr <= 0:
        problems.append(f"{prefix}.lr = {opt.lr} must be > 0 (the paper: 1e-4 stage 1, 2e-5 full, 1e-4 LoRA).")
    gbs, mbs = int(opt.global_batch_size), int(opt.micro_batch_size)
    if gbs <= 0 or mbs <= 0:
        problems.append(f"{prefix}.global_batch_size = {gbs} and {prefix}.micro_batch_size = {mbs} must be > 0.")
    elif gbs % (mbs * world):
        nodes_field = "pretrain.nodes" if cfg_stage == "pretrain" else "tuning.nodes"
        problems.append(
            f"{prefix}.global_batch_size = {gbs} is not divisible by {prefix}.micro_batch_size ({mbs}) × "
            f"world size ({world} = {nodes_field} × cluster.gpus_per_node): pick a global batch that is a "
            f"multiple of {mbs * world}, or change the micro-batch or node count."
        )
    if opt.epochs <= 0:
        problems.append(f"{prefix}.epochs = {opt.epochs} must be > 0.")
    return problems


def problems(cfg: DictConfig, stage1_exists: bool | None = None) -> list[str]:
    """Every problem of the config, each naming its fields and the fix; empty when valid.

    `stage1_exists` tells whether the stage-1 run this config needs is on disk (None = not checked).
    """
    out: list[str] = []
    t, ds = cfg.tuning, cfg.deepspeed
    stage = cfg.stage.name
    if stage not in STAGES:
        out.append(f"stage.name = {stage!r} must be one of {STAGES}.")
    if t.method not in METHODS:
        out.append(f"tuning.method = {t.method!r} must be one of {METHODS}.")
    if cfg.projector.type not in PROJECTORS:
        out.append(f"projector.type = {cfg.projector.type!r} must be one of {PROJECTORS}.")
    if cfg.model.template not in TEMPLATES:
        out.append(f"model.template = {cfg.model.template!r} must be one of {TEMPLATES}.")
    if t.method in ("lora", "qlora"):
        if t.rank <= 0:
            out.append(f"tuning.rank = {t.rank} must be > 0 for {t.method}: set tuning.rank=64 (the paper's).")
        if t.alpha <= 0:
            out.append(f"tuning.alpha = {t.alpha} must be > 0 for {t.method}: the paper uses 2 × tuning.rank.")
        if not 0 <= t.dropout < 1:
            out.append(f"tuning.dropout = {t.dropout} must be in [0, 1).")
    if t.method == "qlora":
        if ds.stage == 3:
            out.append(
                "tuning.method = qlora with deepspeed.stage = 3: 4-bit base weights cannot be partitioned by "
                "ZeRO-3. Use deepspeed=zero2 (the paper's choice for QLoRA) or deepspeed=none."
            )
        if t.bits != 4:
            out.append(f"tuning.bits = {t.bits} must be 4 for qlora (or use tuning=lora).")
    elif t.bits != 16:
        out.append(f"tuning.bits = {t.bits} with tuning.method = {t.method}: 4-bit needs tuning=qlora.")
    if ds.stage not in (0, 2, 3):
        out.append(f"deepspeed.stage = {ds.stage} must be 0 (none), 2 or 3.")
    v = cfg.vision
    if v.image_size % v.patch_size:
        out.append(f"vision.image_size = {v.image_size} must be a multiple of vision.patch_size = {v.patch_size}.")
    for key in ("data", "pretrain_data"):
        d = cfg[key]
        if d.image_size != v.image_size:
            out.append(
                f"{key}.image_size = {d.image_size} does not match the vision tower ({v.name}: "
                f"vision.image_size = {v.image_size}): remove the override or pick the tower trained at "
                f"{d.image_size} px (e.g. vision=clip_l14_{d.image_size})."
            )
        if d.image_aspect not in ("pad", "resize", "crop"):
            out.append(f"{key}.image_aspect = {d.image_aspect!r} must be pad, resize or crop.")
        if d.sharegpt_ratio < 0 or (d.sharegpt_ratio > 0 and not d.sharegpt_path):
            out.append(f"{key}.sharegpt_ratio = {d.sharegpt_ratio} needs >= 0 and a {key}.sharegpt_path.")
        if d.max_length > cfg.model.max_position_embeddings:
            out.append(
                f"{key}.max_length = {d.max_length} exceeds model.max_position_embeddings = "
                f"{cfg.model.max_position_embeddings}."
            )
    if stage in ("pretrain", "both"):
        out += _batch_problems("pretrain", cfg.pretrain, world_size(cfg, "pretrain"), stage)
    if stage in ("finetune", "both"):
        out += _batch_problems("tuning", t, world_size(cfg, "finetune"), stage)
    if cfg.trainer.warmup_ratio < 0 or cfg.trainer.warmup_ratio >= 1:
        out.append(f"trainer.warmup_ratio = {cfg.trainer.warmup_ratio} must be in [0, 1) (the paper: 0.03).")
    if cfg.trainer.projector_lr is not None and cfg.trainer.projector_lr <= 0:
        out.append(f"trainer.projector_lr = {cfg.trainer.projector_lr} must be > 0 or null.")
    if stage == "finetune" and not cfg.stage.projector_path and stage1_exists is False:
        from lmm.launch.identity import stage1_command

        out.append(
            "stage.name = finetune but no stage-1 projector: stage.projector_path is null and the stage-1 run "
            f"for this LLM, tower, projector, stage-1 data and seed does not exist. Produce it with:\n"
            f"    {stage1_command(cfg)}\n  or run both stages with stage=both, or set stage.projector_path."
        )
    return out


def validate(cfg: DictConfig, stage1_exists: bool | None = None) -> None:
    """Raise one ConfigError listing every problem of the config."""
    found = problems(cfg, stage1_exists)
    if found:
        raise ConfigError("Invalid config:\n  - " + "\n  - ".join(found))
