"""`python -m lmm.data.sharegpt IN.json --out OUT.json`: clean a ShareGPT dump the way Vicuna's was cleaned.

The steps follow FastChat's ShareGPT cleaning (clean_sharegpt, optional_clean, split_long_conversation),
written here from their description; every conversation or turn left out is counted under its reason:

1. **broken** records are dropped: not an object, no `conversations` list, a turn without a text `from`
   and `value`, an unknown role, text that is not valid Unicode.
2. Roles become `human` / `gpt` (user, chatgpt, bard, bing, assistant, model are aliases); `system` turns
   are dropped.
3. **HTML to Markdown**: a turn whose text holds HTML tags goes through BeautifulSoup + markdownify
   (`<div>`/`<span>` wrappers removed first, so code blocks keep their indentation; underscores and
   asterisks not escaped); then ChatGPT's page furniture is removed: "```pythonCopy code..." becomes a
   fenced block with its language, a leading "N / N" (regenerations) and "CopyN chars / N words" go,
   runs of blank lines shrink to one. A turn the parser rejects drops its conversation (**html_error**).
4. **Role order**: leading `gpt` turns and a final unanswered `human` turn are dropped (turn counts);
   turns from the first one out of the human/gpt alternation on are dropped (**wrong_role_order**).
5. **Empty turns**: a round (a `human` turn and its `gpt` reply) with an empty side is dropped whole.
6. A conversation left without a round is dropped (**empty**).
7. **Blocked words** (FastChat's "openai", "chatgpt"; `--blocked-words ""` keeps them): dropped.
8. **Language** (`--lang en`): langdetect (seeded, deterministic) on the conversation's text; another or
   an undetectable language is dropped (**language**). Off by default.
9. **Duplicates**: a repeated id (**duplicate_id**), or the same first question, first reply and number of
   turns as an earlier conversation (**duplicate_content**; FastChat keys on the first reply and length).
10. **Splitting** (`--tokenizer`; `--max-length`, default 2048, the paper's): a conversation longer than the
    context is cut at round boundaries into chunks, each the longest run of whole rounds whose prompt,
    laid out in `--template` (vicuna_v1 by default) and tokenised with the run's tokenizer exactly as
    training sees it, fits in `--max-length` tokens; a single round longer than that is its own chunk
    (training truncates it; counted). Chunks get ids `<id>_<n>` (n from 0).

The output is a JSON list of `{"id", "conversations": [{"from": "human"|"gpt", "value"}]}` records, what
`lmm.data.dataset.load_sharegpt` reads. The counts (and, with a tokenizer, the token count of the result,
beside the 159M tokens of the paper's ShareGPT for Vicuna-65B) are printed and written to OUT.report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .dataset import load_records

HUMAN, GPT = "human", "gpt"
ROLES = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "chatgpt": GPT, "bard": GPT, "bing": GPT,
         "assistant": GPT, "model": GPT}
BLOCKED_WORDS = ("openai", "chatgpt")
# The paper: Vicuna-65B was trained on ShareGPT data of 159M tokens (the figure to compare with).
PAPER_SHAREGPT_TOKENS = 159_000_000
DEFAULT_MAX_LENGTH = 2048

_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")
_WRAPPER_TAG = re.compile(r"</?(div|span)(\s[^<>]*)?>", re.IGNORECASE)
_COPY_CODE_BLOCK = re.compile(r"```[ \t]*\n?([^\n`]*?)(?:Copy code)+(.+?)\s*```", re.DOTALL)
_EMPTY_COPY_BLOCK = re.compile(r"```[^\n`]*\n?\s*```")
_REGENERATIONS = re.compile(r"^\s*\d+\s*/\s*\d+")
_COPY_COUNTS = re.compile(r"Copy\d+ chars / \d+ words")
_BLANK_RUNS = re.compile(r"\n{3,}")


# -- one conversation -------------------------------------------------------------------------------


class HTMLError(ValueError):
    """A turn's HTML could not be converted."""


