"""LLaVA-format records to training samples: loading, ShareGPT mixing, and the pre-tokenised dataset."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import check_image, load_image, preprocess_image
from .templates import Template
from .tokenize import IGNORE_INDEX, TokenizationMismatch, tokenize_conversation
from .tokenizer import image_token_id

log = logging.getLogger(__name__)


def load_records(path: str | Path) -> list[dict]:
    """Records of a LLaVA (or ShareGPT) file: a JSON list, or JSON lines for a `.jsonl` file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    records = json.loads(text)
    if not isinstance(records, list):
        raise TypeError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def load_sharegpt(path: str | Path) -> list[dict]:
    """Text-only ShareGPT records (`id`, `conversations`); an `image` field, if any, is dropped."""
    return [{k: v for k, v in rec.items() if k != "image"} for rec in load_records(path) if rec.get("conversations")]


def mix(llava_records: Sequence[dict], sharegpt_records: Sequence[dict], ratio: float, seed: int) -> list[dict]:
    """The LLaVA records followed by round(ratio × len(llava_records)) ShareGPT records.

    ShareGPT records are drawn without replacement in a seeded random order; when more are asked
    for than exist, each further pass is a fresh permutation (so repeats are spread evenly). The
    order of the result does not matter for training: the sampler shuffles.
    """
    if ratio < 0:
        raise ValueError(f"ShareGPT mixing ratio must be >= 0, got {ratio}")
    wanted = round(ratio * len(llava_records))
    if wanted and not sharegpt_records:
        raise ValueError(f"ratio {ratio} asks for {wanted} ShareGPT samples but none were given")
    rng = random.Random(f"lmm-sharegpt-mix-{seed}")
    picked: list[int] = []
    while len(picked) < wanted:
        order = list(range(len(sharegpt_records)))
        rng.shuffle(order)
        picked += order[: wanted - len(picked)]
    return [*llava_records, *(sharegpt_records[i] for i in picked)]


@dataclass
class DataStats:
    """What construction kept and dropped."""

    records: int = 0
    samples: int = 0
    image_samples: int = 0
    text_samples: int = 0
    dropped_no_label: int = 0
    dropped_image_truncated: int = 0
    dropped_malformed: int = 0
    bad_images: int = 0
    bad_image_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.samples} samples from {self.records} records ({self.image_samples} with image, "
            f"{self.text_samples} text-only); dropped: {self.dropped_no_label} without a trained token, "
            f"{self.dropped_image_truncated} whose <image> was truncated away, {self.dropped_malformed} malformed, "
            f"{self.bad_images} with a missing or unreadable image"
        )


class BadImagesError(ValueError):
    """More images are missing or unreadable than the configured limit allows."""


