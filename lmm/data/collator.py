"""Batch dataset items: right-pad ids and labels, build the attention mask, stack the images present."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .tokenize import IGNORE_INDEX


@dataclass
class LlavaCollator:
    """Collate `LlavaDataset` items for `LlavaForConditionalGeneration`.

    `pixel_values` stacks only the items that have an image, in batch order: LLaVA scatters the
    image features into the `<image>` positions in that same order. A text-only batch has no
    `pixel_values` key at all. The attention mask comes from lengths, not from comparing with the
    pad id, because LLaMA pads with `<unk>`, which can also occur in real text.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(item["input_ids"]) for item in items]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (item, n) in enumerate(zip(items, lengths)):
            input_ids[row, :n] = torch.as_tensor(item["input_ids"])
            labels[row, :n] = torch.as_tensor(item["labels"])
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        pixels = [item["pixel_values"] for item in items if item.get("pixel_values") is not None]
        if pixels:
            batch["pixel_values"] = torch.stack(pixels)
        return batch
