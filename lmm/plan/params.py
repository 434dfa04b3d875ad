"""Parameter counts of LLaVA's parts (LLaMA LLM, CLIP ViT, projector, LoRA), computed from the configs alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

from omegaconf import DictConfig

from lmm import towers
from lmm.tuning import tuning_method

# Module paths as transformers 5 names them inside `LlavaForConditionalGeneration`; PEFT matches
# `tuning.target_modules` against these with re.fullmatch, so the LoRA count follows the same regex.
_LLM_PREFIX = "model.language_model.layers.0"
_VISION_PREFIX = "model.vision_tower.vision_model.encoder.layers.0"


@dataclass(frozen=True)
class Linear:
    """One linear layer of a transformer block: its module path (layer 0), widths and bias."""

    path: str
    d_in: int
    d_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


def llm_block_linears(model: DictConfig) -> list[Linear]:
    """The seven linears of one LLaMA decoder block; k/v are narrower under grouped-query attention."""
    d, i = int(model.hidden_size), int(model.intermediate_size)
    head_dim = d // int(model.num_heads)
    kv = int(model.num_kv_heads or model.num_heads) * head_dim
    p = _LLM_PREFIX
    return [
        Linear(f"{p}.self_attn.q_proj", d, d),
        Linear(f"{p}.self_attn.k_proj", d, kv),
        Linear(f"{p}.self_attn.v_proj", d, kv),
        Linear(f"{p}.self_attn.o_proj", d, d),
        Linear(f"{p}.mlp.gate_proj", d, i),
        Linear(f"{p}.mlp.up_proj", d, i),
        Linear(f"{p}.mlp.down_proj", i, d),
    ]


def vision_block_linears(vision: DictConfig) -> list[Linear]:
    """The six linears (with biases) of one CLIP encoder block."""
    d, i = int(vision.hidden_size), int(vision.intermediate_size)
    p = _VISION_PREFIX
    return [
        *(Linear(f"{p}.self_attn.{n}", d, d, bias=True) for n in ("q_proj", "k_proj", "v_proj", "out_proj")),
        Linear(f"{p}.mlp.fc1", d, i, bias=True),
        Linear(f"{p}.mlp.fc2", i, d, bias=True),
    ]


def image_tokens(vision: DictConfig) -> int:
    """Tokens one image adds to the LLM's sequence: (image_size / patch_size)², plus CLS if it is kept."""
    return towers.image_tokens(vision.image_size, vision.patch_size, vision.feature_select)


def projector_linears(cfg: DictConfig) -> list[Linear]:
    d_v, d = int(cfg.vision.hidden_size), int(cfg.model.hidden_size)
    out = [Linear("model.multi_modal_projector.linear_1", d_v, d, bias=True)]
    if cfg.projector.type == "mlp2x_gelu":
        out.append(Linear("model.multi_modal_projector.linear_2", d, d, bias=True))
    return out


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one LLaVA model; `lora` is 0 unless the run's tuning method trains adapters."""

    llm: int  # embeddings + decoder blocks + final norm + lm_head (untied)
    llm_linear: int  # the decoder blocks' linears: the FLOP-carrying, LoRA-targetable, 4-bit-quantised part
    embed: int
    lm_head: int
    largest_llm_linear: int  # one block's widest linear (QLoRA dequantises one at a time)
    vision: int
    vision_linear: int
    projector: int
    lora: int  # every adapter parameter (DoRA's magnitudes included)
    lora_block_inputs: int  # Σ d_in of one block's LoRA-wrapped linears (what LoRA dropout copies)
    lora_block_outputs: int  # Σ d_out of one block's wrapped linears (the outputs DoRA keeps for its magnitude)
    lora_wrapped_linear: int  # the wrapped LLM linears' weights over all blocks (what DoRA's forward reruns)
    lora_block_modules: int  # how many linears of one block carry an adapter
    largest_layer: int  # the largest single module: what ZeRO-3 gathers whole

    @property
    def total(self) -> int:
        return self.llm + self.vision + self.projector + self.lora