def html_to_markdown(text: str) -> str:
    """A ChatGPT page's HTML as Markdown; text without tags only loses ChatGPT's furniture."""
    if _HTML_TAG.search(text):
        import markdownify

        try:
            text = markdownify.markdownify(_WRAPPER_TAG.sub("", text), heading_style="ATX",
                                           escape_underscores=False, escape_asterisks=False)
        except Exception as err:  # bs4's ParserRejectedMarkup, assertion errors in odd markup, deep nesting
            raise HTMLError(f"{type(err).__name__}: {err}") from None
    text = _COPY_CODE_BLOCK.sub(lambda m: f"```{m[1].strip()}\n{m[2].strip(chr(10))}\n```", text)
    text = _REGENERATIONS.sub("", text, count=1)
    text = _COPY_COUNTS.sub("", text)
    text = _EMPTY_COPY_BLOCK.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Cleaned:
    """What cleaning one record gave: the record (None when dropped), the reason, turns dropped by reason."""

    record: dict | None
    reason: str | None = None
    turns_dropped: Counter = field(default_factory=Counter)
    detail: str = ""


@dataclass(frozen=True)
class Options:
    lang: str | None = None
    blocked_words: tuple[str, ...] = BLOCKED_WORDS


def _turns(record) -> tuple[list[tuple[str, str]] | None, str]:
    """(role, text) turns of a record, or None and why it is broken."""
    if not isinstance(record, dict):
        return None, "not a JSON object"
    conversation = record.get("conversations")
    if not isinstance(conversation, list):
        return None, "conversations is not a list"
    if "id" in record and not isinstance(record["id"], (str, int)):
        return None, "id is not a string or number"
    turns = []
    for turn in conversation:
        if not (isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)):
            return None, "a turn lacks a text 'from' or 'value'"
        role = turn["from"].strip().lower()
        if role == "system":
            continue
        if role not in ROLES:
            return None, f"unknown role {turn['from']!r}"
        if not _valid(turn["value"]):
            return None, "text is not valid Unicode"
        turns.append((ROLES[role], turn["value"]))
    return turns, ""


def rounds_of(turns: Sequence[tuple[str, str]], dropped: Counter) -> list[tuple[str, str]]:
    """(question, reply) rounds: leading replies, a final unanswered question and everything from the first
    turn out of alternation on are dropped (counted in `dropped`), then rounds with an empty side."""
    start = 0
    while start < len(turns) and turns[start][0] != HUMAN:
        start += 1
    dropped["leading_gpt_turn"] += start
    turns = turns[start:]
    end = len(turns)
    for i, (role, _) in enumerate(turns):
        if role != (HUMAN if i % 2 == 0 else GPT):
            end = i
            break
    dropped["wrong_role_order"] += len(turns) - end
    turns = turns[:end]
    if len(turns) % 2:
        dropped["unanswered_last_turn"] += 1
        turns = turns[:-1]
    rounds = []
    for i in range(0, len(turns), 2):
        question, reply = turns[i][1], turns[i + 1][1]
        if question.strip() and reply.strip():
            rounds.append((question, reply))
        else:
            dropped["empty_turn_round"] += 2
    return rounds


def clean_record(record, options: Options = Options()) -> Cleaned:
    """One record cleaned (steps 1-8 of the module docstring), or None with the reason it was dropped."""
    turns, why = _turns(record)
    if turns is None:
        return Cleaned(None, "broken", detail=why)
    dropped: Counter = Counter()
    try:
        turns = [(role, html_to_markdown(text)) for role, text in turns]
    except HTMLError as err:
        return Cleaned(None, "html_error", dropped, str(err))
    rounds = rounds_of(turns, dropped)
    if not rounds:
        return Cleaned(None, "empty", dropped)
    text = "\n".join(t for r in rounds for t in r)
    lowered = text.lower()
    if any(word in lowered for word in options.blocked_words):
        return Cleaned(None, "blocked_words", dropped)
    if options.lang:
        found = detect_language(text)
        if found != options.lang:
            return Cleaned(None, "language", dropped, found)
    out = {"id": str(record["id"]) if "id" in record else None,
           "conversations": [{"from": role, "value": value}
                             for q, a in rounds for role, value in ((HUMAN, q), (GPT, a))]}
    return Cleaned(out, None, dropped)


