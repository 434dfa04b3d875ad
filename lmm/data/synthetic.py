"""Synthetic LLaVA data for CPU runs: PIL-drawn shapes and words, with captions, instructions, chats and an eval set.

Every image shows one "scene" whose kind is a capability:

- recognition: one shape in the middle (questions: its colour, its shape);
- spatial: one smaller shape on the left/right/top/bottom (question: where it is);
- counting: 1-4 small shapes of one kind and colour (question: how many);
- ocr: a three-letter word written in dark letters (question: which word);
- detail: a patch of fine stripes, horizontal, vertical or checked (question: which pattern);
- binding: two shapes of different kinds and colours side by side (question: the colour of a named one).

Answers are one word decided by the pixels alone, so a model fed a blank image stays near chance
(1/6 colours, 1/4 shapes/positions/counts, 1/8 words, 1/3 patterns, 1/2 for binding's two colours).

The toy study (sweeps/toy.yaml) needs the paper's mechanisms to exist, so three kinds of question carry them,
by construction and fixed before any study was run:

- resolution: `detail` stripes (1 px lines, 3 px apart) are drawn in the 64 px source images. Resized
  for a 32 px tower they are past its Nyquist limit and blur to a near-uniform patch (about 1/5 of the
  contrast, measured through the CLIP processor: mean vertical gradient 0.20 vs 0.95 at 48 px), so only a
  higher-resolution tower can tell the patterns apart;
- LLM capacity: `binding` asks for the colour of the shape named in the question, with a second shape
  of another kind and colour beside it: the answer needs the question's word matched against the image
  tokens and the matching shape's colour read out (a composition, not a lookup), which a 2-layer,
  64-wide LLM does with less room than a wider, deeper one;
- language-only data: sharegpt.json's text-only chats (arithmetic, comparisons, opposites, spelling),
  half of their turns in the short-answer format, and text_eval.json, a held-out-format text-only split
  (the Table 5 analogue: a language score) of the same kinds. The image instructions never hold a
  text-only question, so a model trained without mixing has never been asked one. Text questions are
  drawn from a small space (digits 0-9, six opposites, eight words), so the split tests a skill the
  text-only data teaches rather than unseen facts.

Outputs, all in LLaVA's JSON layout and byte-identical for a given seed: pretrain.json (captions),
finetune.json (multi-turn instructions), sharegpt.json (text-only chats), eval.json (held-out images: id,
image, capability, question, answer, conversations), text_eval.json (text-only questions, same fields
without image), images under images/{train,eval}/.

The background is CLIP's mean colour, which the image processor normalises to about zero, and the
recognition shape fills most of the image. Both are for the frozen random-init towers of CPU runs:
on a near-white background the empty patches all map to one shared feature vector that dwarfs
what differs between images (~86 % of the image tokens' energy was the same for every image), and
a tiny random LLM then takes hundreds of steps before it starts to read the image at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

GENERATOR_VERSION = 3
MARKER = "synthetic.done.json"

COLOURS = {
    "red": (215, 40, 40),
    "green": (30, 155, 60),
    "blue": (40, 90, 225),
    "yellow": (235, 195, 20),
    "purple": (140, 55, 185),
    "orange": (245, 130, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
POSITIONS = ("left", "right", "top", "bottom")
WORDS = ("cat", "dog", "sun", "box", "car", "hat", "pen", "cup")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
MAX_COUNT = 4
CAPABILITIES = ("recognition", "ocr", "counting", "spatial", "detail", "binding")
PATTERNS = ("horizontal", "vertical", "checked")
# 3 px at the 64 px source: resolved by a 48 px tower input, blurred away at 32 px (see the docstring).
STRIPE_PERIOD = 3
STRIPE_INK = (235, 235, 235)
TEXT_KINDS = ("plus", "minus", "bigger", "opposite", "spell")
# OpenAI CLIP's mean colour (lmm.data.images.CLIP_MEAN × 255, truncated; also LLaVA's padding colour).
BACKGROUND = (122, 116, 104)
INK = (25, 25, 25)
SHORT_ANSWER = "Answer the question using a single word or phrase."
DESCRIBE = ("Describe the image in detail.", "What do you see in this picture? Describe it.")
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down, which anti-aliases them

QUESTIONS = {
    "colour": ("What colour is the shape?", "What is the colour of the shape?"),
    "colours": ("What colour are the shapes?",),
    "shape": ("What shape is this?", "Which shape is shown in the image?"),
    "shapes": ("What shape are they?",),
    "position": ("Where is the shape in the image?", "In which part of the image is the shape?"),
    "count": ("How many shapes are there?", "How many shapes can you see?"),
    "word": ("What word is written in the image?", "What does the text in the image say?"),
    "pattern": ("What pattern is in the patch?", "Are the stripes horizontal, vertical or checked?"),
    "side": ("What shape is on the {side}?",),
    "binding": ("What colour is the {shape}?", "Which colour does the {shape} have?"),
}
_PLACE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_OTHER_SIDE = {"left": "right", "right": "left"}
_CENTRES = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75)}
_QUADRANTS = ((0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73))


@dataclass(frozen=True)
class Scene:
    """What one image shows; `layout` holds the jittered placement, in units of the image side."""

    capability: str
    shape: str
    colour: str
    position: str = ""
    count: int = 1
    word: str = ""
    # binding's second shape (the first is `shape`/`colour`, on the `position` side: left or right)
    other_shape: str = ""
    other_colour: str = ""
    layout: tuple[tuple[float, float, float], ...] = ()


# --------------------------------------------------------------------------- scenes


def sample_scene(rng: random.Random, capability: str) -> Scene:
    """Draw the content and jittered layout of one image of the given capability."""
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    if capability == "recognition":
        layout = ((0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03), rng.uniform(0.38, 0.42)),)
        return Scene(capability, shape, colour, layout=layout)
    if capability == "spatial":
        position = rng.choice(POSITIONS)
        cx, cy = _CENTRES[position]
        layout = ((cx + rng.uniform(-0.05, 0.05), cy + rng.uniform(-0.05, 0.05), rng.uniform(0.15, 0.20)),)
        return Scene(capability, shape, colour, position=position, layout=layout)
    if capability == "counting":
        count = rng.randint(1, MAX_COUNT)
        cells = rng.sample(_QUADRANTS, count)
        layout = tuple(
            (x + rng.uniform(-0.05, 0.05), y + rng.uniform(-0.05, 0.05), rng.uniform(0.11, 0.16)) for x, y in cells
        )
        return Scene(capability, shape, colour, count=count, layout=layout)
    if capability == "detail":
        # the pattern is `shape`; layout: the patch's top-left corner (px of the 64 px source), its side, phase
        pattern = rng.choice(PATTERNS)
        side = rng.randint(30, 40)
        layout = ((rng.randint(6, 58 - side), rng.randint(6, 58 - side), side),
                  (rng.randrange(STRIPE_PERIOD), 0.0, 0.0))
        return Scene(capability, pattern, "", layout=layout)
    if capability == "binding":
        other_shape = rng.choice([s for s in SHAPES if s != shape])
        other_colour = rng.choice([c for c in COLOURS if c != colour])
        position = rng.choice(("left", "right"))
        xs = (0.27, 0.73) if position == "left" else (0.73, 0.27)
        layout = tuple((x + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.12, 0.12), rng.uniform(0.15, 0.19))
                       for x in xs)
        return Scene(capability, shape, colour, position=position, other_shape=other_shape,
                     other_colour=other_colour, layout=layout)
    if capability == "ocr":
        # The layout of a word is its top-left corner offset as a fraction of the free room.
        return Scene(capability, "", "", word=rng.choice(WORDS), layout=((rng.random(), rng.random(), 0.0),))
    raise ValueError(f"unknown capability {capability!r}; expected one of {CAPABILITIES}")


def draw_scene(scene: Scene, size: int) -> Image.Image:
    """Render a scene as an RGB image of `size`×`size` pixels."""
    if scene.capability == "ocr":
        return _draw_word(scene, size)
    if scene.capability == "detail":
        return _draw_pattern(scene, size)
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if scene.capability == "binding":
        for (cx, cy, r), shape, colour in zip(scene.layout, (scene.shape, scene.other_shape),
                                              (scene.colour, scene.other_colour)):
            _draw_shape(draw, shape, cx * big, cy * big, r * big, COLOURS[colour])
        return image.reduce(_SUPERSAMPLE)
    for cx, cy, r in scene.layout:
        _draw_shape(draw, scene.shape, cx * big, cy * big, r * big, COLOURS[scene.colour])
    return image.reduce(_SUPERSAMPLE)


def _draw_pattern(scene: Scene, size: int) -> Image.Image:
    # Drawn pixel-exact (no anti-aliasing) at the 64 px source scale, then scaled to `size` like a photo
    # would be: the stripes' period is a property of the source image, not of the tower that reads it.
    source = 64
    image = Image.new("RGB", (source, source), BACKGROUND)
    draw = ImageDraw.Draw(image)
    (x0, y0, side), (phase, _, _) = scene.layout
    x0, y0, side, phase = int(x0), int(y0), int(side), int(phase)
    for y in range(y0, y0 + side):
        for x in range(x0, x0 + side):
            across = (y - y0 + phase) % STRIPE_PERIOD == 0
            down = (x - x0 + phase) % STRIPE_PERIOD == 0
            on = {"horizontal": across, "vertical": down, "checked": across != down}[scene.shape]
            if on:
                draw.point((x, y), fill=STRIPE_INK)
    return image if size == source else image.resize((size, size), Image.BICUBIC)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    # Areas (× r²): star 1.18, triangle 1.8, circle 3.14, square 4. Apart by more than the recognition
    # sizes vary (1.22×), so the four shapes differ even in what a coarse 32 px tower input keeps.
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.4
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _draw_word(scene: Scene, size: int) -> Image.Image:
    # Pillow's built-in bitmap font renders identically everywhere (no FreeType version drift).
    font = ImageFont.load_default_imagefont()
    left, top, right, bottom = font.getbbox(scene.word)
    text = Image.new("RGB", (right - left, bottom - top), BACKGROUND)
    ImageDraw.Draw(text).text((-left, -top), scene.word, font=font, fill=INK)
    scale = max(1, size // 32)
    text = text.resize((text.width * scale, text.height * scale), Image.NEAREST)
    if text.width > size or text.height > size:
        raise ValueError(f"image_size {size} is too small to write {scene.word!r}; use at least 24")
    image = Image.new("RGB", (size, size), BACKGROUND)
    fx, fy, _ = scene.layout[0]
    image.paste(text, (int(fx * (size - text.width)), int(fy * (size - text.height))))
    return image


# --------------------------------------------------------------------------- text


_PATTERN_TEXT = {"horizontal": "fine horizontal stripes", "vertical": "fine vertical stripes",
                 "checked": "a fine checked pattern"}


def _plural(shape: str) -> str:
    return shape + "s"


def caption(scene: Scene, rng: random.Random) -> str:
    """A one-sentence stage-1 caption."""
    c, s = scene.colour, scene.shape
    if scene.capability == "recognition":
        return rng.choice((f"A {c} {s}.", f"A {c} {s} on a plain background.", f"There is a {c} {s} in the image."))
    if scene.capability == "spatial":
        return rng.choice((f"A {c} {s} {_PLACE[scene.position]}.", f"A small {c} {s} {_PLACE[scene.position]}."))
    if scene.capability == "detail":
        pattern = _PATTERN_TEXT[scene.shape]
        return rng.choice((f"A patch of {pattern}.", f"A grey patch with {pattern}."))
    if scene.capability == "binding":
        return f"A {c} {s} {_PLACE[scene.position]} and a {scene.other_colour} {scene.other_shape} beside it."
    if scene.capability == "counting":
        n = NUMBER_WORDS[scene.count].capitalize()
        return f"{n} {c} {s}." if scene.count == 1 else f"{n} {c} {_plural(s)}."
    return rng.choice((f'The word "{scene.word}" written in black.', f'Text that reads "{scene.word}".'))


def description(scene: Scene) -> str:
    """A detailed, several-clause description (the "detailed description" instruction's answer)."""
    c, s = scene.colour, scene.shape
    if scene.capability == "recognition":
        return f"The image shows a single {c} {s} in the middle of a plain background. Nothing else is in it."
    if scene.capability == "spatial":
        return f"The image shows a small {c} {s} {_PLACE[scene.position]} of a plain background. The rest is empty."
    if scene.capability == "detail":
        return f"The image shows a square patch of {_PATTERN_TEXT[scene.shape]} on a plain background."
    if scene.capability == "binding":
        return (f"The image shows two shapes: a {c} {s} {_PLACE[scene.position]} and a {scene.other_colour} "
                f"{scene.other_shape} {_PLACE[_OTHER_SIDE[scene.position]]}.")
    if scene.capability == "counting":
        things = f"one {c} {s}" if scene.count == 1 else f"{NUMBER_WORDS[scene.count]} {c} {_plural(s)}"
        return f"The image shows {things} on a plain background. There are {scene.count} in total."
    return f'The image shows the word "{scene.word}" written in dark letters on a plain background.'


def short_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """All (question, one-word answer) pairs the image decides."""
    def pick(kind: str) -> str:
        return rng.choice(QUESTIONS[kind])

    if scene.capability == "recognition":
        return [(pick("colour"), scene.colour), (pick("shape"), scene.shape)]
    if scene.capability == "spatial":
        return [(pick("position"), scene.position), (pick("colour"), scene.colour), (pick("shape"), scene.shape)]
    if scene.capability == "counting":
        return [(pick("count"), str(scene.count)), (pick("colours"), scene.colour), (pick("shapes"), scene.shape)]
    if scene.capability == "detail":
        return [(pick("pattern"), scene.shape)]
    if scene.capability == "binding":
        # the tested question first: the colour of one named shape (either of the two, equally often)
        first = rng.random() < 0.5
        shape, colour = (scene.shape, scene.colour) if first else (scene.other_shape, scene.other_colour)
        side, on_side = (scene.position, scene.shape) if rng.random() < 0.5 else \
            (_OTHER_SIDE[scene.position], scene.other_shape)
        return [(pick("binding").format(shape=shape), colour), (pick("side").format(side=side), on_side)]
    return [(pick("word"), scene.word)]


def eval_question(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """The one question that tests the scene's capability (recognition: colour or shape)."""
    pairs = short_questions(scene, rng)
    return rng.choice(pairs) if scene.capability == "recognition" else pairs[0]


def _with_image(text: str, rng: random.Random) -> str:
    # LLaVA's data puts the image before or after the question; the templates move it to the front.
    return f"<image>\n{text}" if rng.random() < 0.5 else f"{text}\n<image>"


def instruction_conversation(scene: Scene, rng: random.Random) -> list[dict[str, str]]:
    """A multi-turn stage-2 conversation: every short question in random order, sometimes a detailed description.

    Asking them all costs a few tokens per question next to the system prompt and the image that
    every sample carries, and gives each image all its supervision (a tiny model learns shapes late).
    """
    pairs = [(f"{q}\n{SHORT_ANSWER}", a) for q, a in short_questions(scene, rng)]
    rng.shuffle(pairs)
    if rng.random() < 0.3:
        pairs.insert(rng.randint(0, len(pairs)), (rng.choice(DESCRIBE), description(scene)))
    turns = []
    for i, (q, a) in enumerate(pairs):
        turns += [{"from": "human", "value": _with_image(q, rng) if i == 0 else q}, {"from": "gpt", "value": a}]
    return turns


_OPPOSITES = (("left", "right"), ("top", "bottom"), ("big", "small"), ("hot", "cold"), ("day", "night"), ("up", "down"))


def text_item(rng: random.Random, kind: str | None = None) -> tuple[str, str, str, str]:
    """One text-only question: (kind, question, sentence answer, one-word answer); kinds in TEXT_KINDS."""
    kind = kind or rng.choice(TEXT_KINDS)
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if kind == "plus":
        return kind, f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", str(a + b)
    if kind == "minus":
        a, b = max(a, b), min(a, b)
        return kind, f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}.", str(a - b)
    if kind == "spell":
        word = rng.choice(WORDS)
        return kind, f"Spell the word {word}.", "-".join(word), "-".join(word)
    if kind == "opposite":
        x, y = rng.choice(_OPPOSITES + tuple((y, x) for x, y in _OPPOSITES))
        return kind, f"What is the opposite of {x}?", f"The opposite of {x} is {y}.", y
    if kind == "bigger":
        while a == b:
            b = rng.randint(0, 9)
        return kind, f"Which is bigger, {a} or {b}?", f"{max(a, b)} is bigger.", str(max(a, b))
    raise ValueError(f"unknown text kind {kind!r}; expected one of {TEXT_KINDS}")


def text_exchange(rng: random.Random) -> tuple[str, str]:
    """One text-only question and answer (ShareGPT stand-in), in chat form or, half the time, short-answer form."""
    _, question, sentence, word = text_item(rng)
    if rng.random() < 0.5:
        return question, sentence
    return f"{question}\n{SHORT_ANSWER}", word


def text_conversation(rng: random.Random) -> list[dict[str, str]]:
    turns = []
    for _ in range(rng.randint(1, 3)):
        q, a = text_exchange(rng)
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return turns


def text_eval_records(seed: int, n: int) -> list[dict]:
    """The text-only eval split: `n` short-answer questions, the kinds in turn (id, capability, question, answer)."""
    rng = random.Random(f"lmm-synthetic-{seed}-text-eval")
    records = []
    for i in range(n):
        kind, question, _, answer = text_item(rng, TEXT_KINDS[i % len(TEXT_KINDS)])
        prompt = f"{question}\n{SHORT_ANSWER}"
        records.append({"id": f"text-eval-{i:06d}", "capability": kind, "question": prompt, "answer": answer,
                        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]})
    return records


