"""Assembles an LLM and a CLIP tower into one LLaVA checkpoint folder, once per (LLM, tower, projector)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from lmm.data.tokenizer import image_token_id, load_tokenizer
from lmm.filelock import exclusive
from lmm.launch.identity import stage0_active, stage0_dir, stage0_id
from lmm.layout import model_dir
from lmm.models.llava import LinearProjector, LmmLlava
from lmm.towers import image_tokens

log = logging.getLogger(__name__)
MARKER = "ASSEMBLED"


class MissingCheckpoint(FileNotFoundError):
    """A preset points at weights that are not there (e.g. the paper's unreleased Vicuna-65B)."""


def num_image_tokens(vision: DictConfig) -> int:
    """Image tokens per image (lmm.towers): 256 at 224 px, 576 at 336 px with 14 px patches (CLS dropped)."""
    return image_tokens(vision.image_size, vision.patch_size, vision.feature_select)


def assembled_dir(cfg: DictConfig) -> Path:
    """Cache folder of the assembled checkpoint; its name hashes everything that shapes the weights."""
    spec = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("vision", "projector")}
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("recipe", None)
    model.pop("base", None)  # the LLM it makes is named by the stage-0 id below
    spec.update(model=model, seed=int(cfg.seed))
    if stage0_active(cfg):
        spec["stage0"] = stage0_id(cfg)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{cfg.model.name}-{cfg.vision.name}-{cfg.projector.type}-{digest}"
    return Path(cfg.paths.cache_dir).expanduser().resolve() / "assembled" / name


def llm_source(cfg: DictConfig) -> str | None:
    """Hub id or folder of the LLM (stage 0's model/ when stage 0 makes it); None for random init. Fails clearly
    for missing local-only weights."""
    m = cfg.model
    if stage0_active(cfg):
        return str(model_dir(stage0_dir(cfg)))  # the Hugging Face LLM folder stage 0 writes
    if m.local_only and (not m.path or not Path(m.path).is_dir()):
        raise MissingCheckpoint(
            f"model={m.name} needs a local checkpoint folder (no public weights exist), got model.path = "
            f"{m.path!r}. Set LMM_VICUNA_65B=/path/to/vicuna-65b or paths.vicuna_65b=/path/to/vicuna-65b, or "
            f"model.base=<base LLM hub id or folder> to train it first (stage 0)."
        )
    return m.path


def _llm(cfg: DictConfig, source: str | None, vocab_size: int) -> LlamaForCausalLM:
    if source:
        llm = LlamaForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    else:
        m = cfg.model
        llm = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
            num_key_value_heads=m.num_kv_heads or m.num_heads, max_position_embeddings=m.max_position_embeddings,
            rms_norm_eps=m.rms_norm_eps, tie_word_embeddings=False,
        ))
    if llm.get_input_embeddings().num_embeddings < vocab_size:
        # New rows (the <image> token) start at the mean embedding; padded to a multiple of 64 for speed.
        llm.resize_token_embeddings(vocab_size, pad_to_multiple_of=64 if source else None)
    return llm


def _tower(cfg: DictConfig) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    v = cfg.vision
    if v.path:
        return CLIPVisionModel.from_pretrained(v.path), CLIPImageProcessor.from_pretrained(v.path)
    config = CLIPVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                              num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
                              image_size=v.image_size, patch_size=v.patch_size)
    size = v.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPVisionModel(config), processor


def _build(cfg: DictConfig, out: Path) -> None:
    source = llm_source(cfg)  # first: a missing local checkpoint fails before anything is fetched
    tokenizer = load_tokenizer(cfg.model.tokenizer or source, cache_dir=cfg.paths.cache_dir)
    torch.manual_seed(int(cfg.seed))
    llm = _llm(cfg, source, len(tokenizer))
    tower, processor = _tower(cfg)
    config = LlavaConfig(
        vision_config=tower.config, text_config=llm.config, image_token_index=image_token_id(tokenizer),
        image_seq_length=num_image_tokens(cfg.vision), vision_feature_layer=int(cfg.vision.feature_layer),
        vision_feature_select_strategy=cfg.vision.feature_select, projector_hidden_act="gelu",
        projector_type=cfg.projector.type, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device("meta"):
        model = LmmLlava(config)
    # Only the projector is new: initialise it for real, take every other weight from its checkpoint.
    if cfg.projector.type == "linear":
        projector = LinearProjector(config.vision_config.hidden_size, config.text_config.hidden_size)
    else:
        projector = LlavaMultiModalProjector(config)
    state = {f"model.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    state.update({f"model.language_model.{k}": v for k, v in llm.model.state_dict().items()})
    state.update({f"model.multi_modal_projector.{k}": v for k, v in projector.state_dict().items()})
    state["lm_head.weight"] = llm.lm_head.weight
    model.load_state_dict(state, assign=True, strict=True)
    model.to(torch.bfloat16 if source else torch.float32)  # a checkpoint (or stage 0's LLM): bf16
    model.save_pretrained(out, is_main_process=True)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)


def assemble(cfg: DictConfig) -> Path:
    """The assembled checkpoint folder (CLIP + projector + LLM + tokenizer + image processor), built once."""
    out = assembled_dir(cfg)
    if (out / MARKER).exists():
        return out
    llm_source(cfg)  # a missing local-only checkpoint fails here, before the lock
    if stage0_active(cfg) and not (stage0_dir(cfg) / "DONE").exists():
        raise MissingCheckpoint(f"model={cfg.model.name}: its LLM comes from stage 0, which has not finished "
                                f"({stage0_dir(cfg)}): train it first with stage=stage0 (or stage=both).")
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not distributed or dist.get_rank() == 0:
        # The lock also serialises separate jobs (e.g. a grid) that need the same assembled model.
        with exclusive(out.with_suffix(".lock")):
            if not (out / MARKER).exists():
                log.info("assembling %s", out)
                _build(cfg, out)
                (out / MARKER).write_text("ok\n")
    if distributed:
        dist.barrier()
    return out