def llm_params(model: DictConfig) -> int:
    """LLaMA: untied input embedding and lm_head, L blocks of 7 linears and 2 RMSNorms, a final RMSNorm."""
    d, v, layers = int(model.hidden_size), int(model.vocab_size), int(model.num_layers)
    block = sum(lin.params for lin in llm_block_linears(model)) + 2 * d
    return 2 * v * d + layers * block + d


def vision_params(vision: DictConfig) -> int:
    """CLIP ViT (`CLIPVisionModel`): patch conv (no bias), CLS and position embeddings, pre/post LayerNorm, blocks."""
    d, p = int(vision.hidden_size), int(vision.patch_size)
    positions = towers.patches(vision.image_size, p) + 1  # CLS has a position too
    embeddings = 3 * p * p * d + d + positions * d
    block = sum(lin.params for lin in vision_block_linears(vision)) + 2 * 2 * d
    return embeddings + 2 * 2 * d + int(vision.num_layers) * block


def lora_targets(cfg: DictConfig) -> tuple[list[Linear], list[Linear]]:
    """The linears of one LLM block and one CLIP block whose module path fully matches `tuning.target_modules`."""
    t = cfg.tuning
    if not tuning_method(t.method).adapter or int(t.rank) <= 0:
        return [], []
    pattern = re.compile(t.target_modules)
    return ([lin for lin in llm_block_linears(cfg.model) if pattern.fullmatch(lin.path)],
            [lin for lin in vision_block_linears(cfg.vision) if pattern.fullmatch(lin.path)])


def lora_params(cfg: DictConfig) -> int:
    """Adapters over all blocks, as the tuning method sizes them per wrapped linear (LoRA: r·(d_in + d_out))."""
    llm, vision = lora_targets(cfg)
    method, rank = tuning_method(cfg.tuning.method), int(cfg.tuning.rank)
    per_llm_block = sum(method.adapter_params(lin.d_in, lin.d_out, rank) for lin in llm)
    per_vision_block = sum(method.adapter_params(lin.d_in, lin.d_out, rank) for lin in vision)
    return per_llm_block * int(cfg.model.num_layers) + per_vision_block * int(cfg.vision.num_layers)


def count_params(cfg: DictConfig) -> ParamCounts:
    """All parameter counts of the run's model, from `model`, `vision`, `projector` and `tuning`; nothing loaded."""
    m = cfg.model
    d, v, layers = int(m.hidden_size), int(m.vocab_size), int(m.num_layers)
    linears = llm_block_linears(m)
    wrapped, _ = lora_targets(cfg)
    embed = v * d
    return ParamCounts(
        llm=llm_params(m),
        llm_linear=layers * sum(lin.params for lin in linears),
        embed=embed,
        lm_head=embed,
        largest_llm_linear=max(lin.params for lin in linears),
        vision=vision_params(cfg.vision),
        vision_linear=int(cfg.vision.num_layers) * sum(lin.params for lin in vision_block_linears(cfg.vision)),
        projector=sum(lin.params for lin in projector_linears(cfg)),
        lora=lora_params(cfg),
        lora_block_inputs=sum(lin.d_in for lin in wrapped),
        lora_block_outputs=sum(lin.d_out for lin in wrapped),
        lora_wrapped_linear=layers * sum(lin.params for lin in wrapped),
        lora_block_modules=len(wrapped),
        largest_layer=max(embed, max(lin.params for lin in linears)),
    )


def trainable_params(counts: ParamCounts, stage: str, method: str) -> int:
    """Stage 0 trains the LLM alone; stage 1 the projector; stage 2 the projector plus the LLM (full) or the
    adapters."""
    if stage == "stage0":
        return counts.llm
    if stage == "pretrain":
        return counts.projector
    if not tuning_method(method).adapter:
        return counts.projector + counts.llm
    return counts.projector + counts.lora
