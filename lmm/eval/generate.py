"""Generates answers to image questions in the model's conversation template (greedy or beam search)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from lmm.data.images import load_image, preprocess_image
from lmm.data.templates import IMAGE_TOKEN
from lmm.data.tokenize import tokenize_prompt


@dataclass(frozen=True)
class Question:
    """One question, optionally about an image (a path, or a PIL image)."""

    id: str
    text: str
    image: str | Path | Image.Image | None = None


def expand_image_tokens(ids: list[int], image_token_id: int, count: int) -> list[int]:
    """One `<image>` id becomes `count` copies: LLaVA scatters one image feature into each."""
    out: list[int] = []
    for token in ids:
        out.extend([token] * count if token == image_token_id else [token])
    return out


def _image(question: Question, blank: bool, size: int) -> Image.Image | None:
    if question.image is None:
        return None
    if blank:
        return Image.new("RGB", (size, size), (0, 0, 0))
    return question.image if isinstance(question.image, Image.Image) else load_image(question.image)


def input_device(model) -> torch.device:
    """Where prompts go: the device of the input embeddings (a sharded model's first layers). Embeddings
    offloaded by accelerate (on "meta" until their hook loads them) take CPU inputs: the hooks move them."""
    device = model.get_input_embeddings().weight.device
    return torch.device("cpu") if device.type == "meta" else device


@torch.inference_mode()
def generate_answers(model, tokenizer, processor, template: str, questions: Sequence[Question], *,
                     num_image_tokens: int, image_aspect: str = "pad", num_beams: int = 1,
                     max_new_tokens: int = 64, batch_size: int = 8, blank_image: bool = False) -> list[str]:
    """Answers in order; deterministic (greedy or beam search, no sampling).

    Prompts go `batch_size` at a time, left-padded so that every prompt ends where generation starts; the
    model may be whole on one device or sharded by accelerate (`device_map`) over GPUs, CPU and disk.
    `blank_image` swaps every image for a black one: the control that shows answers depend on the image.
    """
    model.eval()
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    size = processor.crop_size["height"] if getattr(processor, "crop_size", None) else 336
    device = input_device(model)
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        prompts, pixels = [], []
        for q in batch:
            image = _image(q, blank_image, size)
            text = f"{IMAGE_TOKEN}\n{q.text}" if image is not None and IMAGE_TOKEN not in q.text else q.text
            ids = tokenize_prompt([{"from": "human", "value": text}], template, tokenizer,
                                  has_image=image is not None)
            prompts.append(expand_image_tokens(ids, image_id, num_image_tokens))
            if image is not None:
                pixels.append(preprocess_image(image, processor, image_aspect))
        # Left padding so every prompt ends where generation starts.
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        kwargs = {}
        if pixels:
            kwargs["pixel_values"] = torch.stack(pixels).to(device=device, dtype=model.dtype)
        out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                             num_beams=num_beams, do_sample=False, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, **kwargs)
        for row in out[:, width:]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers
