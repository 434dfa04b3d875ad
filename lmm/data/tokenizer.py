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

from . import templates

IMAGE_TOKEN = templates.IMAGE_TOKEN
TINY_VERSION = 1
LLAMA_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

# The tiny tokenizer's whole vocabulary of words: each becomes one "▁word" piece. It is frozen here
# (not read from the synthetic generator) so that the tiny tokenizer, and the ids in tests and
# checkpoints, change only when this list does; bump TINY_VERSION when editing it. Words outside
# it still tokenise, into smaller pieces or bytes.
_TINY_WORDS_TEXT = """
a about after all also am an and answer answers any are as ask assist assistant at back background be
because been before between big bigger black blue bottom box but by can cat centre chat circle circles
cold colour colours color come content could count cup curious day describe detail detailed did do does
dog done down each else empty equal equals even first five for four from get give gives go good green
had has hat have he help helpful her here hi him his hello hot how i if image images in intelligence
into is it its just know language large left letters like look make many me middle minus more most my
natural new night nine no not nothing now number of on one only opposite or orange other our out over
pen people photo picture plain please plus polite provides purple question questions red rest right
said say see seven shape shapes she show shows single six small smaller so some spell square squares
star stars sun take tasks ten text than thank thanks that the their them then there these they think
this those three time to top total triangle triangles two understand up us use user using variety
vision visual was way we well were what where which white who why will with word words would written
yellow yes you your zero able artificial briefly phrase reads shown part
A An And Answer Are Can Describe Do Does How In Is It No Nothing One Two Three Four Five Six Seven Eight
Nine Ten Spell Text That The There This What Where Which Who Why Yes You
USER ASSISTANT SYSTEM INST SYS
"""
TINY_WORDS = _TINY_WORDS_TEXT.split()


def default_cache_dir() -> Path:
    """$LMM_CACHE_DIR, else ./.cache/lmm (git-ignored)."""
    return Path(os.environ.get("LMM_CACHE_DIR", Path.cwd() / ".cache" / "lmm"))


def tiny_corpus() -> list[str]:
    """Training text for the tiny tokenizer: every word of TINY_WORDS, and every printable character."""
    words = sorted(set(TINY_WORDS))
    # A word right after punctuation or a newline has no "▁" ("[INST]", "\nWhat"): learn those forms
    # for the capitalised words too.
    glued = " ".join("(" + w for w in words if w[0].isupper())
    chars = " ".join(string.ascii_letters + string.digits + string.punctuation)
    return [" ".join(words), glued, chars]


def build_tiny_tokenizer(cache_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """A small LLaMA-like BPE tokenizer, trained offline and cached as a folder (same bytes on rebuild).

    Ids follow LLaMA: `<unk>`=0, `<s>`=1, `</s>`=2, bytes `<0x00>`..`<0xFF>`=3..258 (byte fallback,
    so any text tokenises), then the learned pieces, then the added `<pad>` and `<image>`. Like a
    legacy LLaMA tokenizer it puts "▁" in front of every piece of text between special tokens.
    """
    corpus = tiny_corpus()
    key = hashlib.sha256(json.dumps([TINY_VERSION, corpus]).encode()).hexdigest()[:12]
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
    # A generous size: training stops by itself once every word is one piece.
    trainer = trainers.BpeTrainer(
        vocab_size=8192, initial_alphabet=alphabet, special_tokens=[], show_progress=False, min_frequency=1,
    )
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = _pre_tokenizer()
    learner.train_from_iterator(corpus, trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = sorted(learned["vocab"], key=learned["vocab"].get)
    vocab_list = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(
        vocab={t: i for i, t in enumerate(vocab_list)}, merges=merges, unk_token="<unk>",
        byte_fallback=True, fuse_unk=True,
    ))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<pad>", IMAGE_TOKEN)])
    return tok


def _pre_tokenizer():
    # prepend_scheme="always": "▁" before every piece between special tokens, as legacy LLaMA does;
    # punctuation and single digits stand alone, as they mostly do in LLaMA's vocabulary.
    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])


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
    if IMAGE_TOKEN not in tok.all_special_tokens:
        # Registered as a named special token too (not only an added one), so that decoding with
        # skip_special_tokens drops it; normalized=False keeps LLaMA's "▁" prefixing off it.
        image = AddedToken(IMAGE_TOKEN, special=True, normalized=False)
        tok.add_special_tokens({"extra_special_tokens": [image]}, replace_extra_special_tokens=False)
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
