"""Loads trained stage-2 checkpoints (full folders or LoRA adapters) and exports merged folders."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from lmm.models.build import compute_dtype, load_projector
from lmm.models.llava import LmmLlava


def _base_folder(run_dir: Path) -> Path:
    """The assembled base a run trained from (recorded in its results.json)."""
    record = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    base = record.get("assembled") or record.get("finetune", {}).get("assembled")
    if not base:
        raise FileNotFoundError(f"{run_dir} has no results.json naming its assembled base model")
    return Path(base)


def load_adapter_model(base: Path, run_dir: Path, dtype=None, merge: bool = False):
    """Base LLaVA + the run's trained projector + its LoRA adapters (merged into the base on request)."""
    from peft import PeftModel

    model = LmmLlava.from_pretrained(base, dtype=dtype)
    load_projector(model, run_dir / "projector.safetensors")
    model = PeftModel.from_pretrained(model, run_dir / "adapter")
    return model.merge_and_unload() if merge else model


def export_merged(cfg: DictConfig, run_dir: Path) -> Path:
    """Fold LoRA into a full-precision copy of the base (QLoRA too) and save a Hugging Face folder."""
    from transformers import AutoTokenizer, CLIPImageProcessor

    from lmm.models.assemble import assemble

    base = assemble(cfg)
    model = load_adapter_model(base, run_dir, dtype=compute_dtype(cfg), merge=True)
    out = run_dir / "model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    CLIPImageProcessor.from_pretrained(base).save_pretrained(out)
    return out


def load_trained(run_dir: Path, dtype=None):
    """The trained stage-2 model of a run folder: its merged/full folder, or base + adapters."""
    run_dir = Path(run_dir)
    if (run_dir / "model" / "config.json").exists():
        return LmmLlava.from_pretrained(run_dir / "model", dtype=dtype)
    if (run_dir / "adapter").is_dir():
        return load_adapter_model(_base_folder(run_dir), run_dir, dtype=dtype)
    raise FileNotFoundError(f"{run_dir} holds no trained model (model/ or adapter/)")
