"""Loads trained stage-2 checkpoints (full folders or LoRA adapters) and exports merged folders."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from lmm.layout import adapter_dir, model_dir, projector_file
from lmm.models.build import load_projector
from lmm.models.llava import LmmLlava
from lmm.training.speed import compute_dtype


def _base_folder(run_dir: Path) -> Path:
    """The assembled base a run trained from (recorded in its results.json)."""
    record = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    base = record.get("assembled") or record.get("finetune", {}).get("assembled")
    if not base:
        raise FileNotFoundError(f"{run_dir} has no results.json naming its assembled base model")
    return Path(base)


def load_adapter_model(base: Path, run_dir: Path, dtype=None, merge: bool = False, **placement):
    """Base LLaVA + the run's trained projector + its LoRA adapters (merged into the base on request).

    `placement`: from_pretrained's device_map / max_memory / offload_folder (PEFT puts each adapter beside
    the layer it wraps).
    """
    from peft import PeftModel

    model = LmmLlava.from_pretrained(base, dtype=dtype, **placement)
    load_projector(model, projector_file(run_dir))
    model = PeftModel.from_pretrained(model, adapter_dir(run_dir))
    return model.merge_and_unload() if merge else model


def export_merged(cfg: DictConfig, run_dir: Path) -> Path:
    """Fold LoRA into a full-precision copy of the base (QLoRA too) and save a Hugging Face folder."""
    from transformers import AutoTokenizer, CLIPImageProcessor

    from lmm.models.assemble import assemble

    base = assemble(cfg)
    model = load_adapter_model(base, run_dir, dtype=compute_dtype(cfg), merge=True)
    out = model_dir(run_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    CLIPImageProcessor.from_pretrained(base).save_pretrained(out)
    return out


def load_trained(run_dir: Path, dtype=None, device_map=None, max_memory=None, offload_folder=None, **kwargs):
    """The trained stage-2 model of a run folder: its merged/full folder, or base + adapters.

    Without `device_map` it loads whole on the CPU (the caller moves it); with one, accelerate places it
    as it loads (e.g. "auto" with `max_memory` per GPU: layers spread over the GPUs), so a model larger than
    one GPU never has to exist whole anywhere. Other keywords go to from_pretrained (attn_implementation).
    """
    run_dir = Path(run_dir)
    placement = {k: v for k, v in (("device_map", device_map), ("max_memory", max_memory),
                                   ("offload_folder", offload_folder)) if v is not None}
    if (model_dir(run_dir) / "config.json").exists():
        return LmmLlava.from_pretrained(model_dir(run_dir), dtype=dtype, **placement, **kwargs)
    if adapter_dir(run_dir).is_dir():
        return load_adapter_model(_base_folder(run_dir), run_dir, dtype=dtype, **placement, **kwargs)
    raise FileNotFoundError(f"{run_dir} holds no trained model (model/ or adapter/)")


def gpu_memory_limits(per_gpu_gb: float | None) -> dict:
    """accelerate's max_memory over every visible GPU: `per_gpu_gb` GiB each, or 85 % of each one's memory
    (the rest holds activations and the beams' KV cache). No CPU entry: a model that does not fit the GPUs
    fails to load instead of crawling through CPU offload."""
    import torch

    limits = {}
    for index in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(index).total_memory
        limits[index] = int(per_gpu_gb * 2**30) if per_gpu_gb else int(0.85 * total)
    return limits


def eval_placement(cfg: DictConfig) -> dict:
    """load_trained keywords that place the evaluated model: `eval.device_map=auto` shards it over the GPUs
    within `eval.max_memory_per_gpu_gb`; `none` puts it whole on GPU 0. On a CPU-only machine: nothing (it
    loads on the CPU as before)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    if cfg.eval.device_map == "none":
        return {"device_map": {"": 0}}
    if cfg.eval.device_map != "auto":
        raise ValueError(f"eval.device_map={cfg.eval.device_map!r}: choose auto or none")
    return {"device_map": "auto", "max_memory": gpu_memory_limits(cfg.eval.max_memory_per_gpu_gb)}


def load_for_eval(cfg: DictConfig, run_dir: Path):
    """The run's trained model in eval mode, in the run's dtype and attention kernel, placed for generation:
    sharded over the GPUs (eval_placement), or whole on the CPU where there is none."""
    from lmm.training.speed import model_load_kwargs

    placement = eval_placement(cfg)
    model = load_trained(run_dir, dtype=compute_dtype(cfg), **placement, **model_load_kwargs(cfg))
    if not placement:
        model.to("cpu")
    return model.eval()
