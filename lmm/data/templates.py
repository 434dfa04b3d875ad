"""Conversation templates: lay out a conversation as LLaVA's plain, vicuna_v1 and llama_2 prompts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

IMAGE_TOKEN = "<image>"
BOS = "<s>"
EOS = "</s>"

USER = "user"
ASSISTANT = "assistant"

# LLaVA JSON says human/gpt; ShareGPT dumps also carry the chatbot's own name.
_ROLE_ALIASES = {
    "human": USER,
    "user": USER,
    "gpt": ASSISTANT,
    "assistant": ASSISTANT,
    "chatgpt": ASSISTANT,
    "bard": ASSISTANT,
    "bing": ASSISTANT,
    "model": ASSISTANT,
}

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)


@dataclass(frozen=True)
class Turn:
    """One message: role is "user" or "assistant"."""

    role: str
    text: str


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered prompt.

    `trained` marks the tokens that carry loss. A `special` segment is a single special token
    (`<image>`, `<s>`, `</s>`) emitted by id, never run through the text tokenizer.
    """

    text: str
    trained: bool = False
    special: bool = False


class Template(Protocol):
    name: str

    def segments(self, turns: Sequence[Turn], add_generation_prompt: bool = False) -> list[Segment]: ...


def normalize_turns(conversation: Iterable[Turn | Mapping[str, str]]) -> list[Turn]:
    """Turn LLaVA/ShareGPT/chat dicts into Turns; drop a leading assistant turn and empty system turns."""
    turns = []
    for item in conversation:
        if isinstance(item, Turn):
            turns.append(item)
            continue
        raw_role = str(item.get("from", item.get("role", ""))).lower()
        if raw_role == "system":
            continue
        if raw_role not in _ROLE_ALIASES:
            raise ValueError(f"unknown conversation role {raw_role!r}; expected one of {sorted(_ROLE_ALIASES)}")
        turns.append(Turn(_ROLE_ALIASES[raw_role], str(item.get("value", item.get("content", "")))))
    # LLaVA skips a conversation's first turn when it is not the human's: the model never answers nothing.
    while turns and turns[0].role != USER:
        turns = turns[1:]
    return turns


def place_image(turns: Sequence[Turn], has_image: bool) -> list[Turn]:
    """Put exactly one `<image>` at the start of the first user turn, followed by a newline (as LLaVA does).

    Without an image every placeholder is removed, so a text-only sample never carries an image token.
    """
    stripped = [Turn(t.role, t.text.replace(IMAGE_TOKEN, "").strip()) if IMAGE_TOKEN in t.text else t for t in turns]
    if not has_image:
        return stripped
    first_user = next((i for i, t in enumerate(stripped) if t.role == USER), None)
    if first_user is None:
        raise ValueError("a conversation with an image needs a user turn to hold it")
    head = stripped[first_user]
    stripped[first_user] = Turn(USER, f"{IMAGE_TOKEN}\n{head.text}" if head.text else IMAGE_TOKEN)
    return stripped


def _check_alternating(turns: Sequence[Turn]) -> None:
    for i, turn in enumerate(turns):
        expected = USER if i % 2 == 0 else ASSISTANT
        if turn.role != expected:
            raise ValueError(f"turn {i} is from {turn.role!r}, expected {expected!r}: turns must alternate")


def _user_text(text: str) -> list[Segment]:
    """Split user text around `<image>` so the placeholder becomes its own special segment."""
    segments: list[Segment] = []
    for i, part in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            segments.append(Segment(IMAGE_TOKEN, special=True))
        if part:
            segments.append(Segment(part))
    return segments