class LlavaDataset(Dataset):
    """Pre-tokenised LLaVA/ShareGPT samples; images are read lazily in `__getitem__`.

    At construction every sample's text is tokenised once (so lengths are exact for grouping) and
    every image file gets a cheap header check. Samples whose image is missing or unreadable are
    dropped and counted (if more than `max_bad_image_fraction` of the image samples are bad, a
    `BadImagesError` names the count, the limit and the first paths). Samples with no trained
    token after truncation are dropped and counted too: they would train with a loss of 0.

    `max_length` is LLaVA's `model_max_length`: it counts the image as one token. Items expand the
    `<image>` token to `num_image_tokens` copies, one per image feature, as
    `LlavaForConditionalGeneration` expects, so an item is up to max_length + num_image_tokens - 1
    long. An image that passes the start-up check but fails to decode later raises with its path.
    """

    def __init__(
        self,
        records: Sequence[dict],
        tokenizer,
        template: str | Template,
        *,
        image_folder: str | Path | None = None,
        image_processor=None,
        num_image_tokens: int = 1,
        max_length: int | None = 2048,
        image_aspect: str = "pad",
        max_bad_image_fraction: float = 0.01,
        check_images: bool = True,
        check_tokenization: bool = True,
    ):
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.image_aspect = image_aspect
        self.image_token_id = image_token_id(tokenizer)
        self.stats = DataStats(records=len(records))
        bad = self._bad_images(records) if check_images else {}
        self._check_bad_fraction(records, bad, max_bad_image_fraction)

        self._store(records, bad, tokenizer, template, max_length, check_tokenization)
        self.stats.samples = len(self.ids)
        self.stats.image_samples = sum(self.has_image)
        self.stats.text_samples = self.stats.samples - self.stats.image_samples
        if image_processor is None and self.stats.image_samples:
            raise ValueError("the data has images: pass the tower's image_processor")
        log.info("dataset: %s", self.stats.summary())

    # ------------------------------------------------------------------ construction

    def _store(self, records, bad, tokenizer, template, max_length, check) -> None:
        """Tokenise every usable record and keep ids, image paths, tokens and exact lengths."""
        self.ids: list[str] = []
        self.image_paths: list[Path | None] = []
        tokens: list[np.ndarray] = []
        trained: list[np.ndarray] = []
        for index, record in enumerate(records):
            sample = None if index in bad else self._tokenize(record, tokenizer, template, max_length, check)
            if sample is None:
                continue
            tokens.append(np.asarray(sample["input_ids"], dtype=np.int32))
            trained.append(np.asarray(sample["labels"], dtype=np.int64) != IGNORE_INDEX)
            self.ids.append(str(record.get("id", index)))
            self.image_paths.append(self._image_path(record) if record.get("image") else None)
        # One flat array each instead of a list per sample: millions of samples stay a few arrays.
        self._offsets = np.cumsum([0, *(len(t) for t in tokens)], dtype=np.int64)
        self._tokens = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
        self._trained = np.concatenate(trained) if trained else np.zeros(0, bool)
        self.has_image = [p is not None for p in self.image_paths]
        self.text_lengths = np.diff(self._offsets).tolist()
        extra = self.num_image_tokens - 1
        self.lengths = [n + extra if img else n for n, img in zip(self.text_lengths, self.has_image)]

    def _image_path(self, record: dict) -> Path:
        rel = Path(record["image"])
        return self.image_folder / rel if self.image_folder is not None else rel

    def _bad_images(self, records: Sequence[dict]) -> dict[int, str]:
        """{record index: reason} for image files that do not open; checked in parallel (I/O bound)."""
        wanted = [(i, self._image_path(r)) for i, r in enumerate(records) if r.get("image")]
        reasons: list[str | None] = []
        with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
            # In slices, so a data set of millions never holds millions of pending futures.
            for start in range(0, len(wanted), 4096):
                reasons += pool.map(check_image, [p for _, p in wanted[start : start + 4096]])
        bad = {i: f"{p} ({why})" for (i, p), why in zip(wanted, reasons) if why is not None}
        self.stats.bad_images = len(bad)
        self.stats.bad_image_examples = list(bad.values())[:5]
        return bad

    def _check_bad_fraction(self, records: Sequence[dict], bad: dict[int, str], limit: float) -> None:
        with_images = sum(1 for r in records if r.get("image"))
        if bad and len(bad) > limit * with_images:
            raise BadImagesError(
                f"{len(bad)} of {with_images} images are missing or unreadable "
                f"({len(bad) / with_images:.2%}), over the limit max_bad_image_fraction={limit:g}; "
                f"first: {'; '.join(self.stats.bad_image_examples)}"
            )
        if bad:
            log.warning("dropping %d samples whose image is missing or unreadable, e.g. %s",
                        len(bad), self.stats.bad_image_examples[0])

    def _tokenize(self, record, tokenizer, template, max_length, check) -> dict | None:
        has_image = bool(record.get("image"))
        try:
            sample = tokenize_conversation(
                record.get("conversations", []), template, tokenizer, max_length, has_image=has_image, check=check
            )
        except TokenizationMismatch:
            raise  # a tokenizer/template bug, not a data problem: never silently drop
        except ValueError as err:
            self.stats.dropped_malformed += 1
            log.debug("dropping malformed record %s: %s", record.get("id"), err)
            return None
        if has_image and self.image_token_id not in sample["input_ids"]:
            self.stats.dropped_image_truncated += 1
            return None
        if all(label == IGNORE_INDEX for label in sample["labels"]):
            self.stats.dropped_no_label += 1
            return None
        return sample

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) with the image as ONE token, as stored."""
        lo, hi = self._offsets[index], self._offsets[index + 1]
        ids = torch.from_numpy(self._tokens[lo:hi].astype(np.int64))
        labels = torch.where(torch.from_numpy(self._trained[lo:hi]), ids, IGNORE_INDEX)
        return ids, labels

    def __getitem__(self, index: int) -> dict:
        ids, labels = self.tokens(index)
        path = self.image_paths[index]
        if path is None:
            return {"input_ids": ids, "labels": labels, "pixel_values": None}
        ids, labels = self._expand_image(ids, labels)
        try:
            image = load_image(path)
        except Exception as err:  # any decoder failure: name the file
            raise RuntimeError(f"image {path} of sample {self.ids[index]} passed the start-up check "
                               f"but failed to decode: {err}") from err
        pixels = preprocess_image(image, self.image_processor, self.image_aspect)
        return {"input_ids": ids, "labels": labels, "pixel_values": pixels}

    def _expand_image(self, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the single `<image>` id by `num_image_tokens` of them (labels -100 there)."""
        at = int((ids == self.image_token_id).nonzero()[0, 0])
        fill = torch.full((self.num_image_tokens,), self.image_token_id, dtype=ids.dtype)
        ignore = torch.full((self.num_image_tokens,), IGNORE_INDEX, dtype=labels.dtype)
        return torch.cat([ids[:at], fill, ids[at + 1 :]]), torch.cat([labels[:at], ignore, labels[at + 1 :]])
