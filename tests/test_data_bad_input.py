"""Bad training data gets a clear error or is dropped and counted by reason; the good samples are all kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from lmm.data import images as images_module
from lmm.data.dataset import BadImagesError, DataFileError, LlavaDataset, MissingDataFile, load_records
from lmm.data.images import clip_image_processor

HUMAN_IMAGE = {"from": "human", "value": "<image>\nWhat colour is the shape?"}
GPT = {"from": "gpt", "value": "red"}


@pytest.fixture(scope="module")
def processor():
    return clip_image_processor(32)


def record(i, image=None, conversations=None, **extra):
    rec = {"id": f"r{i}", "conversations": conversations or [
        HUMAN_IMAGE if image else {"from": "human", "value": "Hi"}, GPT], **extra}
    if image is not None:
        rec["image"] = image
    return rec


def jpeg(path: Path, colour="red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, quality=95)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut short: its header is fine (PIL's verify() passes it), its pixels do not decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise((96, 64), 64).convert("RGB").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(path) as image:
        image.verify()  # the old start-up check saw nothing wrong
    return path


def build(records, tokenizer, processor, folder, **kw):
    return LlavaDataset(records, tokenizer, "vicuna_v1", image_folder=folder, image_processor=processor,
                        num_image_tokens=4, **kw)


# ----------------------------------------------------------------------------- images


def test_undecodable_images_count_against_the_limit_instead_of_failing_mid_run(tmp_path, tiny_tokenizer, processor):
    folder = tmp_path / "images"
    records = [record(i, jpeg(folder / f"{i}.jpg").name) for i in range(19)]
    records.append(record(19, truncated_jpeg(folder / "cut.jpg").name))
    ds = build(records, tiny_tokenizer, processor, folder, max_bad_image_fraction=0.05)
    assert len(ds) == 19 and ds.stats.bad_images == 1 and "r19" not in ds.ids
    (example,) = ds.stats.bad_image_examples
    assert example.startswith(f"{folder / 'cut.jpg'} (unreadable (OSError: image file is truncated")
    assert all(ds[i]["pixel_values"].shape == (3, 32, 32) for i in range(len(ds)))  # every kept one decodes

    with pytest.raises(BadImagesError) as info:
        build(records, tiny_tokenizer, processor, folder, max_bad_image_fraction=0.01)
    message = str(info.value)
    assert "1 of 20 images" in message and "max_bad_image_fraction=0.01 (data.max_bad_fraction)" in message
    assert "cut.jpg" in message


def test_image_checks_are_cached_by_size_and_mtime(tmp_path, tiny_tokenizer, processor, monkeypatch):
    folder = tmp_path / "images"
    records = [record(i, jpeg(folder / f"{i}.jpg").name) for i in range(6)]
    decoded: list[str] = []
    real = images_module.load_image

    def counting(path):
        decoded.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(images_module, "load_image", counting)
    cache = tmp_path / "cache" / "image-check.json"
    build(records, tiny_tokenizer, processor, folder, image_check_cache=cache)
    assert sorted(decoded) == [f"{i}.jpg" for i in range(6)]
    assert len(json.loads(cache.read_text())["entries"]) == 6

    decoded.clear()
    build(records, tiny_tokenizer, processor, folder, image_check_cache=cache)  # a resumed run
    assert decoded == []

    truncated_jpeg(folder / "3.jpg")  # the file changes: it is decoded again, and now it is bad
    stamp = (folder / "3.jpg").stat().st_mtime_ns + 10**9
    os.utime(folder / "3.jpg", ns=(stamp, stamp))
    ds = build(records, tiny_tokenizer, processor, folder, image_check_cache=cache, max_bad_image_fraction=0.5)
    assert decoded == ["3.jpg"] and ds.stats.bad_images == 1 and "r3" not in ds.ids


def test_image_paths_must_stay_inside_the_image_folder(tmp_path, tiny_tokenizer, processor):
    folder = tmp_path / "data" / "images"
    jpeg(folder / "sub" / "ok.jpg")
    jpeg(tmp_path / "data" / "secret.jpg")  # exists, but outside the image folder
    records = [record(0, "sub/ok.jpg"), record(1, str(tmp_path / "data" / "secret.jpg")), record(2, "../secret.jpg"),
               record(3, "sub/../../secret.jpg"), record(4, "sub/./ok.jpg")]
    ds = build(records, tiny_tokenizer, processor, folder)
    assert ds.ids == ["r0", "r4"] and ds.stats.bad_images == 0
    assert ds.stats.dropped_by_reason == {"image path outside the image folder": 3}
    assert ds.stats.dropped_examples["image path outside the image folder"] == ["r1", "r2", "r3"]
    assert "3 image path outside the image folder (e.g. r1, r2, r3)" in ds.stats.summary()


# ----------------------------------------------------------------------------- records


def test_malformed_records_are_dropped_and_counted_by_reason(tmp_path, tiny_tokenizer, processor):
    folder = tmp_path / "images"
    jpeg(folder / "a.jpg")
    good = [record(0), record(1, "a.jpg")]
    # Written as JSON and read back, as a data file would be: "\ud800" is a lone surrogate in the text.
    bad = [
        {"id": "surrogate", "conversations": [{"from": "human", "value": "bad \ud800 text"}, GPT]},
        {"id": "as-string", "conversations": "human: hi gpt: hello"},
        ["not", "an", "object"],
        "just a string",
        {"id": "image-list", "image": ["a.jpg", "a.jpg"], "conversations": [HUMAN_IMAGE, GPT]},
        {"id": "no-conversations", "image": "a.jpg"},
        {"id": "no-value", "conversations": [{"from": "human"}, GPT]},
        {"id": "turn-string", "conversations": ["hi", GPT]},
        {"id": {"nested": 1}, "conversations": [{"from": "human", "value": "Hi"}, GPT]},
        {"id": "two-humans", "conversations": [{"from": "human", "value": "x"}, {"from": "human", "value": "y"}]},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps([*good, *bad]))
    ds = build(load_records(path), tiny_tokenizer, processor, folder)
    assert ds.ids == ["r0", "r1"] and ds.stats.records == 12 and ds.stats.dropped_malformed == 10
    assert ds.stats.dropped_by_reason == {
        "text is not valid Unicode (lone surrogate)": 1,
        "conversations is not a list": 1,
        "not a JSON object": 2,
        "image is not a file name": 1,
        "no conversations": 1,
        "a turn lacks a text 'from' or 'value'": 1,
        "a turn is not an object": 1,
        "id is not a string or number": 1,
        "conversation rejected by the template": 1,
    }
    assert ds.stats.dropped_examples["not a JSON object"] == ["#4", "#5"]
    assert ds.stats.dropped_examples["id is not a string or number"] == ["#10"]
    assert ds.stats.dropped_examples["text is not valid Unicode (lone surrogate)"] == ["surrogate"]


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("name,content,expected", [
    ("empty.json", b"", "is empty"),
    ("blank.json", b"  \n\n", "is empty"),
    ("broken.json", b'[{"id": 1,', "is not valid JSON"),
    ("latin1.json", '[{"id": "caf\u00e9"}]'.encode("latin-1"), "is not UTF-8 text (line 1, byte 12"),
    ("object.json", b'{"id": 1}', "expected a JSON list of records, got dict"),
    ("lines.jsonl", b'{"id": 1}\n{"id": 2\n', "line 2 is not valid JSON"),
])
def test_unreadable_data_files_raise_an_error_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        load_records(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_a_missing_data_file_is_named(tmp_path):
    with pytest.raises(MissingDataFile, match=f"data file {tmp_path / 'absent.json'} does not exist") as info:
        load_records(tmp_path / "absent.json")
    assert isinstance(info.value, FileNotFoundError)


# ----------------------------------------------------------------------------- training


def test_training_drops_an_undecodable_image_and_a_resume_does_not_decode_again(tmp_path, synthetic_data,
                                                                                 monkeypatch):
    from lmm.config import compose
    from lmm.pipeline import run_pipeline
    from lmm.records import read_record
    from lmm.training.data import build_training_data, image_check_cache

    folder = tmp_path / "llava" / "images"
    records = load_records(synthetic_data["finetune"])
    for rec in records:
        with Image.open(synthetic_data["image_folder"] / rec["image"]) as image:
            rec["image"] = str(Path(rec["image"]).with_suffix(".jpg"))
            (folder / rec["image"]).parent.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").save(folder / rec["image"])
    truncated_jpeg(folder / records[5]["image"])
    data_file = tmp_path / "llava" / "data.json"
    data_file.write_text(json.dumps(records))
    cfg = compose([f"paths.root={tmp_path}", "debug=fast", "data.kind=llava", f"data.path={data_file}",
                   f"data.image_folder={folder}", "data.max_bad_fraction=0.05"])
    stats = read_record(run_pipeline(cfg))["finetune"]["data"]
    assert stats["bad_images"] == 1 and stats["samples"] == len(records) - 1 and stats["dropped_malformed"] == 0
    assert records[5]["image"] in stats["bad_image_examples"][0]
    assert image_check_cache(cfg, cfg.data).exists()

    decoded: list = []
    monkeypatch.setattr(images_module, "load_image", decoded.append)
    from transformers import AutoTokenizer

    from lmm.models.assemble import assemble

    tokenizer = AutoTokenizer.from_pretrained(assemble(cfg))
    again = build_training_data(cfg, "finetune", tokenizer, clip_image_processor(32), 16)
    assert decoded == [] and again.stats["bad_images"] == 1  # a resumed run finds every check in the cache
