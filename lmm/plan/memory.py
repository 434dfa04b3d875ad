"""Peak GPU memory per rank of one stage: weights, gradients, optimizer states, activations and buffers.

Sizes are in bytes and reported in GiB (what nvidia-smi calls GB: an "A100-80G" has 80 GiB). The sum of
the five parts is a deliberately conservative peak: the fp32 gradient copy of the optimizer step and the
activations do not really coexist, and micro-batches are sized at data.max_length (the longest batch the
collator can build), not at the mean sample.

Model states (bf16 mixed precision, Adam):
- weights: bf16 (2 B) per parameter; a QLoRA base stores its block linears in 4-bit NF4 (0.5 B) plus the
  quantisation constants (one absmax per 64 weights: fp32, or 8-bit + fp32 per 256 blocks when double-
  quantised); embeddings, lm_head, norms, CLIP and the projector stay bf16. Only ZeRO-3 partitions them.
- gradients of the trained parameters: bf16 (2 B) plus the fp32 copy (4 B) the optimizer step makes,
  partitioned by ZeRO-2. ZeRO-3 converts its bf16 gradient partition to fp32 one sub-group at a time:
  4 B in all, as DeepSpeed's estimator counts it (18 B per parameter with weights and optimizer).
- optimizer states of the trained parameters: fp32 master copy + Adam m and v (12 B), partitioned by ZeRO.
  (Without DeepSpeed, AMP with fp32 weights + fp32 gradients + DDP buckets + Adam also totals 20 B.)
These match DeepSpeed's own estimators (`ds_estimate.py`) for the trained part, which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from lmm.plan.ds_estimate import zero_model_states_bytes
from lmm.plan.host import host_ram_gb
from lmm.plan.params import ParamCounts, count_params, trainable_params
from lmm.plan.workload import StageWorkload, workload
from lmm.tuning import tuning_method

GIB = 2**30
# CUDA context, cuBLAS workspaces, NCCL communicators and allocator slack, per GPU.
FRAMEWORK_OVERHEAD = 2 * GIB
# DeepSpeed's defaults (deepspeed/runtime/zero/config.py), in elements: gradient reduce bucket, ZeRO-2's
# all-gather bucket for the updated weights, ZeRO-3's parameter prefetch bucket.
DS_REDUCE_BUCKET = 5e8
DS_ALLGATHER_BUCKET = 5e8
DS_PREFETCH_BUCKET = 5e7
# NF4: 4 bits per weight + one absmax per 64-weight block (fp32; or 8-bit with an fp32 scale per 256
# blocks under double quantisation).
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256


def nf4_bytes_per_param(double_quant: bool) -> float:
    absmax = 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DQ_BLOCK) if double_quant else 4 / NF4_BLOCK
    return 0.5 + absmax


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak memory of one GPU for one stage, in bytes, and the GPU it must fit."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    buffers: float
    gpu_mem: float  # bytes; 0 = unknown (cluster.gpu_mem_gb unset)
    # DeepSpeed's estimator for the same model states (ZeRO-2/3 with bf16 only), incl. ZeRO-3's gathered layer.
    model_states_deepspeed: float | None = None
    zero3_gathered: float = 0.0  # part of `buffers`: the layer ZeRO-3 gathers whole (DeepSpeed's 4 B × largest)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.buffers

    @property
    def model_states(self) -> float:
        """Weights + gradients + optimizer states (+ ZeRO-3's gathered layer): what DeepSpeed's estimators cover."""
        return self.weights + self.gradients + self.optimizer + self.zero3_gathered

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_mem <= 0 else self.total <= self.gpu_mem

    def gib(self, part: str) -> float:
        return getattr(self, part) / GIB


def _frozen_weight_bytes(counts: ParamCounts, w: StageWorkload, cfg: DictConfig, elem: int) -> float:
    """Bytes of the parameters the stage does not train."""
    if w.stage == "stage0":
        return 0.0  # the LLM alone, all of it trained
    frozen_bf16 = counts.vision
    if w.stage == "pretrain":
        return (frozen_bf16 + counts.llm) * elem
    method = tuning_method(w.method)
    if not method.adapter:
        return frozen_bf16 * elem
    if method.quantized:
        nf4 = nf4_bytes_per_param(bool(cfg.tuning.double_quant))
        return (frozen_bf16 + counts.llm - counts.llm_linear) * elem + counts.llm_linear * nf4
    return (frozen_bf16 + counts.llm) * elem


def activation_bytes(cfg: DictConfig, counts: ParamCounts, w: StageWorkload) -> float:
    """Activations saved for backward for a micro-batch of the longest samples (SDPA/flash attention).

    Per token and decoder block (e = 2 B in bf16): each RMSNorm keeps its fp32 input (4d) and bf16 output
    (e·d, the next linears' input); attention keeps q, k, v after RoPE, its output and o_proj's input
    (e·(3d + 2d_kv)); the SwiGLU MLP keeps gate, silu(gate), up and their product (4e·i). LoRA with dropout
    adds a mask (1 B) and a dropped copy (e) of each wrapped linear's input, and A's output (e·r); DoRA also
    keeps each wrapped linear's base and adapter outputs for its magnitudes' gradient (`kept_outputs` × e·d_out).
    With gradient checkpointing only each block's input (e·d) is kept, plus one block recomputed with its
    gradients during backward; without it, all blocks. The logits add bf16 values, their fp32 upcast for
    the loss and both gradients (12 B per vocabulary entry and token). The frozen CLIP forward keeps nothing.
    """
    m = cfg.model
    e = 4 if w.precision == "fp32" else 2
    d, i, layers, vocab = int(m.hidden_size), int(m.intermediate_size), int(m.num_layers), int(m.vocab_size)
    d_kv = int(m.num_kv_heads or m.num_heads) * (d // int(m.num_heads))
    per_block = 2 * (4 * d + e * d) + e * (3 * d + 2 * d_kv) + 4 * e * i
    method = tuning_method(w.method) if w.stage == "finetune" else None
    if method is not None and method.adapter:
        dropout_copy = (1 + e) * counts.lora_block_inputs if w.lora_dropout > 0 else 0
        per_block += dropout_copy + e * w.lora_rank * counts.lora_block_modules
        per_block += method.kept_outputs * e * counts.lora_block_outputs
    tokens = w.micro_batch * w.seq_peak
    if w.gradient_checkpointing:
        blocks = tokens * (layers * e * d + 2 * per_block)
    else:
        blocks = tokens * (layers + 1) * per_block
    logits = tokens * vocab * (2 * e + 8 if e == 2 else 8)
    return float(blocks + logits)


def estimate_memory(cfg: DictConfig, counts: ParamCounts, w: StageWorkload) -> MemoryEstimate:
    """Per-GPU memory of the stage under its tuning method, ZeRO stage, world size and micro-batch."""
    zero = w.zero_stage
    world = w.world
    bf16 = w.precision == "bf16"
    elem = 2 if bf16 else 4
    trained = trainable_params(counts, w.stage, w.method)

    weights = trained * elem + _frozen_weight_bytes(counts, w, cfg, elem)
    gradients = trained * ((4 if zero == 3 else 2 + 4) if bf16 else 4)
    optimizer = trained * (12 if bf16 else 8)
    if zero == 3:
        weights /= world
    if zero >= 2:
        gradients /= world
    if zero >= 1:
        optimizer /= world

    buffers = float(FRAMEWORK_OVERHEAD)
    gathered = 0.0
    if zero == 2:
        buffers += min(DS_REDUCE_BUCKET + DS_ALLGATHER_BUCKET, 2 * trained) * elem
    elif zero == 3:
        gathered = 4.0 * counts.largest_layer  # DeepSpeed's estimator term
        buffers += gathered + (min(DS_REDUCE_BUCKET, trained) + DS_PREFETCH_BUCKET) * elem
    method = tuning_method(w.method) if w.stage == "finetune" else None
    if method is not None:  # QLoRA's dequantised weight, DoRA's W + s·BA and B·A (TuningMethod)
        buffers += method.materialised_weights * counts.largest_llm_linear * elem

    ds = None
    if bf16 and zero in (2, 3):
        frozen = _frozen_weight_bytes(counts, w, cfg, elem) / (world if zero == 3 else 1)
        ds = zero_model_states_bytes(zero, trained, counts.largest_layer, int(cfg.cluster.gpus_per_node),
                                     w.nodes) + frozen
    return MemoryEstimate(
        weights=weights, gradients=gradients, optimizer=optimizer,
        activations=activation_bytes(cfg, counts, w), buffers=buffers,
        gpu_mem=memory_budget_gb(cfg) * GIB, model_states_deepspeed=ds, zero3_gathered=gathered,
    )


def memory_budget_gb(cfg: DictConfig) -> float:
    """Memory of one rank: `cluster.gpu_mem_gb`; on a CPU cluster without it, this machine's RAM shared by the
    node's processes (the runs of `cluster=local` and the local SLURM cluster run here); 0 = unknown."""
    if cfg.cluster.gpu_mem_gb:
        return float(cfg.cluster.gpu_mem_gb)
    if cfg.cluster.gpu_type == "cpu":
        return host_ram_gb() / max(int(cfg.cluster.gpus_per_node), 1)
    return 0.0


def stage_zero(cfg: DictConfig, stage: str) -> int:
    """The ZeRO stage a stage trains under: stage 2 = `deepspeed.stage`; stage 1 = `pretrain.zero_stage`, or
    when null the run's `deepspeed.stage` raised to ZeRO-3 if that is predicted not to fit (stage 1 holds the
    whole bf16 LLM on every GPU unless ZeRO-3 partitions it, whatever the stage-2 method)."""
    if stage == "stage0":
        return int(cfg.stage0.zero_stage)
    base = int(cfg.deepspeed.stage)
    if stage != "pretrain":
        return base
    if cfg.pretrain.zero_stage is not None:
        return int(cfg.pretrain.zero_stage)
    if base == 3:
        return base
    fits = estimate_memory(cfg, count_params(cfg), workload(cfg, "pretrain", zero_stage=base)).fits
    return 3 if fits is False else base
