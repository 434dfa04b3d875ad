"""ShareGPT cleaning (`python -m lmm.data.sharegpt`): HTML, broken, empty, duplicate and out-of-order input,
the language filter, and splitting at round boundaries by the run's tokenizer; exact counts and chunks."""

from __future__ import annotations

import json

import pytest

from lmm.data import sharegpt
from lmm.data.dataset import load_sharegpt
from lmm.data.templates import VICUNA_SYSTEM
from lmm.data.tokenize import tokenize_conversation


def h(text):
    return {"from": "human", "value": text}


def g(text):
    return {"from": "gpt", "value": text}


HTML_REPLY = ('<div class="markdown prose w-full"><p>Use <code>def</code>; for <strong>snake_case</strong> names:</p>'
              '<pre><div class="bg-black"><div class="flex items-center"><span>python</span><button>Copy code'
              '</button></div><div><code class="hljs language-python">def add_one(x):\n    return x + 1\n</code>'
              '</div></div></pre><ol><li>call it</li><li>print it</li></ol><p>Fish &amp; chips</p></div>')
HTML_MARKDOWN = ("Use `def`; for **snake_case** names:\n\n```python\ndef add_one(x):\n    return x + 1\n```\n\n"
                 "1. call it\n2. print it\n\nFish & chips")

# (question, reply) rounds whose tiny-tokenizer lengths are far apart: with max_length 120, rounds 0-1 fit
# together (52 tokens) but not with round 2 (130; 108 on its own); round 3 does not fit even alone (237).
LONG_ROUNDS = [("what colour is the sun", "yellow"), ("count the stars", "one two three"),
               ("describe the picture", " ".join(["red"] * 70)), ("spell cat", " ".join(["blue"] * 200)),
               ("thank you", "you are welcome")]
MAX_LENGTH = 120


def fixture_records() -> list:
    long = [t for q, a in LONG_ROUNDS for t in (h(q), g(a))]
    return [
        {"id": "html", "conversations": [h("How do I write a function?"), g(HTML_REPLY)]},
        {"id": "ends", "conversations": [g("Hi! How can I help?"), h("what is two plus two"), g("four"),
                                         h("and three?")]},
        {"id": "no-turns", "conversations": []},
        {"id": "empty-reply", "conversations": [h("first question"), g(""), h("second question"), g("<p>answer</p>")]},
        {"id": "all-empty", "conversations": [h("   "), g("")]},
        "not a record",
        {"id": "b1", "conversations": "hello"},
        {"id": "b2", "conversations": [{"from": "human"}]},
        {"id": "b3", "conversations": [{"from": "robot", "value": "beep"}]},
        {"id": "html", "conversations": [h("a different question"), g("a different answer")]},
        {"id": "same-content", "conversations": [h("second question"), g("answer")]},
        {"id": "order", "conversations": [h("question one"), g("reply one"), g("reply again"), h("question two"),
                                          g("reply two")]},
        {"id": "blocked", "conversations": [h("who made you?"), g("I was trained by OpenAI.")]},
        {"id": "system", "conversations": [{"from": "system", "value": "be nice"}, {"from": "user", "value": "hi"},
                                           {"from": "chatgpt", "value": "hello"}]},
        {"id": "long", "conversations": long},
    ]


def hand_vicuna_length(tokenizer, rounds) -> int:
    """The vicuna_v1 prompt written out by hand and tokenised whole (BOS added by the tokenizer)."""
    text = VICUNA_SYSTEM + " " + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in rounds)
    return len(tokenizer(text)["input_ids"])


