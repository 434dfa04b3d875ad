"""Stage 0's rules: when a run trains its LLM from `model.base` first, and the checks of that setting."""

from __future__ import annotations

from omegaconf import DictConfig

from lmm.launch.identity import stage0_active

# Stage names (`stage.name`) whose job trains a missing stage 0 before anything else.
RUNS_STAGE0_FIRST = ("both", "pretrain")


def stage0_in_job(cfg: DictConfig) -> bool:
    """Whether this job may train stage 0: `stage=stage0`, or stage 1 (alone or before stage 2) on a stage-0 LLM."""
    return cfg.stage.name == "stage0" or (cfg.stage.name in RUNS_STAGE0_FIRST and stage0_active(cfg))


def stage0_problems(cfg: DictConfig, world: int) -> list[str]:
    """Every problem of the stage-0 settings (each naming its fields and the fix); empty when valid."""
    from lmm.validate import LR_SCHEDULERS, _batch_problems

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