def detect_language(text: str) -> str:
    """langdetect's language code for the text ("unknown" when it finds no letters to go by); seeded."""
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        return detect(text)
    except LangDetectException:
        return "unknown"


def _clean_one(args) -> Cleaned:
    record, options = args
    return clean_record(record, options)


# -- splitting --------------------------------------------------------------------------------------


def chunk_rounds(conversation: Sequence[dict], length, max_length: int) -> list[tuple[int, int]]:
    """(start, end) turn ranges of the chunks: the longest runs of whole rounds whose `length` fits in
    `max_length`; a round that does not fit alone is a chunk of its own."""
    if len(conversation) <= 2 or length(conversation) <= max_length:
        return [(0, len(conversation))]  # fits whole (most conversations): one tokenisation
    chunks: list[tuple[int, int]] = []
    start = 0
    for end in range(2, len(conversation) + 1, 2):
        if end - start > 2 and length(conversation[start:end]) > max_length:
            chunks.append((start, end - 2))
            start = end - 2
    if start < len(conversation):
        chunks.append((start, len(conversation)))
    return chunks


def token_length(template: str, tokenizer):
    """The number of tokens a conversation takes in training: laid out in the template, tokenised."""
    from .tokenize import tokenize_conversation

    def length(conversation: Sequence[dict]) -> int:
        return len(tokenize_conversation(conversation, template, tokenizer, has_image=False, check=False)["input_ids"])

    return length


# -- the whole file ---------------------------------------------------------------------------------


@dataclass
class Report:
    records_in: int = 0
    conversations_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    turns_dropped: Counter = field(default_factory=Counter)
    languages_dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    split_conversations: int = 0
    chunks: int = 0
    overlong_rounds: int = 0
    tokens: int | None = None
    trained_tokens: int | None = None
    max_length: int | None = None
    template: str | None = None

    def as_dict(self) -> dict:
        return {"records_in": self.records_in, "conversations_out": self.conversations_out,
                "dropped": dict(sorted(self.dropped.items())),
                "turns_dropped": dict(sorted(self.turns_dropped.items())),
                "languages_dropped": dict(self.languages_dropped.most_common()), "examples": self.examples,
                "split_conversations": self.split_conversations, "chunks": self.chunks,
                "overlong_rounds": self.overlong_rounds, "tokens": self.tokens, "trained_tokens": self.trained_tokens,
                "max_length": self.max_length, "template": self.template,
                "paper_tokens": PAPER_SHAREGPT_TOKENS}

    def summary(self) -> str:
        lines = [f"{self.records_in} records in, {self.conversations_out} conversations out"]
        for reason, count in sorted(self.dropped.items()):
            extra = ""
            if reason == "language" and self.languages_dropped:
                extra = " (" + ", ".join(f"{k} {v}" for k, v in self.languages_dropped.most_common(8)) + ")"
            lines.append(f"  dropped {reason}: {count}{extra}")
        for reason, count in sorted(self.turns_dropped.items()):
            lines.append(f"  turns dropped, {reason}: {count}")
        if self.max_length is not None:
            lines.append(f"  split at {self.max_length} tokens ({self.template}): {self.split_conversations} "
                         f"conversations into {self.chunks} chunks; {self.overlong_rounds} single rounds longer "
                         "than that (kept, truncated in training)")
        if self.tokens is not None:
            lines.append(f"tokens: {self.tokens:,} ({self.tokens / 1e6:.1f}M; {self.trained_tokens:,} in replies, "
                         f"trained); the paper's ShareGPT for Vicuna-65B: {PAPER_SHAREGPT_TOKENS / 1e6:.0f}M")
        else:
            lines.append("tokens: not counted (give --tokenizer)")
        return "\n".join(lines)


