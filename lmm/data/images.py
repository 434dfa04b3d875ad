"""Image files to tower inputs: cheap validity checks, pad-to-square or resize, the CLIP image processor."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

IMAGE_ASPECTS = ("pad", "resize", "crop")
# OpenAI CLIP's normalisation, which LLaVA's towers (ViT-L/14 224 and 336) use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_image_processor(image_size: int, mean=CLIP_MEAN, std=CLIP_STD):
    """A CLIP image processor for a square tower of `image_size` (as the tower's preprocessor config says).

    The PIL implementation is used where transformers has one: it needs no torchvision and gives the
    same numbers on every machine.
    """
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


def background_colour(image_processor) -> tuple[int, int, int]:
    """The processor's mean as 0-255 ints (truncated, as LLaVA does): padding normalises to ~zero."""
    return tuple(int(m * 255) for m in image_processor.image_mean)


def processor_size(image_processor) -> int:
    """The square side the processor outputs (its crop size, else its shortest edge)."""
    crop = getattr(image_processor, "crop_size", None) or {}
    size = getattr(image_processor, "size", None) or {}
    side = crop.get("height") or size.get("shortest_edge") or size.get("height")
    if not side:
        raise ValueError(f"cannot tell the output size of {type(image_processor).__name__}")
    return int(side)


def check_image(path: str | Path) -> str | None:
    """None when the file opens as an image, else the reason it does not.

    Only the header and the container structure are read (PIL's verify): cheap enough to run over
    a whole data set at start-up, unlike decoding every image.
    """
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return "missing"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def load_image(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def pad_to_square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """Centre the image on a square canvas of `colour` (LLaVA-1.5's "pad" aspect handling)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def preprocess_image(image: Image.Image, image_processor, aspect: str = "pad") -> torch.Tensor:
    """A [3, H, W] float tensor for the tower.

    aspect: "pad" pads to square with the processor's mean colour (nothing is cut off), "resize"
    stretches to the square size, "crop" leaves it to the processor (shortest edge, centre crop).
    """
    if aspect == "pad":
        image = pad_to_square(image, background_colour(image_processor))
    elif aspect == "resize":
        side = processor_size(image_processor)
        image = image.resize((side, side), Image.BICUBIC)
    elif aspect != "crop":
        raise ValueError(f"image_aspect must be one of {IMAGE_ASPECTS}, got {aspect!r}")
    return image_processor(images=image, return_tensors="pt")["pixel_values"][0]
