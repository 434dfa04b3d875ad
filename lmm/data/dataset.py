"""LLaVA-format records to training samples: loading, ShareGPT mixing, and the pre-tokenised dataset."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lmm.filelock import exclusive

from .images import ImageCheckCache, check_images, image_in_folder, load_image, preprocess_image
from .templates import Template
from .tokenize import IGNORE_INDEX, TokenizationMismatch, tokenize_conversation
from .tokenizer import image_token_id

log = logging.getLogger(__name__)


class DataFileError(ValueError):
    """A data file that cannot be read as records; the message names the file and what is wrong with it."""


class MissingDataFile(DataFileError, FileNotFoundError):
    """A data file that does not exist."""


def load_records(path: str | Path) -> list:
    """Records of a LLaVA (or ShareGPT) file: a JSON list, or JSON lines for a `.jsonl` file.

    What is in the list is not checked here (the dataset drops and counts malformed records); a file that is
    missing, empty, not UTF-8 or not JSON raises a DataFileError naming it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingDataFile(f"data file {path} does not exist") from None
    except OSError as err:
        raise DataFileError(f"data file {path} cannot be read: {err}") from None
    if not raw.strip():
        raise DataFileError(f"data file {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataFileError(f"data file {path} is not UTF-8 text (line {line}, byte {err.start}: "
                            f"{raw[err.start:err.start + 1]!r})") from None
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as err:
                    raise DataFileError(f"data file {path} line {number} is not valid JSON: {err}") from None
        return records
    try:
        records = json.loads(text)
    except ValueError as err:
        raise DataFileError(f"data file {path} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        raise DataFileError(f"data file {path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def load_sharegpt(path: str | Path) -> list:
    """Text-only ShareGPT records (`id`, `conversations`); an `image` field, if any, is dropped.

    Records without conversations are skipped; other malformed ones are passed on for the dataset to count.
    """
    return [{k: v for k, v in rec.items() if k != "image"} if isinstance(rec, dict) else rec
            for rec in load_records(path) if not isinstance(rec, dict) or rec.get("conversations")]


def _valid_text(text: str) -> bool:
    """False for text that cannot be UTF-8 encoded (a lone surrogate from a `\\ud800` JSON escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def record_problem(record) -> str | None:
    """Why a record cannot become a sample (a short reason shared by all such records), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if "id" in record and not isinstance(record["id"], (str, int)):
        return "id is not a string or number"
    conversation = record.get("conversations")
    if conversation is None:
        return "no conversations"
    if not isinstance(conversation, list):
        return "conversations is not a list"
    for turn in conversation:
        if not isinstance(turn, dict):
            return "a turn is not an object"
        if not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            return "a turn lacks a text 'from' or 'value'"
        if not (_valid_text(turn["from"]) and _valid_text(turn["value"])):
            return "text is not valid Unicode (lone surrogate)"
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        return "image is not a file name"
    return None


def record_id(record, index: int) -> str:
    return str(record.get("id", index)) if isinstance(record, dict) and isinstance(record.get("id", 0), (str, int)) \
        else f"#{index}"


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
    # Malformed records by reason, and the first ids of each reason.
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    dropped_examples: dict[str, list[str]] = field(default_factory=dict)
    bad_images: int = 0
    bad_image_examples: list[str] = field(default_factory=list)

    def drop(self, reason: str, record_id: str) -> None:
        self.dropped_malformed += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1
        examples = self.dropped_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(record_id)

    def summary(self) -> str:
        text = (
            f"{self.samples} samples from {self.records} records ({self.image_samples} with image, "
            f"{self.text_samples} text-only); dropped: {self.dropped_no_label} without a trained token, "
            f"{self.dropped_image_truncated} whose <image> was truncated away, {self.dropped_malformed} malformed, "
            f"{self.bad_images} with a missing or unreadable image"
        )
        if self.dropped_by_reason:
            text += "; malformed: " + "; ".join(
                f"{n} {reason} (e.g. {', '.join(self.dropped_examples[reason])})"
                for reason, n in self.dropped_by_reason.items())
        return text


class BadImagesError(ValueError):
    """More images are missing or unreadable than the configured limit allows."""


class LlavaDataset(Dataset):
    """Pre-tokenised LLaVA/ShareGPT samples; images are read lazily in `__getitem__`.

    At construction every record is checked, every sample's text is tokenised once (so lengths are exact
    for grouping) and every image is decoded once (in parallel; results cached by file size and mtime in
    `image_check_cache`, so a resumed run does not decode again). Nothing malformed aborts the build:

    - a malformed record (not an object, `conversations` not a list of {from, value} texts, text that is not
      valid Unicode, `image` not a file name, an image path that is absolute or climbs out of the image
      folder, a conversation the template rejects) is dropped and counted by reason with its id;
    - a sample whose image is missing or does not decode is dropped and counted; if more than
      `max_bad_image_fraction` of the image samples are bad, a `BadImagesError` names the count, the limit
      and the first paths;
    - a sample with no trained token after truncation is dropped and counted (it would train with loss 0).

    `max_length` is LLaVA's `model_max_length`: it counts the image as one token. Items expand the
    `<image>` token to `num_image_tokens` copies, one per image feature, as
    `LlavaForConditionalGeneration` expects, so an item is up to max_length + num_image_tokens - 1
    long. An image that passes the start-up check but fails to decode later (changed on disk) raises with
    its path.
    """

    def __init__(
        self,
        records: Sequence,
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
        image_check_cache: str | Path | None = None,
    ):
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.image_aspect = image_aspect
        self.image_token_id = image_token_id(tokenizer)
        self.stats = DataStats(records=len(records))
        images = self._image_paths(records)  # malformed records are counted here, and get no entry
        bad = self._bad_images(images, image_check_cache) if check_images else {}
        self._check_bad_fraction(len(images), bad, max_bad_image_fraction)

        self._store(records, images, bad, tokenizer, template, max_length, check_tokenization)
        self.stats.samples = len(self.ids)
        self.stats.image_samples = sum(self.has_image)
        self.stats.text_samples = self.stats.samples - self.stats.image_samples
        if image_processor is None and self.stats.image_samples:
            raise ValueError("the data has images: pass the tower's image_processor")
        if self.stats.dropped_by_reason:
            log.warning("dropped %d malformed records: %s", self.stats.dropped_malformed, "; ".join(
                f"{n} {reason} (e.g. {', '.join(self.stats.dropped_examples[reason])})"
                for reason, n in self.stats.dropped_by_reason.items()))
        log.info("dataset: %s", self.stats.summary())

    # ------------------------------------------------------------------ construction

    def _image_paths(self, records: Sequence) -> dict[int, Path | None]:
        """{record index: its image path, or None when text-only} for every well-formed record."""
        usable: dict[int, Path | None] = {}
        for index, record in enumerate(records):
            problem = record_problem(record)
            image = None
            if problem is None and record.get("image"):
                image = image_in_folder(self.image_folder, record["image"])
                if image is None:
                    problem = "image path outside the image folder"
            if problem is not None:
                self.stats.drop(problem, record_id(record, index))
                continue
            usable[index] = image
        return usable

    def _store(self, records, images, bad, tokenizer, template, max_length, check) -> None:
        """Tokenise every usable record and keep ids, image paths, tokens and exact lengths."""
        self.ids: list[str] = []
        self.image_paths: list[Path | None] = []
        tokens: list[np.ndarray] = []
        trained: list[np.ndarray] = []
        for index, image in images.items():
            if index in bad:
                continue
            sample = self._tokenize(records[index], index, image is not None, tokenizer, template, max_length,
                                    check)
            if sample is None:
                continue
            tokens.append(np.asarray(sample["input_ids"], dtype=np.int32))
            trained.append(np.asarray(sample["labels"], dtype=np.int64) != IGNORE_INDEX)
            self.ids.append(record_id(records[index], index))
            self.image_paths.append(image)
        # One flat array each instead of a list per sample: millions of samples stay a few arrays.
        self._offsets = np.cumsum([0, *(len(t) for t in tokens)], dtype=np.int64)
        self._tokens = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
        self._trained = np.concatenate(trained) if trained else np.zeros(0, bool)
        self.has_image = [p is not None for p in self.image_paths]
        self.text_lengths = np.diff(self._offsets).tolist()
        extra = self.num_image_tokens - 1
        self.lengths = [n + extra if img else n for n, img in zip(self.text_lengths, self.has_image)]

    def _bad_images(self, images: dict[int, Path | None], cache_file: str | Path | None) -> dict[int, str]:
        """{record index: reason} for image files that are missing or do not decode."""
        wanted = [(i, p) for i, p in images.items() if p is not None]
        if cache_file is None:
            reasons = check_images([p for _, p in wanted])
        else:
            # Ranks sharing the cache take turns: the first decodes, the others then find every result cached.
            with exclusive(Path(f"{cache_file}.lock")):
                reasons = check_images([p for _, p in wanted], ImageCheckCache(cache_file))
        bad = {i: f"{p} ({why})" for (i, p), why in zip(wanted, reasons) if why is not None}
        self.stats.bad_images = len(bad)
        self.stats.bad_image_examples = list(bad.values())[:5]
        return bad

    def _check_bad_fraction(self, with_images: int, bad: dict[int, str], limit: float) -> None:
        if bad and len(bad) > limit * with_images:
            raise BadImagesError(
                f"{len(bad)} of {with_images} images are missing or unreadable "
                f"({len(bad) / with_images:.2%}), over the limit max_bad_image_fraction={limit:g} "
                f"(data.max_bad_fraction); first: {'; '.join(self.stats.bad_image_examples)}"
            )
        if bad:
            log.warning("dropping %d samples whose image is missing or unreadable, e.g. %s",
                        len(bad), self.stats.bad_image_examples[0])

    def _tokenize(self, record, index, has_image, tokenizer, template, max_length, check) -> dict | None:
        try:
            sample = tokenize_conversation(
                record["conversations"], template, tokenizer, max_length, has_image=has_image, check=check
            )
        except TokenizationMismatch:
            raise  # a tokenizer/template bug, not a data problem: never silently drop
        except ValueError as err:
            self.stats.drop("conversation rejected by the template", record_id(record, index))
            log.debug("dropping malformed record %s: %s", record_id(record, index), err)
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
