"""Dataset, images, collator, sampler, mixing and the inspect CLI."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lmm.data.collator import LlavaCollator
from lmm.data.dataset import BadImagesError, LlavaDataset, load_records, load_sharegpt, mix
from lmm.data.images import (
    CLIP_MEAN,
    CLIP_STD,
    background_colour,
    clip_image_processor,
    pad_to_square,
    preprocess_image,
)
from lmm.data.inspect import main as inspect_main
from lmm.data.sampler import ModalityLengthGroupedSampler, batched, padding_fraction
from lmm.data.tokenize import IGNORE_INDEX
from lmm.data.tokenizer import image_token_id

REPO = Path(__file__).resolve().parents[1]
NUM_IMAGE_TOKENS = 16


@pytest.fixture(scope="module")
def processor():
    return clip_image_processor(32)


@pytest.fixture(scope="module")
def records(synthetic_data):
    return mix(load_records(synthetic_data["finetune"]), load_sharegpt(synthetic_data["sharegpt"]), 0.5, seed=0)


@pytest.fixture(scope="module")
def dataset(records, synthetic_data, tiny_tokenizer, processor):
    return LlavaDataset(records, tiny_tokenizer, "vicuna_v1", image_folder=synthetic_data["image_folder"],
                        image_processor=processor, num_image_tokens=NUM_IMAGE_TOKENS, max_length=256)


def test_items_expand_the_image_token(dataset, tiny_tokenizer):
    image_id = image_token_id(tiny_tokenizer)
    i = dataset.has_image.index(True)
    item = dataset[i]
    assert (item["input_ids"] == image_id).sum() == NUM_IMAGE_TOKENS
    assert (item["labels"][item["input_ids"] == image_id] == IGNORE_INDEX).all()
    assert len(item["input_ids"]) == len(item["labels"]) == dataset.lengths[i] == dataset.text_lengths[i] + 15
    assert item["pixel_values"].shape == (3, 32, 32)
    ids, labels = dataset.tokens(i)
    assert (ids == image_id).sum() == 1
    trained = item["labels"] != IGNORE_INDEX
    assert torch.equal(item["labels"][trained], labels[labels != IGNORE_INDEX])

    j = dataset.has_image.index(False)
    text_item = dataset[j]
    assert text_item["pixel_values"] is None and image_id not in text_item["input_ids"]
    assert dataset.stats.image_samples == 64 and dataset.stats.text_samples == 32


def _record(i, image=None, conversation=None):
    record = {"id": f"r{i}", "conversations": conversation or [
        {"from": "human", "value": "<image>\nWhat colour is the shape?" if image else "Hi"},
        {"from": "gpt", "value": "red"},
    ]}
    if image:
        record["image"] = image
    return record


def test_samples_without_trained_tokens_are_dropped_and_counted(tiny_tokenizer):
    records = [
        _record(0),
        _record(1, conversation=[{"from": "human", "value": "a question nobody answers"}]),
        _record(2, conversation=[{"from": "human", "value": "word " * 60}, {"from": "gpt", "value": "cut"}]),
        _record(3, conversation=[{"from": "human", "value": "x"}, {"from": "human", "value": "y"}]),
    ]
    ds = LlavaDataset(records, tiny_tokenizer, "vicuna_v1", max_length=64)
    assert ds.ids == ["r0"]
    assert (ds.stats.dropped_no_label, ds.stats.dropped_malformed, ds.stats.samples) == (2, 1, 1)
    assert "2 without a trained token" in ds.stats.summary()


def test_bad_images_are_counted_and_the_limit_enforced(tmp_path, tiny_tokenizer, processor):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    records = [_record(i, "good.png") for i in range(8)] + [_record(8, "missing.png"), _record(9, "corrupt.png")]
    kwargs = {"image_folder": tmp_path, "image_processor": processor, "num_image_tokens": 4}

    ds = LlavaDataset(records, tiny_tokenizer, "vicuna_v1", max_bad_image_fraction=0.2, **kwargs)
    assert len(ds) == 8 and ds.stats.bad_images == 2
    assert any("missing.png (missing)" in p for p in ds.stats.bad_image_examples)

    with pytest.raises(BadImagesError) as err:
        LlavaDataset(records, tiny_tokenizer, "vicuna_v1", max_bad_image_fraction=0.1, **kwargs)
    message = str(err.value)
    assert "2 of 10 images" in message and "max_bad_image_fraction=0.1" in message
    assert "missing.png" in message and "corrupt.png" in message


def test_pad_to_square_uses_the_processor_mean(processor):
    assert background_colour(processor) == (122, 116, 104)
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    square = pad_to_square(wide, background_colour(processor))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (122, 116, 104) and square.getpixel((20, 20)) == (255, 0, 0)

    pixels = preprocess_image(wide, processor, "pad")
    assert pixels.shape == (3, 32, 32)
    assert pixels[:, 0, 0].abs().max() < 0.02  # the pad normalises to (almost) zero
    red = torch.tensor([(1 - CLIP_MEAN[0]) / CLIP_STD[0], -CLIP_MEAN[1] / CLIP_STD[1], -CLIP_MEAN[2] / CLIP_STD[2]])
    assert torch.allclose(pixels[:, 16, 16], red, atol=1e-3)
    resized = preprocess_image(wide, processor, "resize")
    assert torch.allclose(resized[:, 0, 0], red, atol=1e-3)  # stretched: no border
    with pytest.raises(ValueError, match="image_aspect"):
        preprocess_image(wide, processor, "zoom")


def test_collator_image_text_and_mixed_batches(dataset, tiny_tokenizer):
    collate = LlavaCollator(pad_token_id=tiny_tokenizer.pad_token_id)
    image_idx = [i for i, h in enumerate(dataset.has_image) if h][:3]
    text_idx = [i for i, h in enumerate(dataset.has_image) if not h][:2]

    batch = collate([dataset[i] for i in image_idx])
    width = max(dataset.lengths[i] for i in image_idx)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, width)
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["attention_mask"].sum(1).tolist() == [dataset.lengths[i] for i in image_idx]

    text = collate([dataset[i] for i in text_idx])
    assert "pixel_values" not in text

    mixed_idx = [text_idx[0], image_idx[0], text_idx[1], image_idx[1]]
    mixed = collate([dataset[i] for i in mixed_idx])
    assert mixed["pixel_values"].shape == (2, 3, 32, 32)
    assert torch.equal(mixed["pixel_values"][1], dataset[image_idx[1]]["pixel_values"])
    row, n = 0, dataset.lengths[text_idx[0]]
    assert (mixed["input_ids"][row, n:] == tiny_tokenizer.pad_token_id).all()
    assert (mixed["labels"][row, n:] == IGNORE_INDEX).all()
    assert LlavaCollator(0, pad_to_multiple_of=64)(
        [dataset[i] for i in text_idx])["input_ids"].shape[1] % 64 == 0


def test_sampler_keeps_modalities_apart_and_groups_lengths(dataset):
    batch_size, world_size = 4, 2
    sampler = ModalityLengthGroupedSampler(dataset.lengths, dataset.has_image, batch_size, world_size, seed=1)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % (batch_size * world_size) == 0
    assert set(order) == set(range(len(dataset)))
    for step in batched(order, batch_size * world_size):
        assert len({dataset.has_image[i] for i in step}) == 1
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order and sorted(set(sampler)) == sorted(set(order))


def test_grouping_reduces_padding():
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(2000)]
    has_image = [rng.random() < 0.7 for _ in lengths]
    grouped = list(ModalityLengthGroupedSampler(lengths, has_image, batch_size=8, world_size=2, seed=0))
    shuffled = list(range(len(lengths)))
    rng.shuffle(shuffled)
    grouped_pad = padding_fraction(lengths, batched(grouped, 8))
    random_pad = padding_fraction(lengths, batched(shuffled, 8))
    assert grouped_pad < 0.05
    assert random_pad > 0.3
    assert max(lengths[i] for i in grouped[:16]) == max(lengths)  # longest step first
    assert padding_fraction([3, 3], [[0, 1]]) == 0.0 and padding_fraction([1, 3], [[0, 1]]) == pytest.approx(1 / 3)


def test_dataloader_with_sampler_and_collator(dataset, tiny_tokenizer):
    sampler = ModalityLengthGroupedSampler(dataset.lengths, dataset.has_image, batch_size=4, seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler,
                        collate_fn=LlavaCollator(tiny_tokenizer.pad_token_id))
    for batch in loader:
        image_rows = (batch["input_ids"] == image_token_id(tiny_tokenizer)).any(1)
        assert image_rows.all() or not image_rows.any()
        assert ("pixel_values" in batch) == bool(image_rows.all())
        if "pixel_values" in batch:
            assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0]


def test_mix_ratio_is_exact_deterministic_and_even():
    llava = [{"id": f"l{i}"} for i in range(10)]
    share = [{"id": f"s{i}"} for i in range(3)]
    mixed = mix(llava, share, 2.0, seed=5)
    assert mixed[:10] == llava and len(mixed) == 30
    counts = [sum(r["id"] == s["id"] for r in mixed) for s in share]
    assert max(counts) - min(counts) <= 1
    assert mix(llava, share, 2.0, seed=5) == mixed and mix(llava, share, 2.0, seed=6) != mixed
    assert len(mix(llava, share, 0.25, seed=0)) == 12  # round(0.25 × 10) == 2
    assert mix(llava, [], 0.0, seed=0) == llava
    with pytest.raises(ValueError):
        mix(llava, [], 0.5, seed=0)


def test_inspect_cli_json(synthetic_data, tiny_tokenizer, tmp_path):
    records = load_records(synthetic_data["finetune"])[:3] + load_records(synthetic_data["sharegpt"])[:1]
    data = tmp_path / "sample.json"
    data.write_text(json.dumps(records))
    cmd = [sys.executable, "-m", "lmm.data.inspect", str(data), "--template", "vicuna_v1", "--tokenizer", "tiny",
           "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
    samples = json.loads(out.stdout)
    assert [s["id"] for s in samples] == [r["id"] for r in records]
    image_id = image_token_id(tiny_tokenizer)
    for sample, record in zip(samples, records):
        assert sample["input_ids"].count(image_id) == (1 if "image" in record else 0)
        assert len(sample["labels"]) == len(sample["input_ids"])
        assert sample["labels"][-1] == tiny_tokenizer.eos_token_id and sample["labels"][0] == IGNORE_INDEX


def test_inspect_marks_trained_tokens(synthetic_data, tmp_path, capsys):
    inspect_main([str(synthetic_data["finetune"]), "--template", "vicuna_v1", "--tokenizer", "tiny",
                  "--cache-dir", str(tmp_path), "--limit", "1", "--max-length", "512"])
    shown = capsys.readouterr().out
    assert shown.startswith("== train-000000:") and "[</s>]" in shown and " <image> " in shown
    assert "[▁ASSISTANT]" not in shown and "▁ASSISTANT :" in shown
