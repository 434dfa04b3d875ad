"""Synthetic data: determinism, idempotence, held-out eval images, answers decidable from the pixels."""

import hashlib
import json
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

from lmm.data import synthetic
from lmm.data.synthetic import (
    BACKGROUND,
    CAPABILITIES,
    COLOURS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    TEXT_KINDS,
    WORDS,
    generate,
)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(paths, name):
    return json.loads(paths[name].read_text())


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", seed=3, num_train=40, num_eval=20, image_size=32)
    generate(tmp_path / "b", seed=3, num_train=40, num_eval=20, image_size=32)
    generate(tmp_path / "c", seed=4, num_train=40, num_eval=20, image_size=32)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    assert set(a) == {"pretrain", "finetune", "sharegpt", "eval", "text_eval", "image_folder"}


def test_generate_is_idempotent_and_regenerates_on_new_parameters(tmp_path):
    paths = generate(tmp_path, seed=0, num_train=8, num_eval=4, image_size=32)
    stamp = paths["finetune"].stat().st_mtime_ns
    generate(tmp_path, seed=0, num_train=8, num_eval=4, image_size=32)
    assert paths["finetune"].stat().st_mtime_ns == stamp
    generate(tmp_path, seed=0, num_train=6, num_eval=4, image_size=48)
    assert len(_load(paths, "finetune")) == 6
    assert len(list((paths["image_folder"] / "train").iterdir())) == 6  # stale images removed
    assert Image.open(paths["image_folder"] / "train" / "000000.png").size == (48, 48)


def test_cli_writes_files(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path), "--seed", "1", "--num-train", "4", "--num-eval", "2",
                    "--num-text", "3", "--image-size", "32"])
    printed = json.loads(capsys.readouterr().out)
    assert len(json.loads(Path(printed["sharegpt"]).read_text())) == 3


def test_eval_images_are_held_out(synthetic_data):
    folder = synthetic_data["image_folder"]

    def digest(rel):
        return hashlib.sha1(Image.open(folder / rel).tobytes()).hexdigest()

    train = {digest(r["image"]) for r in _load(synthetic_data, "finetune")}
    held_out = [digest(r["image"]) for r in _load(synthetic_data, "eval")]
    assert not train & set(held_out)
    assert len(set(held_out)) == len(held_out)