@dataclass(frozen=True)
class PlainTemplate:
    """Stage 1: `<image>` then the caption and `</s>`; the human's words are dropped, only the image stays.

    LLaVA's own plain template ended the caption with "\\n"; ending it with `</s>` lets a stage-1
    model stop generating, at the cost of one token per sample.
    """

    name: str = "plain"

    def segments(self, turns: Sequence[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        _check_alternating(turns)
        has_image = bool(turns) and IMAGE_TOKEN in turns[0].text
        out = [Segment(IMAGE_TOKEN, special=True)] if has_image else []
        if add_generation_prompt:
            return out
        if len(turns) < 2:
            raise ValueError("the plain template needs a user turn and the assistant's caption")
        # Only the first exchange counts: plain data is one caption per image.
        return out + [Segment(turns[1].text, trained=True), Segment(EOS, trained=True, special=True)]


@dataclass(frozen=True)
class VicunaV1Template:
    """Vicuna v1: "SYSTEM USER: q ASSISTANT: a</s>USER: …"; the reply's leading space is trained with it."""

    name: str = "vicuna_v1"
    system: str = VICUNA_SYSTEM

    def segments(self, turns: Sequence[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        _check_alternating(turns)
        out = [Segment(self.system + " ")] if self.system else []
        for turn in turns:
            if turn.role == USER:
                out += [Segment("USER: "), *_user_text(turn.text), Segment(" ")]
            else:
                # The split falls before the space: ":" then "▁answer" is how SentencePiece cuts it.
                out += [Segment("ASSISTANT:"), Segment(" " + turn.text, trained=True)]
                out.append(Segment(EOS, trained=True, special=True))
        if add_generation_prompt:
            out.append(Segment("ASSISTANT:"))
        return _merge(out)


@dataclass(frozen=True)
class Llama2Template:
    """LLaMA-2 chat: "[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nq [/INST] a </s><s>[INST] q2 [/INST] …"."""

    name: str = "llama_2"
    system: str = LLAMA_2_SYSTEM

    def segments(self, turns: Sequence[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        _check_alternating(turns)
        out: list[Segment] = []
        for i, turn in enumerate(turns):
            if turn.role == USER:
                if i:
                    # The tokenizer adds the first <s>; later rounds open with their own.
                    out.append(Segment(BOS, special=True))
                head = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" if i == 0 and self.system else ""
                out += [Segment("[INST] " + head), *_user_text(turn.text), Segment(" [/INST]")]
            else:
                out += [Segment(f" {turn.text} ", trained=True), Segment(EOS, trained=True, special=True)]
        return _merge(out)


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring text segments with the same mask, so boundaries sit only where the mask changes."""
    merged: list[Segment] = []
    for seg in segments:
        if not seg.text:
            continue
        prev = merged[-1] if merged else None
        if prev and not prev.special and not seg.special and prev.trained == seg.trained:
            merged[-1] = Segment(prev.text + seg.text, prev.trained)
        else:
            merged.append(seg)
    return merged


TEMPLATES: dict[str, Template] = {
    "plain": PlainTemplate(),
    "vicuna_v1": VicunaV1Template(),
    "llama_2": Llama2Template(),
}
# LLaVA's own names for the same layouts.
_ALIASES = {"v1": "vicuna_v1", "llava_v1": "vicuna_v1", "llava_llama_2": "llama_2"}


def get_template(name: str | Template) -> Template:
    """The template registered under `name` (or `name` itself when it already is a template)."""
    if not isinstance(name, str):
        return name
    key = _ALIASES.get(name, name)
    if key not in TEMPLATES:
        raise KeyError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[key]


def render(
    template: str | Template,
    conversation: Iterable[Turn | Mapping[str, str]],
    *,
    has_image: bool | None = None,
    add_generation_prompt: bool = False,
) -> list[Segment]:
    """Normalise the turns, place the image and lay them out with the template."""
    turns = normalize_turns(conversation)
    if add_generation_prompt and turns and turns[-1].role != USER:
        raise ValueError("a generation prompt must end on a user turn; drop the assistant's last reply")
    if has_image is None:
        has_image = any(IMAGE_TOKEN in t.text for t in turns)
    return get_template(template).segments(place_image(turns, has_image), add_generation_prompt)


def build_prompt(
    template: str | Template,
    turns: Iterable[Turn | Mapping[str, str]],
    add_generation_prompt: bool = True,
    *,
    has_image: bool | None = None,
) -> str:
    """The prompt text (with `<image>` and `</s>` written out) to feed a generating model.

    With `add_generation_prompt` the conversation should end on a user turn; the text then ends
    where the assistant's reply begins ("ASSISTANT:", " [/INST]", or after `<image>` for plain).
    """
    segments = render(template, turns, has_image=has_image, add_generation_prompt=add_generation_prompt)
    return "".join(seg.text for seg in segments)