def clean(records: Sequence, options: Options = Options(), *, tokenizer=None, template: str = "vicuna_v1",
          max_length: int = DEFAULT_MAX_LENGTH, workers: int = 1) -> tuple[list[dict], Report]:
    """Clean (steps 1-9) and, with a tokenizer, split and count tokens (step 10)."""
    report = Report(records_in=len(records))
    jobs = [(r, options) for r in records]
    if workers > 1 and len(records) > 1000:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterable[Cleaned] = list(pool.map(_clean_one, jobs, chunksize=256))
    else:
        results = [_clean_one(job) for job in jobs]
    kept: list[dict] = []
    seen_ids: set[str] = set()
    seen_content: set[tuple] = set()

    def drop(reason: str, ident) -> None:
        report.dropped[reason] += 1
        examples = report.examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(str(ident))

    for index, (record, result) in enumerate(zip(records, results)):
        report.turns_dropped.update(result.turns_dropped)
        ident = record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"
        if result.record is None:
            drop(result.reason, ident)
            if result.reason == "language":
                report.languages_dropped[result.detail] += 1
            continue
        if result.record["id"] is None:
            result.record["id"] = f"#{index}"
        turns = result.record["conversations"]
        key = (turns[0]["value"], turns[1]["value"], len(turns))
        if result.record["id"] in seen_ids:
            drop("duplicate_id", ident)
            continue
        if key in seen_content:
            drop("duplicate_content", ident)
            continue
        seen_ids.add(result.record["id"])
        seen_content.add(key)
        kept.append(result.record)
    if tokenizer is None:
        report.conversations_out = len(kept)
        return kept, report
    out = split_and_count(kept, tokenizer, template, max_length, report)
    report.conversations_out = len(out)
    return out, report


def split_and_count(records: Sequence[dict], tokenizer, template: str, max_length: int, report: Report) -> list[dict]:
    from .tokenize import IGNORE_INDEX, tokenize_conversation

    length = token_length(template, tokenizer)
    report.max_length, report.template = max_length, template
    report.tokens = report.trained_tokens = 0
    out = []
    for record in records:
        turns = record["conversations"]
        ranges = chunk_rounds(turns, length, max_length)
        if len(ranges) > 1:
            report.split_conversations += 1
        for n, (start, end) in enumerate(ranges):
            name = f"{record['id']}_{n}" if len(ranges) > 1 else record["id"]
            chunk = {"id": name, "conversations": turns[start:end]}
            sample = tokenize_conversation(chunk["conversations"], template, tokenizer, has_image=False, check=False)
            if len(sample["input_ids"]) > max_length:
                report.overlong_rounds += 1
            report.tokens += len(sample["input_ids"])
            report.trained_tokens += sum(label != IGNORE_INDEX for label in sample["labels"])
            out.append(chunk)
    report.chunks = len(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmm.data.sharegpt",
                                     description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("input", help="a ShareGPT dump (JSON list, or .jsonl)")
    parser.add_argument("--out", required=True, help="the cleaned JSON file (what data.sharegpt_path reads)")
    parser.add_argument("--lang", help="keep only this language (langdetect code, e.g. en); default: all")
    parser.add_argument("--blocked-words", default=",".join(BLOCKED_WORDS),
                        help="comma-separated words that drop a conversation (default: openai,chatgpt; '' for none)")
    parser.add_argument("--tokenizer", help="split and count with this tokenizer: 'tiny', a folder or hub id, or a "
                                            "tokenizer.json (the run's: model.tokenizer or model.path)")
    parser.add_argument("--max-length", type=int, default=None,
                        help=f"context in tokens (default {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--template", default="vicuna_v1", help="conversation template of the run (vicuna_v1, llama_2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for cleaning")
    args = parser.parse_args(argv)
    if args.max_length is not None and not args.tokenizer:
        parser.error("--max-length needs --tokenizer (lengths are counted in the run's tokens)")
    tokenizer = None
    if args.tokenizer:
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    options = Options(lang=args.lang, blocked_words=tuple(w.strip().lower() for w in args.blocked_words.split(",")
                                                          if w.strip()))
    records = load_records(args.input)
    out, report = clean(records, options, tokenizer=tokenizer, template=args.template,
                        max_length=args.max_length or DEFAULT_MAX_LENGTH, workers=args.workers)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    report_path = path.with_name(path.name.removesuffix(".json") + ".report.json")
    report_path.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(report.summary())
    print(f"wrote {path} and {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
