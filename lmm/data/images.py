"""Image files to tower inputs: start-up decode checks (cached), pad-to-square or resize, the CLIP processor."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

log = logging.getLogger(__name__)

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
    """None when the file decodes as training will decode it, else the reason it does not.

    The whole image is decoded (PIL's `verify()` reads only the header and misses a truncated JPEG, which
    would then kill training when a batch reaches it).
    """
    try:
        load_image(path)
    except FileNotFoundError:
        return "missing"
    except Exception as err:  # noqa: BLE001 -- any decoder failure (OSError, DecompressionBombError, ...)
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def image_in_folder(folder: Path | None, name: str) -> Path | None:
    """The path of image `name` inside `folder`, or None when the name is absolute or climbs out of it.

    Without a folder, names are used as they are (there is nothing to stay inside).
    """
    if folder is None:
        return Path(name)
    normal = os.path.normpath(name)
    if "\x00" in name or os.path.isabs(name) or normal == ".." or normal.startswith(".." + os.sep):
        return None
    return Path(folder) / normal


class ImageCheckCache:
    """Start-up check results by file size and mtime, in one JSON file, so a resumed run does not redo them."""

    VERSION = 2  # 2: full decode (1 was PIL's verify)

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}
        if self.path is not None and self.path.exists():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
                if saved.get("version") == self.VERSION:
                    self.entries = dict(saved["entries"])
            except (OSError, ValueError, KeyError, AttributeError, TypeError):
                log.warning("ignoring the unreadable image-check cache %s", self.path)

    def get(self, path: Path, stat: os.stat_result) -> tuple[bool, str | None]:
        """(hit, reason) for a file whose stat is `stat`."""
        entry = self.entries.get(os.path.abspath(path))
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return True, entry[2]
        return False, None

    def put(self, path: Path, stat: os.stat_result, reason: str | None) -> None:
        self.entries[os.path.abspath(path)] = [stat.st_size, stat.st_mtime_ns, reason]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": self.VERSION, "entries": self.entries}, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check_images(paths: Sequence[Path], cache: ImageCheckCache | None = None,
                 check: Callable[[Path], str | None] = check_image, save_every_s: float = 60.0) -> list[str | None]:
    """The reason each image fails to decode (None = fine), decoded in parallel threads (PIL's decoders
    release the GIL); files whose size and mtime match the cache are not decoded again."""
    cache = cache or ImageCheckCache(None)
    reasons: list[str | None] = [None] * len(paths)
    todo: list[tuple[int, Path, os.stat_result]] = []
    for i, path in enumerate(paths):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            reasons[i] = "missing"
            continue
        except (OSError, ValueError) as err:
            reasons[i] = f"unreadable ({type(err).__name__}: {err})"
            continue
        hit, reason = cache.get(path, stat)
        if hit:
            reasons[i] = reason
        else:
            todo.append((i, path, stat))
    if todo:
        log.info("decoding %d images (%d known from the check cache)", len(todo), len(paths) - len(todo))
    last_save = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
        # In slices, so a data set of millions never holds millions of pending futures.
        for start in range(0, len(todo), 4096):
            part = todo[start:start + 4096]
            for (i, path, stat), reason in zip(part, pool.map(check, [p for _, p, _ in part])):
                reasons[i] = reason
                cache.put(path, stat, reason)
            if time.monotonic() - last_save > save_every_s:  # a killed start-up keeps what it decoded
                cache.save()
                last_save = time.monotonic()
    if todo:
        cache.save()
    return reasons


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