def test_file_layouts(synthetic_data):
    pretrain = _load(synthetic_data, "pretrain")
    assert all(r["conversations"][0] == {"from": "human", "value": "<image>"} for r in pretrain)
    assert all(r["conversations"][1]["from"] == "gpt" and r["conversations"][1]["value"] for r in pretrain)
    for record in _load(synthetic_data, "finetune"):
        roles = [t["from"] for t in record["conversations"]]
        assert roles == ["human", "gpt"] * (len(roles) // 2) and roles
        assert "<image>" in record["conversations"][0]["value"]
        assert (synthetic_data["image_folder"] / record["image"]).is_file()
    for record in _load(synthetic_data, "sharegpt"):
        assert set(record) == {"id", "conversations"}
        assert "<image>" not in json.dumps(record)
    assert len({r["id"] for r in pretrain}) == len(pretrain)


def test_eval_capabilities_and_answers(synthetic_data):
    records = _load(synthetic_data, "eval")
    assert {r["capability"] for r in records} == set(CAPABILITIES)
    allowed = {
        "recognition": set(COLOURS) | set(SHAPES),
        "ocr": set(WORDS),
        "counting": {"1", "2", "3", "4"},
        "spatial": set(POSITIONS),
        "detail": set(PATTERNS),
        "binding": set(COLOURS),
    }
    for r in records:
        assert r["answer"] in allowed[r["capability"]]
        assert r["conversations"][1]["value"] == r["answer"]
        assert r["conversations"][0]["value"] == "<image>\n" + r["question"]


def test_background_is_the_clip_mean_colour(synthetic_data):
    # A background the image processor normalises to ~zero: empty patches add no offset shared by all images.
    from lmm.data.images import CLIP_MEAN

    assert tuple(int(m * 255) for m in CLIP_MEAN) == BACKGROUND
    first = _load(synthetic_data, "eval")[0]["image"]
    assert Image.open(synthetic_data["image_folder"] / first).getpixel((0, 0)) == BACKGROUND


def _foreground(image):
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return np.abs(pixels - np.array(BACKGROUND)).sum(axis=2) > 60


def _components(mask):
    seen, count = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            # 8-connected: an anti-aliased star tip can touch its body only at a corner.
            for ny, nx in ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return count


def test_answers_are_decidable_from_pixels(synthetic_data):
    folder = synthetic_data["image_folder"]
    for r in _load(synthetic_data, "eval"):
        image = Image.open(folder / r["image"])
        mask = _foreground(image)
        assert mask.any()
        if r["capability"] == "counting":
            assert _components(mask) == int(r["answer"])
        elif r["capability"] == "spatial":
            ys, xs = np.nonzero(mask)
            dx, dy = xs.mean() / mask.shape[1] - 0.5, ys.mean() / mask.shape[0] - 0.5
            side = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("bottom" if dy > 0 else "top")
            assert side == r["answer"]
        elif r["capability"] == "binding":
            # two shapes, one per half; the answer is the colour of one of them
            pixels = np.asarray(image.convert("RGB"))
            half = mask.shape[1] // 2
            colours = set()
            for columns in (slice(0, half), slice(half, None)):
                median = np.median(pixels[:, columns][mask[:, columns]], axis=0)
                colours.add(min(COLOURS, key=lambda c: np.abs(median - COLOURS[c]).sum()))
            assert len(colours) == 2 and r["answer"] in colours
        elif r["answer"] in COLOURS:
            pixels = np.asarray(image.convert("RGB"))[mask]
            nearest = min(COLOURS, key=lambda c: np.abs(np.median(pixels, axis=0) - COLOURS[c]).sum())
            assert nearest == r["answer"]


def test_blank_image_chance_is_low(synthetic_data):
    # Guessing the most common answer per capability must stay far from perfect.
    records = _load(synthetic_data, "eval")
    for capability in CAPABILITIES:
        answers = [r["answer"] for r in records if r["capability"] == capability]
        top = max(answers.count(a) for a in set(answers))
        assert top / len(answers) < 0.75


def _directional_contrast(tensor) -> tuple[float, float]:
    """Mean absolute difference between neighbouring rows and between neighbouring columns."""
    pixels = tensor.numpy()
    return float(np.abs(np.diff(pixels, axis=1)).mean()), float(np.abs(np.diff(pixels, axis=2)).mean())


def test_detail_stripes_are_resolved_at_48_px_and_blurred_at_32():
    """The resolution mechanism: 3 px stripes of the 64 px source pass a 48 px tower input, not a 32 px one."""
    import random

    from lmm.data.images import clip_image_processor, preprocess_image

    rng = random.Random(0)
    scenes = [s for s in (synthetic.sample_scene(rng, "detail") for _ in range(60)) if s.shape == "horizontal"][:8]
    contrast = {}
    for size in (32, 48):
        processor = clip_image_processor(size)
        rows_cols = [_directional_contrast(preprocess_image(synthetic.draw_scene(s, 64), processor)) for s in scenes]
        contrast[size] = np.mean([r - c for r, c in rows_cols])  # horizontal stripes: across rows, not columns
    assert contrast[48] > 3 * contrast[32] > 0


def test_text_eval_split_answers(synthetic_data):
    records = _load(synthetic_data, "text_eval")
    assert len(records) == 32 and {r["capability"] for r in records} == set(TEXT_KINDS)
    for r in records:
        assert "<image>" not in json.dumps(r) and r["question"].endswith(synthetic.SHORT_ANSWER)
        words = r["question"].split("\n")[0].rstrip("?.").split()
        if r["capability"] == "plus":
            assert int(r["answer"]) == int(words[2]) + int(words[4])
        elif r["capability"] == "minus":
            assert int(r["answer"]) == int(words[2]) - int(words[4])
        elif r["capability"] == "spell":
            assert r["answer"] == "-".join(words[-1])


def test_text_only_chats_teach_the_short_answer_format(synthetic_data):
    turns = [t for r in _load(synthetic_data, "sharegpt") for t in r["conversations"]]
    short = [q for q in turns[::2] if q["value"].endswith(synthetic.SHORT_ANSWER)]
    assert 0.3 < len(short) / len(turns[::2]) < 0.7
