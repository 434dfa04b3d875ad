"""What one training stage processes: samples, tokens per sample, batch, world size and what it trains."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from lmm.launch.resources import world_size
from lmm.plan.params import image_tokens
from lmm.tuning import tuning_method

# Mean tokens of one text-only ShareGPT conversation, an order-of-magnitude estimate (the paper does not
# give it): Vicuna's ShareGPT data is cut into chunks of at most 2048 tokens, and the 370M training tokens
# the paper quotes for Vicuna-33B (footnote 2), read as ~125K conversations × 3 epochs, give ~1,000 tokens
# per conversation. Read from `data.sharegpt_mean_text_tokens` instead once that config field exists.
SHAREGPT_MEAN_TEXT_TOKENS = 1000.0
# Memory is sized for the longest micro-batch, not the mean one. Without a per-data-set maximum in the
# config, the longest text is taken as this multiple of the mean, capped at data.max_length: LLaVA-80K's
# long conversations (4 × 380 + 576 image tokens) then fill the 2048-token window, as they do, while
# LAION-CC-SBU's one-line BLIP captions (≈16 tokens on average) stay short (576 + 64).
PEAK_TEXT_FACTOR = 4.0


@dataclass(frozen=True)
class StageWorkload:
    """The inputs of the memory and time models for one stage of one run."""

    stage: str  # pretrain | finetune
    method: str  # projector (stage 1) | a tuning method's name (lmm.tuning.METHODS)
    data_name: str
    image_samples: int | None  # per epoch; None = unknown (data.num_samples unset)
    text_only_samples: int  # mixed-in ShareGPT conversations per epoch
    epochs: float
    image_tokens: int
    seq_image: float  # mean sequence of an image sample: image tokens + mean text, capped at max_length
    seq_text_only: float  # mean sequence of a text-only sample
    seq_peak: int  # the longest sample (memory is sized for micro-batches of it): see PEAK_TEXT_FACTOR
    micro_batch: int
    global_batch: int
    nodes: int
    world: int
    gradient_checkpointing: bool
    precision: str  # bf16 | fp32
    lora_rank: int
    lora_dropout: float
    zero_stage: int  # DeepSpeed ZeRO stage of this stage (0 = none)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def samples(self) -> int | None:
        return None if self.image_samples is None else self.image_samples + self.text_only_samples

    @property
    def optimizer_steps(self) -> int | None:
        if self.samples is None:
            return None
        return int(self.samples * self.epochs // self.global_batch)


def stages_of(cfg: DictConfig) -> list[str]:
    """The stages `stage.name` runs, in order; stage 0 first where the job trains a stage-0 LLM (when it is missing:
    the planner marks it reused when it is done)."""
    from lmm.stage0 import RUNS_STAGE0_FIRST, stage0_in_job

    stages = {"stage0": ["stage0"], "pretrain": ["pretrain"], "finetune": ["finetune"],
              "both": ["pretrain", "finetune"]}[cfg.stage.name]
    if cfg.stage.name in RUNS_STAGE0_FIRST and stage0_in_job(cfg):
        stages = ["stage0", *stages]
    return stages


def _configured_zero(cfg: DictConfig, stage: str) -> int:
    if stage == "pretrain" and cfg.pretrain.zero_stage is not None:
        return int(cfg.pretrain.zero_stage)
    return int(cfg.deepspeed.stage)


def precision_of(cfg: DictConfig) -> str:
    """`auto` is bf16 on the GPUs the planner sizes for, fp32 on a CPU cluster (as training does there)."""
    if cfg.trainer.precision == "fp32" or (cfg.trainer.precision == "auto" and cfg.cluster.gpu_type == "cpu"):
        return "fp32"
    return "bf16"


def workload(cfg: DictConfig, stage: str, zero_stage: int | None = None) -> StageWorkload:
    """Read the stage's data, optimisation and parallelism settings from the run config.

    `zero_stage`: the stage's ZeRO stage; None = stage 2's `deepspeed.stage`, or stage 1's explicit
    `pretrain.zero_stage` (else `deepspeed.stage`; `lmm.plan.memory.stage_zero` resolves stage 1's automatic choice).
    """
    if stage == "stage0":
        return _stage0_workload(cfg, zero_stage)
    data = cfg.pretrain_data if stage == "pretrain" else cfg.data
    opt = cfg.pretrain if stage == "pretrain" else cfg.tuning
    method = "projector" if stage == "pretrain" else cfg.tuning.method
    notes: list[str] = []
    max_len = int(data.max_length)
    img = image_tokens(cfg.vision)

    samples = _train_samples(data, "pretrain_data" if stage == "pretrain" else "data", notes)
    text = data.mean_text_tokens
    if text is None:
        text = max(max_len - img, 0)
        notes.append(f"{data.name}: mean_text_tokens unset, assumed every sample fills max_length {max_len}")
    text_only = round(float(data.sharegpt_ratio) * samples) if samples is not None else 0
    sharegpt_text = float(data.get("sharegpt_mean_text_tokens") or SHAREGPT_MEAN_TEXT_TOKENS)
    peak_text = data.get("max_text_tokens") or PEAK_TEXT_FACTOR * float(text)
    peak = img + peak_text
    if text_only:
        peak = max(peak, PEAK_TEXT_FACTOR * sharegpt_text)

    world = world_size(cfg, stage)
    t = cfg.tuning
    adapter = stage != "pretrain" and tuning_method(t.method).adapter
    return StageWorkload(
        stage=stage,
        method=method,
        data_name=str(data.name),
        image_samples=samples,
        text_only_samples=text_only,
        epochs=float(opt.epochs),
        image_tokens=img,
        seq_image=min(img + float(text), max_len),
        seq_text_only=min(float(sharegpt_text), max_len),
        seq_peak=int(min(peak, max_len)),
        micro_batch=int(opt.micro_batch_size),
        global_batch=int(opt.global_batch_size),
        nodes=world // int(cfg.cluster.gpus_per_node),
        world=world,
        gradient_checkpointing=bool(cfg.trainer.gradient_checkpointing),
        precision=precision_of(cfg),
        lora_rank=int(t.rank) if adapter else 0,
        lora_dropout=float(t.dropout) if adapter else 0.0,
        zero_stage=int(zero_stage if zero_stage is not None else _configured_zero(cfg, stage)),
        notes=tuple(notes),
    )


def _train_samples(data: DictConfig, field: str, notes: list[str]) -> int | None:
    """Training samples of a data section (`field` names it): the synthetic set's size, `num_samples`, or None
    with a note when unset (no time or cost then)."""
    if data.kind == "synthetic":
        return int(data.synthetic_num_train)
    if data.num_samples is not None:
        return int(data.num_samples)
    notes.append(f"{field}.num_samples unset: no time or cost")
    return None


def _stage0_workload(cfg: DictConfig, zero_stage: int | None) -> StageWorkload:
    """Stage 0: full fine-tuning of the LLM alone on text-only ShareGPT chunks (no image tokens, no tower)."""
    s, data = cfg.stage0, cfg.stage0.data
    max_len = int(data.max_length)
    notes: list[str] = []
    samples = _train_samples(data, "stage0.data", notes)
    text = data.mean_text_tokens
    if text is None:
        text = max_len
        notes.append(f"{data.name}: mean_text_tokens unset, assumed every sample fills max_length {max_len}")
    world = world_size(cfg, "stage0")
    return StageWorkload(
        stage="stage0", method="full", data_name=str(data.name),
        image_samples=0 if samples is not None else None, text_only_samples=samples or 0,
        epochs=float(s.epochs), image_tokens=0, seq_image=0.0, seq_text_only=min(float(text), max_len),
        seq_peak=int(min(PEAK_TEXT_FACTOR * float(text), max_len)),
        micro_batch=int(s.micro_batch_size), global_batch=int(s.global_batch_size),
        nodes=world // int(cfg.cluster.gpus_per_node), world=world,
        gradient_checkpointing=bool(s.gradient_checkpointing), precision=precision_of(cfg),
        lora_rank=0, lora_dropout=0.0,
        zero_stage=int(zero_stage if zero_stage is not None else s.zero_stage), notes=tuple(notes),
    )
