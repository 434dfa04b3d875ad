"""Tokenise a templated conversation into input ids and labels that train only the assistant's replies.

The prompt is tokenised piece by piece, but the pieces are cut where the tokenizer itself cuts:
at special tokens (`<s>`, `</s>`, `<image>`), which a Hugging Face tokenizer splits out before it
normalises the text between them. Each piece of text between two special tokens (a "chunk") is
tokenised in context, i.e. behind the special token that precedes it, so a legacy LLaMA
tokenizer's "▁" prefix (or a non-legacy one's lack of it) comes out as in the whole prompt.
Inside a chunk the masked/trained boundary is found by tokenising the chunk up to the boundary
and keeping the tokens it shares with the whole chunk; a token that straddles the boundary is
trained. With `check=True` the concatenation is compared with tokenising the whole prompt at
once, and any difference raises `TokenizationMismatch` (LLaVA's "tokenization mismatch" bugs came
from counting tokens per round instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .templates import Segment, Template, Turn, render

IGNORE_INDEX = -100


class TokenizationMismatch(ValueError):
    """Tokenising a prompt by segments gave other ids than tokenising it whole."""


def tokenize_conversation(
    conversation: Iterable[Turn | Mapping[str, str]],
    template: str | Template,
    tokenizer,
    max_length: int | None = None,
    *,
    has_image: bool | None = None,
    check: bool = True,
) -> dict[str, list[int]]:
    """`{"input_ids", "labels"}` for one training conversation; labels are -100 except on replies.

    The `<image>` placeholder is a single token id; `max_length` truncates both lists (the image
    counting as one token, like LLaVA's `model_max_length`).
    """
    segments = render(template, conversation, has_image=has_image)
    ids, labels = tokenize_segments(segments, tokenizer, check=check)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def tokenize_prompt(
    conversation: Iterable[Turn | Mapping[str, str]],
    template: str | Template,
    tokenizer,
    *,
    has_image: bool | None = None,
    check: bool = True,
) -> list[int]:
    """Input ids of a generation prompt (conversation ending on a user turn), as training saw them."""
    segments = render(template, conversation, has_image=has_image, add_generation_prompt=True)
    return tokenize_segments(segments, tokenizer, check=check)[0]


def tokenize_segments(
    segments: Sequence[Segment], tokenizer, *, check: bool = True
) -> tuple[list[int], list[int]]:
    """Ids and labels for rendered segments, with the tokenizer's leading specials (LLaMA: `<s>`)."""
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    anchor: str | None = None  # the special token in front of the current chunk; None at the start
    chunk: list[Segment] = []
    for seg in [*segments, None]:
        if seg is not None and not seg.special:
            chunk.append(seg)
            continue
        for piece_ids, trained in _tokenize_chunk(chunk, anchor, tokenizer):
            ids += piece_ids
            labels += piece_ids if trained else [IGNORE_INDEX] * len(piece_ids)
        chunk = []
        if seg is not None:
            token_id = special_token_id(tokenizer, seg.text)
            ids.append(token_id)
            labels.append(token_id if seg.trained else IGNORE_INDEX)
            anchor = seg.text
    if check:
        _check_whole(segments, ids, tokenizer)
    return ids, labels


def special_token_id(tokenizer, token: str) -> int:
    """The id of a special token, with a clear error when the tokenizer lacks it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(
            f"{token!r} is not a token of this tokenizer; load it with lmm.data.tokenizer.load_tokenizer "
            "(which adds <image> and checks <s>/</s>)"
        )
    return token_id


def _tokenize_chunk(chunk: Sequence[Segment], anchor: str | None, tokenizer):
    """(ids, trained) per segment of a chunk, cut from the chunk's in-context tokenisation."""
    if not chunk:
        return []
    whole = _encode_in_context("".join(s.text for s in chunk), anchor, tokenizer)
    pieces, start, prefix = [], 0, ""
    for seg in chunk[:-1]:
        prefix += seg.text
        # The longest common prefix decides the cut, so a straddling token lands on the later side.
        end = max(start, _common_prefix(_encode_in_context(prefix, anchor, tokenizer), whole))
        pieces.append((whole[start:end], seg.trained))
        start = end
    pieces.append((whole[start:], chunk[-1].trained))
    return pieces


def _encode_in_context(text: str, anchor: str | None, tokenizer) -> list[int]:
    """Tokenise `text` as it is tokenised right after the special token `anchor`."""
    if anchor is None:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(anchor + text, add_special_tokens=False)["input_ids"])
    if not ids or ids[0] != special_token_id(tokenizer, anchor):
        raise TokenizationMismatch(f"the tokenizer does not split out {anchor!r} as one special token")
    return ids[1:]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _check_whole(segments: Sequence[Segment], ids: list[int], tokenizer) -> None:
    text = "".join(seg.text for seg in segments)
    whole = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if whole == ids:
        return
    at = _common_prefix(whole, ids)
    show = tokenizer.convert_ids_to_tokens
    raise TokenizationMismatch(
        f"segment tokenisation differs from whole-prompt tokenisation at token {at} "
        f"(segments: {show(ids[max(0, at - 3) : at + 3])}, whole: {show(whole[max(0, at - 3) : at + 3])}) "
        f"for prompt {text[:200]!r}"
    )