def corpus_lines() -> Iterator[str]:
    """Every kind of sentence the generator writes (a tokenizer trained on them covers the data)."""
    rng = random.Random("corpus")
    for capability in CAPABILITIES:
        for _ in range(40):
            scene = sample_scene(rng, capability)
            yield caption(scene, rng)
            yield description(scene)
            for q, a in short_questions(scene, rng):
                yield f"{q}\n{SHORT_ANSWER} {a}"
    for _ in range(200):
        _, q, sentence, word = text_item(rng)
        yield f"{q} {sentence}"
        yield f"{q}\n{SHORT_ANSWER} {word}"
    yield from DESCRIBE
    for qs in QUESTIONS.values():
        yield from qs


# --------------------------------------------------------------------------- files


def _image_stream(seed: int, split: str, capability_offset: int = 0) -> Iterator[Scene]:
    rng = random.Random(f"lmm-synthetic-{seed}-{split}-scenes")
    i = capability_offset
    while True:
        yield sample_scene(rng, CAPABILITIES[i % len(CAPABILITIES)])
        i += 1


def _render_split(seed, split, n, size, image_dir, forbidden: set[str]) -> list[tuple[str, Scene]]:
    """Draw `n` distinct images not in `forbidden` (pixel hashes), save them, return (relative path, scene)."""
    (image_dir / split).mkdir(parents=True, exist_ok=True)
    out, seen = [], set(forbidden)
    scenes = _image_stream(seed, split)
    for i in range(n):
        for _ in range(1000):
            scene = next(scenes)
            image = draw_scene(scene, size)
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            if digest not in seen:
                break
        else:
            raise RuntimeError(f"could not draw a new distinct {split} image; lower num_train/num_eval")
        seen.add(digest)
        rel = f"{split}/{i:06d}.png"
        image.save(image_dir / rel, format="PNG", optimize=False)
        out.append((rel, scene))
    forbidden |= seen
    return out


