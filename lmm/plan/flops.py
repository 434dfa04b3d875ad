"""Training FLOPs per sample and per stage, from first principles (matmuls only; 1 multiply-add = 2 FLOPs).

Per token, a linear with N weights costs 2N forward; its backward costs 2N for the gradient of its input
(activation gradient) plus 2N for the gradient of its weights. Here:
- The LLM's blocks and lm_head always need activation gradients: the projector *below* them is trained in
  both stages (and LoRA adapters sit in every block), so the gradient must reach the bottom of the LLM.
- Their weight gradients are computed only when the weights are trained (full fine-tuning). Frozen bases
  (stage 1, LoRA, QLoRA) skip that half; LoRA adapters pay their own full 6·r·(d_in + d_out) per token.
- Causal self-attention costs 2·d·s² per block per sequence forward (QKᵀ and AV, half the square masked
  by flash/SDPA kernels) and twice that backward (gradients of both operands); it has no weights.
- Gradient checkpointing (one checkpoint per decoder block, as transformers does) recomputes the blocks'
  forward once during backward; lm_head is not recomputed.
- The frozen CLIP tower runs forward only (nothing below it is trained, so no gradient, no recomputation),
  once per image: 2·N_linear·(n+1) + 4·d·(n+1)² per block for its bidirectional attention.
- The projector runs on the image tokens and needs a weight gradient but no input gradient.
- A method whose wrapped base linears run again under lora dropout (`TuningMethod.base_reruns`: DoRA, as PEFT
  runs it, on the dropped-out input for the magnitude-scaled part) pays their 2N forward and 2N
  activation-gradient FLOPs once more per rerun (recomputed too). DoRA's magnitudes' elementwise rescale counts
  like their parameters, inside the adapters' term; the weight norm ‖W + s·BA‖ it computes once per forward
  (≈ r·d_in·(d_in + d_out) per linear per micro-batch) is ignored, under 0.1 % of a sample's FLOPs at paper
  scale.
- A 4-bit QLoRA base multiplies in bf16 after dequantising, so its FLOPs equal LoRA's (no time factor: the
  paper measures QLoRA at 4.68 vs LoRA's 4.79 GPU-hours per node for 33B, equal within its noise, and the
  dequantisation cost roughly cancels ZeRO-2's saved parameter all-gathers).
Embedding look-ups, norms, activation functions and the optimizer step are memory-bound and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from lmm.plan.params import ParamCounts
from lmm.plan.workload import StageWorkload
from lmm.towers import patches
from lmm.tuning import tuning_method


@dataclass(frozen=True)
class SampleFlops:
    """FLOPs of one training sample, split by pass."""

    forward: float = 0.0
    backward: float = 0.0
    recompute: float = 0.0
    vision: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute + self.vision

    def __add__(self, other: SampleFlops) -> SampleFlops:
        return SampleFlops(self.forward + other.forward, self.backward + other.backward,
                           self.recompute + other.recompute, self.vision + other.vision)

    def scaled(self, k: float) -> SampleFlops:
        return SampleFlops(self.forward * k, self.backward * k, self.recompute * k, self.vision * k)


def vision_flops(cfg: DictConfig, counts: ParamCounts) -> float:
    """Forward FLOPs of the frozen CLIP tower for one image (CLS token included)."""
    v = cfg.vision
    tokens = patches(v.image_size, v.patch_size) + 1  # the tower runs its CLS token whatever LLaVA keeps
    patch_embed = 2 * 3 * int(v.patch_size) ** 2 * int(v.hidden_size) * (tokens - 1)
    attention = 4 * int(v.num_layers) * int(v.hidden_size) * tokens**2
    return 2 * counts.vision_linear * tokens + attention + patch_embed


def sample_flops(cfg: DictConfig, counts: ParamCounts, w: StageWorkload, seq: float, images: int) -> SampleFlops:
    """FLOPs to train on one sample of `seq` tokens carrying `images` images."""
    m = cfg.model
    dense = 2 * counts.llm_linear * seq  # the blocks' linears
    attention = 2 * int(m.num_layers) * int(m.hidden_size) * seq**2  # causal QKᵀ and AV
    head = 2 * counts.lm_head * seq
    method = tuning_method(w.method) if w.stage == "finetune" else None
    adapter = method is not None and method.adapter
    lora = 2 * counts.lora * seq if adapter else 0.0
    if adapter and w.lora_dropout > 0:
        dense += method.base_reruns * 2 * counts.lora_wrapped_linear * seq  # DoRA's rerun of the wrapped linears
    projector = 2 * counts.projector * w.image_tokens * images

    forward = dense + attention + head + lora + projector
    activation_grad = dense + 2 * attention + head + lora
    trains_llm = w.stage == "finetune" and not adapter
    weight_grad = projector + (2 * counts.llm_linear * seq + head if trains_llm else lora)
    recompute = dense + attention + lora if w.gradient_checkpointing else 0.0
    vision = vision_flops(cfg, counts) * images
    return SampleFlops(forward, activation_grad + weight_grad, recompute, vision)


def epoch_flops(cfg: DictConfig, counts: ParamCounts, w: StageWorkload) -> SampleFlops | None:
    """FLOPs of all the stage's epochs (image samples plus mixed-in text-only samples); None if unknown."""
    if w.image_samples is None:
        return None
    per_image_sample = sample_flops(cfg, counts, w, w.seq_image, images=1)
    per_text_sample = sample_flops(cfg, counts, w, w.seq_text_only, images=0)
    return (per_image_sample.scaled(w.image_samples) + per_text_sample.scaled(w.text_only_samples)).scaled(w.epochs)
