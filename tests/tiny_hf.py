"""Tiny random-init Hugging Face models for the evaluation tests: a bare LLaMA and a LLaVA in the HF format."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from lmm.data.tokenizer import IMAGE_TOKEN


def llama_config(tokenizer, **overrides) -> LlamaConfig:
    settings = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "max_position_embeddings": 2048, "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    return LlamaConfig(**{**settings, **overrides})


def tiny_llm(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(tokenizer)).eval()


def tiny_llava(tokenizer, seed: int = 0) -> LlavaForConditionalGeneration:
    """A LLaVA with transformers' own two-layer projector, a 32-px CLIP tower (16 image tokens)."""
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=llama_config(tokenizer),
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def save_tiny_llm(folder: Path, tokenizer, seed: int = 0) -> Path:
    """A bare LLM folder as `save_pretrained` writes it (config.json, safetensors, tokenizer)."""
    tiny_llm(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def save_tiny_llava(folder: Path, tokenizer, seed: int = 0) -> Path:
    """A LLaVA folder in the Hugging Face format (as llava-hf/llava-1.5-13b-hf): model, tokenizer, processor."""
    tiny_llava(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)