def _write_json(path: Path, records) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _paths(out: Path) -> dict[str, Path]:
    names = ("pretrain", "finetune", "sharegpt", "eval", "text_eval")
    return {**{n: out / f"{n}.json" for n in names}, "image_folder": out / "images"}


def generate(
    out_dir: str | Path,
    seed: int = 0,
    num_train: int = 1000,
    num_eval: int = 200,
    image_size: int = 32,
    num_text: int | None = None,
) -> dict[str, Path]:
    """Write the synthetic data set into `out_dir` (skipped when already complete with these parameters).

    `num_text` text-only chats (default: `num_train`) go to sharegpt.json; text_eval.json holds `num_eval`
    text-only questions. Returns the paths of the five JSON files and of the image folder that their
    `image` fields are relative to.
    """
    out = Path(out_dir)
    params = {"version": GENERATOR_VERSION, "seed": seed, "num_train": num_train, "num_eval": num_eval,
              "image_size": image_size, "num_text": num_train if num_text is None else num_text}
    paths = _paths(out)
    marker = out / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params and all(p.exists() for p in paths.values()):
        return paths
    marker.unlink(missing_ok=True)
    shutil.rmtree(paths["image_folder"], ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    hashes: set[str] = set()
    train = _render_split(seed, "train", num_train, image_size, paths["image_folder"], hashes)
    held_out = _render_split(seed, "eval", num_eval, image_size, paths["image_folder"], hashes)
    rng = random.Random(f"lmm-synthetic-{seed}-text")
    _write_json(paths["pretrain"], [
        {"id": f"train-{i:06d}", "image": rel, "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(scene, rng)}]}
        for i, (rel, scene) in enumerate(train)
    ])
    _write_json(paths["finetune"], [
        {"id": f"train-{i:06d}", "image": rel, "conversations": instruction_conversation(scene, rng)}
        for i, (rel, scene) in enumerate(train)
    ])
    _write_json(paths["sharegpt"], [
        {"id": f"text-{i:06d}", "conversations": text_conversation(rng)} for i in range(params["num_text"])
    ])
    _write_json(paths["eval"], [_eval_record(i, rel, scene, rng) for i, (rel, scene) in enumerate(held_out)])
    _write_json(paths["text_eval"], text_eval_records(seed, num_eval))
    marker.write_text(json.dumps(params) + "\n")
    return paths


def _eval_record(i: int, rel: str, scene: Scene, rng: random.Random) -> dict:
    question, answer = eval_question(scene, rng)
    prompt = f"{question}\n{SHORT_ANSWER}"
    return {
        "id": f"eval-{i:06d}", "image": rel, "capability": scene.capability,
        "question": prompt, "answer": answer,
        "conversations": [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmm.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--num-text", type=int, default=None, help="text-only chats (default: --num-train)")
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args(argv)
    paths = generate(args.out, args.seed, args.num_train, args.num_eval, args.image_size, args.num_text)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))


if __name__ == "__main__":
    main()
