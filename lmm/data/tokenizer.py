"""Load tokenizers (tiny, a folder, or a LLaMA-style tokenizer.json) with `<image>` and a pad token in place.

Padding policy: a tokenizer without a pad token (LLaMA, Vicuna) pads with `<unk>`, as LLaVA does
for its v1 templates. That adds no embedding row; padded positions never matter because the
collator masks them out of attention and loss (it builds the attention mask from lengths, so a
real `<unk>` in the text is not mistaken for padding). The tiny tokenizer has its own `<pad>`.
`<image>` is always an added special token (one id, never split, never normalised).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from . import synthetic, templates

IMAGE_TOKEN = templates.IMAGE_TOKEN
TINY_VERSION = 1
TINY_PIECES = 720  # BPE pieces learned on top of the alphabet; with bytes and specials ~1k ids in all
LLAMA_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

# Common English, so that prompts outside the synthetic data still tokenise into sensible pieces.
_BASIC_ENGLISH = """
the be to of and a in that have I it for not on with he as you do at this but his by from they we say
her she or an will my one all would there their what so up out if about who get which go me when make
can like time no just him know take people into year your good some could them see other than then now
look only come its over think also back after use two how our work first well way even new want because
any these give day most us is are was were has had been am did does done said yes please thank thanks
hello hi help answer question questions image picture photo shows show see describe detail detailed
colour color shape shapes word text written letters number many how where which what left right top
bottom middle centre center small big large single plain background white black dark nothing else rest
empty total there here in on at the of one two three four five six seven eight nine ten zero plus minus
equal equals bigger smaller opposite spell hot cold day night up down chat between curious user
artificial intelligence assistant gives helpful polite answers user's questions language vision visual
content provides able understand variety tasks using natural You are
""".split()


def default_cache_dir() -> Path:
    """$LMM_CACHE_DIR, else ./.cache/lmm (git-ignored)."""
    return Path(os.environ.get("LMM_CACHE_DIR", Path.cwd() / ".cache" / "lmm"))


def tiny_corpus() -> list[str]:
    """The text the tiny tokenizer is trained on: synthetic data, prompt templates, basic English."""
    lines = list(synthetic.corpus_lines())
    # Repeated so the role markers become whole pieces, as they would in a real vocabulary.
    lines += [templates.VICUNA_SYSTEM, templates.LLAMA_2_SYSTEM, "USER: ASSISTANT:", "[INST] <<SYS>> <</SYS>> [/INST]"] * 10
    lines += [" ".join(_BASIC_ENGLISH)] * 3
    # Each character once, so every printable ASCII character has a piece of its own.
    lines.append(" ".join(string.ascii_letters + string.digits + string.punctuation))
    # No newline in training: like LLaMA, "\n" then falls back to its byte token <0x0A>.
    return [line.replace("\n", " ") for line in lines]


def build_tiny_tokenizer(cache_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """A small LLaMA-like BPE tokenizer, trained offline and cached as a folder (same bytes on rebuild).

    Ids follow LLaMA: `<unk>`=0, `<s>`=1, `</s>`=2, bytes `<0x00>`..`<0xFF>`=3..258 (byte fallback,
    so any text tokenises), then the learned pieces, then the added `<pad>` and `<image>`. Like a
    legacy LLaMA tokenizer it puts "▁" in front of every piece of text between special tokens.
    """
    corpus = tiny_corpus()
    key = hashlib.sha256(json.dumps([TINY_VERSION, TINY_PIECES, corpus]).encode()).hexdigest()[:12]
    folder = Path(cache_dir or default_cache_dir()) / f"tiny-tokenizer-{key}"
    if not (folder / "tokenizer.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(dir=folder.parent, prefix=".building-")
        _wrap(_train_tiny(corpus)).save_pretrained(staging)
        try:
            # Move the complete folder into place, so concurrent builders never see half of one.
            os.replace(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process finished first
    return _prepare(PreTrainedTokenizerFast.from_pretrained(str(folder)))


def _train_tiny(corpus: list[str]) -> Tokenizer:
    alphabet = sorted(set(string.printable.strip()) | {"▁"})
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + TINY_PIECES, initial_alphabet=alphabet, special_tokens=[],
        show_progress=False, min_frequency=1,
    )
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = _metaspace()
    learner.train_from_iterator(corpus, trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = sorted(learned["vocab"], key=learned["vocab"].get)
    vocab_list = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(
        vocab={t: i for i, t in enumerate(vocab_list)}, merges=merges, unk_token="<unk>",
        byte_fallback=True, fuse_unk=True,
    ))
    tok.pre_tokenizer = _metaspace()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<pad>", IMAGE_TOKEN)])
    return tok


def _metaspace():
    # prepend_scheme="always": "▁" before every piece between special tokens, as legacy LLaMA does.
    return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", model_max_length=1 << 30, **LLAMA_SPECIALS)


def load_tokenizer(path_or_name: str | Path, cache_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """"tiny", a tokenizer folder or hub name (AutoTokenizer), or a LLaMA-style `tokenizer.json` file."""
    name = str(path_or_name)
    if name == "tiny":
        return build_tiny_tokenizer(cache_dir)
    path = Path(name)
    if path.is_file() and path.suffix == ".json":
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path), model_max_length=1 << 30, **LLAMA_SPECIALS)
    else:
        tok = AutoTokenizer.from_pretrained(name, cache_dir=None if cache_dir is None else str(cache_dir))
    return _prepare(tok)


def _prepare(tok) -> PreTrainedTokenizerFast:
    """Add `<image>` as a special token if missing, pick a pad token, pad on the right for training."""
    if tok.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tok.unk_token_id):
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    for role in ("bos_token", "eos_token"):
        if getattr(tok, role) is None:
            raise ValueError(f"tokenizer has no {role}; the conversation templates need <s> and </s>")
    tok.padding_side = "right"
    return tok


def image_token_id(tokenizer) -> int:
    """The id of the `<image>` placeholder (what `LlavaConfig.image_token_id` must be set to)."""
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError("the tokenizer has no <image> token; load it with lmm.data.tokenizer.load_tokenizer")
    return token_id
