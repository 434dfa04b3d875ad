"""The training data of a stage: records (generated, loaded, mixed), dataset, collator and sampler."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig

from lmm.data.collator import LlavaCollator
from lmm.data.dataset import LlavaDataset, load_records, load_sharegpt, mix
from lmm.data.sampler import ModalityLengthGroupedSampler
from lmm.filelock import exclusive
from lmm.launch.resources import world_size
from lmm.training.arguments import stage_data, stage_optim

# Synthetic images are drawn larger than the tiny towers so a higher resolution sees more detail.
SYNTHETIC_IMAGE_SIZE = 64


@dataclass
class TrainingData:
    dataset: LlavaDataset
    collator: LlavaCollator
    sampler_factory: Callable[[int], ModalityLengthGroupedSampler] | None
    stats: dict


def ensure_synthetic(data: DictConfig) -> None:
    """Generate the synthetic data set on first use (one process generates, the others wait)."""
    from lmm.data.synthetic import generate

    folder = Path(data.path).parent
    with exclusive(folder.with_suffix(".lock")):
        generate(folder, seed=int(data.synthetic_seed), num_train=int(data.synthetic_num_train),
                 num_eval=int(data.synthetic_num_eval), image_size=SYNTHETIC_IMAGE_SIZE)


def load_stage_records(data: DictConfig, seed: int) -> list[dict]:
    if data.kind == "synthetic":
        ensure_synthetic(data)
    for key in ("path", "sharegpt_path"):
        if data[key] and not Path(data[key]).exists():
            raise FileNotFoundError(f"data {data.name}: {key} = {data[key]} does not exist")
    records = load_records(data.path)
    if data.sharegpt_ratio > 0:
        records = mix(records, load_sharegpt(data.sharegpt_path), float(data.sharegpt_ratio), seed)
    return records


def image_check_cache(cfg: DictConfig, data: DictConfig) -> Path | None:
    """The start-up image check's cache file of a data set (one per image folder, under paths.cache_dir)."""
    if not data.image_folder:
        return None
    folder = os.path.abspath(str(data.image_folder))
    digest = hashlib.sha256(folder.encode()).hexdigest()[:16]
    return Path(cfg.paths.cache_dir) / "image-check" / f"{Path(folder).name}-{digest}.json"


def build_training_data(cfg: DictConfig, stage: str, tokenizer, processor, num_image_tokens: int) -> TrainingData:
    data = stage_data(cfg, stage)
    template = "plain" if stage == "pretrain" else cfg.model.template  # stage 0 teaches the model's template
    dataset = LlavaDataset(
        load_stage_records(data, int(cfg.seed)), tokenizer, template,
        image_folder=data.image_folder, image_processor=processor, num_image_tokens=num_image_tokens,
        max_length=int(data.max_length), image_aspect=data.image_aspect,
        max_bad_image_fraction=float(data.max_bad_fraction), image_check_cache=image_check_cache(cfg, data),
    )
    if len(dataset) == 0:
        raise ValueError(f"data {data.name}: no trainable sample left ({dataset.stats.summary()})")
    sampler_factory = None
    if data.group_by_length:
        micro = int(stage_optim(cfg, stage).micro_batch_size)
        world = world_size(cfg, stage)

        def sampler_factory(seed: int) -> ModalityLengthGroupedSampler:
            return ModalityLengthGroupedSampler(dataset.lengths, dataset.has_image, micro, world, seed)

    return TrainingData(dataset, LlavaCollator(pad_token_id=tokenizer.pad_token_id), sampler_factory,
                        asdict(dataset.stats))