def test_cleaning_counts_every_drop_by_reason_and_splits_at_round_boundaries(tmp_path, tiny_tokenizer):
    out, report = sharegpt.clean(fixture_records(), tokenizer=tiny_tokenizer, max_length=MAX_LENGTH)

    assert report.records_in == 15
    assert dict(report.dropped) == {"broken": 4, "empty": 2, "duplicate_id": 1, "duplicate_content": 1,
                                    "blocked_words": 1}
    assert report.examples["broken"] == ["#5", "b1", "b2", "b3"]
    assert report.examples["empty"] == ["no-turns", "all-empty"]
    assert report.examples["duplicate_content"] == ["same-content"]
    assert dict(report.turns_dropped) == {"leading_gpt_turn": 1, "unanswered_last_turn": 1, "empty_turn_round": 4,
                                          "wrong_role_order": 3}
    by_id = {r["id"]: r["conversations"] for r in out}
    assert list(by_id) == ["html", "ends", "empty-reply", "order", "system", "long_0", "long_1", "long_2", "long_3"]
    assert by_id["html"] == [h("How do I write a function?"), g(HTML_MARKDOWN)]
    assert by_id["ends"] == [h("what is two plus two"), g("four")]
    assert by_id["empty-reply"] == [h("second question"), g("answer")]  # the HTML <p> is gone
    assert by_id["order"] == [h("question one"), g("reply one")]
    assert by_id["system"] == [h("hi"), g("hello")]

    # Chunks: rounds 0-1, round 2, round 3 (too long even alone: kept, counted), round 4.
    long = [t for q, a in LONG_ROUNDS for t in (h(q), g(a))]
    assert [by_id[f"long_{n}"] for n in range(4)] == [long[0:4], long[4:6], long[6:8], long[8:10]]
    # Longer than the context even alone: round 3 here, and the one round of "html" (its code and symbols
    # fall back to single characters and bytes in the tiny vocabulary).
    assert len(tokenize_conversation(by_id["html"], "vicuna_v1", tiny_tokenizer)["input_ids"]) > MAX_LENGTH
    assert report.split_conversations == 1 and report.chunks == 9 and report.overlong_rounds == 2
    assert hand_vicuna_length(tiny_tokenizer, LONG_ROUNDS[0:2]) <= MAX_LENGTH
    assert hand_vicuna_length(tiny_tokenizer, LONG_ROUNDS[0:3]) > MAX_LENGTH
    assert hand_vicuna_length(tiny_tokenizer, LONG_ROUNDS[2:3]) <= MAX_LENGTH
    assert hand_vicuna_length(tiny_tokenizer, LONG_ROUNDS[2:4]) > MAX_LENGTH
    assert hand_vicuna_length(tiny_tokenizer, LONG_ROUNDS[3:4]) > MAX_LENGTH
    for n, rounds in enumerate((LONG_ROUNDS[0:2], LONG_ROUNDS[2:3], LONG_ROUNDS[3:4], LONG_ROUNDS[4:5])):
        ids = tokenize_conversation(by_id[f"long_{n}"], "vicuna_v1", tiny_tokenizer)["input_ids"]
        assert len(ids) == hand_vicuna_length(tiny_tokenizer, rounds)  # what training sees, counted by hand
    assert report.tokens == sum(len(tokenize_conversation(c, "vicuna_v1", tiny_tokenizer)["input_ids"])
                                for c in by_id.values())
    assert 0 < report.trained_tokens < report.tokens
    assert "159M" in report.summary() and "dropped broken: 4" in report.summary()


def test_unsplit_output_without_a_tokenizer(tiny_tokenizer):
    out, report = sharegpt.clean(fixture_records())
    assert [r["id"] for r in out][-1] == "long" and report.tokens is None and report.max_length is None
    assert "give --tokenizer" in report.summary()


ENGLISH = ("Could you explain how photosynthesis works in plants and why it matters for life on Earth?",
           "Plants capture sunlight with chlorophyll and use that energy to turn water and carbon dioxide into "
           "sugar, releasing oxygen that animals breathe.")
FRENCH = ("Pourriez-vous m'expliquer comment fonctionne la photosynthèse chez les plantes et pourquoi elle est "
          "importante pour la vie sur Terre ?",
          "Les plantes captent la lumière du soleil grâce à la chlorophylle et utilisent cette énergie pour "
          "transformer l'eau et le dioxyde de carbone en sucre, en libérant de l'oxygène.")


def test_the_language_filter_keeps_one_language():
    records = [{"id": "en", "conversations": [h(ENGLISH[0]), g(ENGLISH[1])]},
               {"id": "fr", "conversations": [h(FRENCH[0]), g(FRENCH[1])]},
               {"id": "digits", "conversations": [h("12345"), g("67890")]}]
    out, report = sharegpt.clean(records, sharegpt.Options(lang="en"))
    assert [r["id"] for r in out] == ["en"]
    assert dict(report.dropped) == {"language": 2} and dict(report.languages_dropped) == {"fr": 1, "unknown": 1}


def test_html_furniture_is_removed():
    assert sharegpt.html_to_markdown("2 / 2Sure, here it is.") == "Sure, here it is."
    assert sharegpt.html_to_markdown("<p>Done.</p>Copy12 chars / 3 words") == "Done."
    assert sharegpt.html_to_markdown("a_b * c") == "a_b * c"  # plain text is left as it is
    assert sharegpt.html_to_markdown("<p>one</p><p></p><p></p><p>two</p>") == "one\n\ntwo"


def test_the_command_line_writes_what_load_sharegpt_reads(tmp_path, tiny_tokenizer, capsys):
    source = tmp_path / "sharegpt_html.json"
    source.write_text(json.dumps(fixture_records()))
    out = tmp_path / "clean" / "sharegpt.json"
    assert sharegpt.main([str(source), "--out", str(out), "--tokenizer", "tiny", "--max-length", str(MAX_LENGTH),
                          "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "15 records in, 9 conversations out" in printed and "the paper's ShareGPT for Vicuna-65B: 159M" in printed
    records = load_sharegpt(out)
    assert len(records) == 9 and records[0]["conversations"][1]["value"] == HTML_MARKDOWN
    report = json.loads((tmp_path / "clean" / "sharegpt.report.json").read_text())
    assert report["dropped"]["broken"] == 4 and report["chunks"] == 9 and report["paper_tokens"] == 159_000_000
    with pytest.raises(SystemExit):
        sharegpt.main([str(source), "--out", str(out), "--max-length", "100"])  # lengths need a tokenizer
