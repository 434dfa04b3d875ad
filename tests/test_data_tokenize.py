"""Tokenisation with label masking: exact ids and labels, and segment/whole-prompt agreement."""

import json

import pytest
from tokenizers import Tokenizer, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import lmm.data.tokenize as tokenize_mod
from lmm.data.templates import build_prompt
from lmm.data.tokenize import (
    IGNORE_INDEX,
    TokenizationMismatch,
    tokenize_conversation,
    tokenize_prompt,
)
from lmm.data.tokenizer import load_tokenizer

CAPTION = [{"from": "human", "value": "Describe it briefly.\n<image>"}, {"from": "gpt", "value": "A red circle."}]
MULTI = [
    {"from": "human", "value": "<image>\nWhat colour is the shape?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And the shape?"},
    {"from": "gpt", "value": "A circle."},
]
TEXT = [{"from": "human", "value": "What is 2 plus 3?"}, {"from": "gpt", "value": "5"}]


def expect(*parts):
    """(ids, labels) from (ids, trained) parts."""
    ids, labels = [], []
    for part_ids, trained in parts:
        ids += part_ids
        labels += part_ids if trained else [IGNORE_INDEX] * len(part_ids)
    return ids, labels


def masked(*ids):
    return (list(ids), False)


def trained(*ids):
    return (list(ids), True)


# ---------------------------------------------------------------- the real LLaMA / Vicuna tokenizer
# Ids of LLaMA's SentencePiece vocabulary (legacy mode: "▁" before each text piece, digits split).
BOS, EOS, IMG, SPACE, NL = 1, 2, 32000, 29871, 13
L_SYSTEM = [  # "▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The ..."
    319, 13563, 1546, 263, 12758, 1404, 322, 385, 23116, 21082, 20255, 29889, 450, 20255, 4076, 8444,
    29892, 13173, 29892, 322, 1248, 568, 6089, 304, 278, 1404, 29915, 29879, 5155, 29889,
]
L_USER = [3148, 1001, 29901]  # "▁US" "ER" ":"
L_ASSISTANT = [319, 1799, 9047, 13566, 29901]  # "▁A" "SS" "IST" "ANT" ":"
L_INST = [518, 25580, 29962]  # "▁[" "INST" "]"
L_END_INST = [518, 29914, 25580, 29962]  # "▁[" "/" "INST" "]"
L_SYS_OPEN = [3532, 14816, 29903, 6778, NL]  # "▁<<" "SY" "S" ">>" "\n"
L_SYS_CLOSE = [NL, 29966, 829, 14816, 29903, 6778, NL, NL]  # "\n" "<" "</" "SY" "S" ">>" "\n" "\n"
L_LLAMA2_SYSTEM = [  # "You ▁are ▁a ▁helpful ▁language ▁and ▁vision ▁assistant . ▁You ▁are ▁able ..."
    3492, 526, 263, 8444, 4086, 322, 18551, 20255, 29889, 887, 526, 2221, 304, 2274, 278, 7604, 2793,
    393, 278, 1404, 8128, 29892, 322, 6985, 278, 1404, 411, 263, 12875, 310, 9595, 773, 5613, 4086, 29889,
]
L_AFTER_IMAGE = [SPACE, NL]  # legacy: the text after <image> gets its own "▁", then "\n" as byte <0x0A>
L_DESCRIBE = [4002, 29581, 372, 23359, 29889]  # "Des" "cribe" "▁it" "▁briefly" "."
L_COLOUR_Q = [5618, 12384, 338, 278, 8267, 29973]  # "What" "▁colour" "▁is" "▁the" "▁shape" "?"
L_AND_SHAPE = [1126, 278, 8267, 29973]  # "▁And" "▁the" "▁shape" "?"
L_SUM_Q = [1724, 338, SPACE, 29906, 2298, SPACE, 29941, 29973]  # "▁What ▁is ▁ 2 ▁plus ▁ 3 ?"
L_RED_CIRCLE = [319, 2654, 8607, 29889]  # "▁A" "▁red" "▁circle" "."
L_RED, L_A_CIRCLE, L_FIVE = [2654], [319, 8607, 29889], [SPACE, 29945]

LLAMA_EXPECTED = {
    ("plain", "caption"): expect(masked(BOS, IMG), trained(*L_RED_CIRCLE, EOS)),
    ("plain", "text"): expect(masked(BOS), trained(*L_FIVE, EOS)),
    ("vicuna_v1", "caption"): expect(
        masked(BOS, *L_SYSTEM, *L_USER, SPACE, IMG, *L_AFTER_IMAGE, *L_DESCRIBE, *L_ASSISTANT),
        trained(*L_RED_CIRCLE, EOS),
    ),
    ("vicuna_v1", "multi"): expect(
        masked(BOS, *L_SYSTEM, *L_USER, SPACE, IMG, *L_AFTER_IMAGE, *L_COLOUR_Q, *L_ASSISTANT),
        trained(*L_RED, EOS),
        masked(*L_USER, *L_AND_SHAPE, *L_ASSISTANT),
        trained(*L_A_CIRCLE, EOS),
    ),
    ("vicuna_v1", "text"): expect(
        masked(BOS, *L_SYSTEM, *L_USER, *L_SUM_Q, *L_ASSISTANT), trained(*L_FIVE, EOS)
    ),
    ("llama_2", "caption"): expect(
        masked(BOS, *L_INST, *L_SYS_OPEN, *L_LLAMA2_SYSTEM, *L_SYS_CLOSE, IMG, *L_AFTER_IMAGE, *L_DESCRIBE,
               *L_END_INST),
        trained(*L_RED_CIRCLE, SPACE, EOS),
    ),
    ("llama_2", "multi"): expect(
        masked(BOS, *L_INST, *L_SYS_OPEN, *L_LLAMA2_SYSTEM, *L_SYS_CLOSE, IMG, *L_AFTER_IMAGE, *L_COLOUR_Q,
               *L_END_INST),
        trained(*L_RED, SPACE, EOS),
        masked(BOS, *L_INST, *L_AND_SHAPE, *L_END_INST),
        trained(*L_A_CIRCLE, SPACE, EOS),
    ),
    ("llama_2", "text"): expect(
        masked(BOS, *L_INST, *L_SYS_OPEN, *L_LLAMA2_SYSTEM, *L_SYS_CLOSE, 5618, *L_SUM_Q[1:], *L_END_INST),
        trained(*L_FIVE, SPACE, EOS),
    ),
}
CONVERSATIONS = {"caption": CAPTION, "multi": MULTI, "text": TEXT}


def test_llama_tokenizer_is_llamas(llama_tokenizer):
    tok = llama_tokenizer
    assert tok("Hello world!")["input_ids"] == [1, 15043, 3186, 29991]
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert tok.convert_tokens_to_ids("<image>") == IMG and len(tok) == 32001
    assert tok.pad_token == "<unk>"
    assert tok.convert_ids_to_tokens(L_USER) == ["▁US", "ER", ":"]
    assert tok.convert_ids_to_tokens(L_ASSISTANT) == ["▁A", "SS", "IST", "ANT", ":"]
    assert tok.convert_ids_to_tokens([SPACE, NL, 2654]) == ["▁", "<0x0A>", "▁red"]


@pytest.mark.parametrize("template,conv", sorted(LLAMA_EXPECTED))
def test_exact_ids_and_labels_llama(llama_tokenizer, template, conv):
    ids, labels = LLAMA_EXPECTED[(template, conv)]
    got = tokenize_conversation(CONVERSATIONS[conv], template, llama_tokenizer)
    assert got["input_ids"] == ids
    assert got["labels"] == labels


# ---------------------------------------------------------------- the tiny tokenizer
# Every word of the tiny vocabulary is one "▁word" piece; ids pinned from its frozen word list.
T = {
    "<s>": 1, "</s>": 2, "<image>": 1002, "\n": 13, "▁": 353, ".": 272, ",": 270, "'": 265, "s": 341, ":": 284,
    "?": 289, "[": 317, "]": 319, "/": 273, "<": 286, ">": 288, "2": 276, "3": 277, "5": 279,
    "INST": 572, "SYS": 892, "You": 593, "What": 588, "Describe": 472, "▁A": 383, "▁USER": 684,
    "▁ASSISTANT": 806, "▁red": 882, "▁circle": 947, "▁colour": 550, "▁is": 767, "▁the": 386,
    "▁shape": 943, "▁And": 804, "▁it": 536, "▁briefly": 967, "▁What": 829, "▁plus": 921,
}
T_SYSTEM = ("▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The "
            "▁assistant ▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user ' s ▁questions .")
T_LLAMA2_SYSTEM = ("You ▁are ▁a ▁helpful ▁language ▁and ▁vision ▁assistant . ▁You ▁are ▁able ▁to ▁understand "
                   "▁the ▁visual ▁content ▁that ▁the ▁user ▁provides , ▁and ▁assist ▁the ▁user ▁with ▁a "
                   "▁variety ▁of ▁tasks ▁using ▁natural ▁language .")
T.update({"▁a": 358, "▁chat": 740, "▁between": 969, "▁curious": 920, "▁user": 865, "▁and": 715, "▁an": 520,
          "▁artificial": 964, "▁intelligence": 998, "▁assistant": 937, "▁The": 785, "▁gives": 987,
          "▁helpful": 999, "▁detailed": 950, "▁polite": 757, "▁answers": 909, "▁to": 687, "▁questions": 940,
          "▁are": 713, "▁language": 992, "▁vision": 935, "▁You": 879, "▁able": 906, "▁understand": 996,
          "▁visual": 1000, "▁content": 990, "▁that": 690, "▁provides": 978, "▁assist": 936, "▁with": 912,
          "▁variety": 994, "▁of": 780, "▁tasks": 960, "▁using": 866, "▁natural": 980})


def t(text: str) -> list[int]:
    """Pinned ids of space-separated pieces ("\\n" for the newline byte)."""
    return [T[piece] for piece in text.replace("\\n", "\n").split(" ")]


T_INST, T_END_INST = "▁ [ INST ]", "▁ [ / INST ]"
T_SYS_OPEN, T_SYS_CLOSE = "▁ < < SYS > > \\n", "\\n < < / SYS > > \\n \\n"
TINY_EXPECTED = {
    ("plain", "caption"): expect(masked(*t("<s> <image>")), trained(*t("▁A ▁red ▁circle . </s>"))),
    ("plain", "text"): expect(masked(*t("<s>")), trained(*t("▁ 5 </s>"))),
    ("vicuna_v1", "caption"): expect(
        masked(*t(f"<s> {T_SYSTEM} ▁USER : ▁ <image> ▁ \\n Describe ▁it ▁briefly . ▁ASSISTANT :")),
        trained(*t("▁A ▁red ▁circle . </s>")),
    ),
    ("vicuna_v1", "multi"): expect(
        masked(*t(f"<s> {T_SYSTEM} ▁USER : ▁ <image> ▁ \\n What ▁colour ▁is ▁the ▁shape ? ▁ASSISTANT :")),
        trained(*t("▁red </s>")),
        masked(*t("▁USER : ▁And ▁the ▁shape ? ▁ASSISTANT :")),
        trained(*t("▁A ▁circle . </s>")),
    ),
    ("vicuna_v1", "text"): expect(
        masked(*t(f"<s> {T_SYSTEM} ▁USER : ▁What ▁is ▁ 2 ▁plus ▁ 3 ? ▁ASSISTANT :")), trained(*t("▁ 5 </s>"))
    ),
    ("llama_2", "caption"): expect(
        masked(*t(f"<s> {T_INST} {T_SYS_OPEN} {T_LLAMA2_SYSTEM} {T_SYS_CLOSE} <image> ▁ \\n Describe ▁it ▁briefly . "
                  f"{T_END_INST}")),
        trained(*t("▁A ▁red ▁circle . ▁ </s>")),
    ),
    ("llama_2", "multi"): expect(
        masked(*t(f"<s> {T_INST} {T_SYS_OPEN} {T_LLAMA2_SYSTEM} {T_SYS_CLOSE} <image> ▁ \\n What ▁colour ▁is ▁the "
                  f"▁shape ? {T_END_INST}")),
        trained(*t("▁red ▁ </s>")),
        masked(*t(f"<s> {T_INST} ▁And ▁the ▁shape ? {T_END_INST}")),
        trained(*t("▁A ▁circle . ▁ </s>")),
    ),
    ("llama_2", "text"): expect(
        masked(*t(f"<s> {T_INST} {T_SYS_OPEN} {T_LLAMA2_SYSTEM} {T_SYS_CLOSE} What ▁is ▁ 2 ▁plus ▁ 3 ? {T_END_INST}")),
        trained(*t("▁ 5 ▁ </s>")),
    ),
}


@pytest.mark.parametrize("template,conv", sorted(TINY_EXPECTED))
def test_exact_ids_and_labels_tiny(tiny_tokenizer, template, conv):
    ids, labels = TINY_EXPECTED[(template, conv)]
    got = tokenize_conversation(CONVERSATIONS[conv], template, tiny_tokenizer)
    assert tiny_tokenizer.convert_ids_to_tokens(got["input_ids"]) == tiny_tokenizer.convert_ids_to_tokens(ids)
    assert got["input_ids"] == ids
    assert got["labels"] == labels


# ---------------------------------------------------------------- segments vs the whole prompt
TRICKY = [
    [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " leading and trailing spaces "}],
    [{"from": "human", "value": "List two"}, {"from": "gpt", "value": "\n1. one\n2. two"}],
    [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "naïve café 🦙 日本"}],
    [{"from": "human", "value": "x"}, {"from": "gpt", "value": ""}, {"from": "human", "value": "y"},
     {"from": "gpt", "value": "?!"}],
    [{"from": "human", "value": "code"}, {"from": "gpt", "value": "def f(x):\n    return x  # two  spaces"}],
    [{"from": "human", "value": "Sum 12+30"}, {"from": "gpt", "value": "42"}],
]


@pytest.mark.parametrize("template", ["plain", "vicuna_v1", "llama_2"])
def test_segments_match_whole_prompt_llama(llama_tokenizer, synthetic_data, template):
    records = json.loads(synthetic_data["finetune"].read_text())[:20] + [{"conversations": c} for c in TRICKY]
    for record in records:
        conv = record["conversations"]
        got = tokenize_conversation(conv, template, llama_tokenizer, check=False)
        whole = build_prompt(template, conv, add_generation_prompt=False)
        assert got["input_ids"] == llama_tokenizer(whole)["input_ids"], whole
        # The trained tokens spell the replies (and their end-of-turn tokens), nothing else.
        replies = [t["value"] for t in conv if t["from"] == "gpt"]
        kept = [i for i, lab in zip(got["input_ids"], got["labels"]) if lab != IGNORE_INDEX]
        text = llama_tokenizer.decode(kept).replace("</s>", "").replace(" ", "")
        expected = "".join(replies[:1] if template == "plain" else replies).replace(" ", "")
        assert text == expected


def test_naive_per_segment_tokenization_is_caught(llama_tokenizer, monkeypatch):
    # Tokenising each segment on its own (LLaVA's mistake) adds a "▁" in front of every reply.
    def naive(chunk, anchor, tokenizer):
        return [(tokenizer(s.text, add_special_tokens=False)["input_ids"], s.trained) for s in chunk]

    monkeypatch.setattr(tokenize_mod, "_tokenize_chunk", naive)
    with pytest.raises(TokenizationMismatch, match="differs from whole-prompt"):
        tokenize_conversation(MULTI, "vicuna_v1", llama_tokenizer)


def test_non_legacy_tokenizer_also_consistent(llama_tokenizer_file):
    # transformers' non-legacy LLaMA puts "▁" only at the very start, not after special tokens.
    backend = Tokenizer.from_file(str(llama_tokenizer_file))
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok = load_tokenizer_object(backend)
    got = tokenize_conversation(MULTI, "vicuna_v1", tok)  # check=True: raises on any mismatch
    assert got["input_ids"][-4:] == [319, 8607, 29889, 2]
    after_eos = got["input_ids"][got["input_ids"].index(EOS) + 1]
    assert tok.convert_ids_to_tokens([after_eos]) == ["USER"]  # no "▁" after </s>, unlike legacy ("▁US")


def load_tokenizer_object(backend):
    from lmm.data.tokenizer import LLAMA_SPECIALS, _prepare

    return _prepare(PreTrainedTokenizerFast(tokenizer_object=backend, **LLAMA_SPECIALS))


# ---------------------------------------------------------------- prompts, truncation, no labels


@pytest.mark.parametrize("template", ["plain", "vicuna_v1", "llama_2"])
def test_generation_prompt_is_training_prefix(tiny_tokenizer, llama_tokenizer, template):
    for tok in (tiny_tokenizer, llama_tokenizer):
        full = tokenize_conversation(CAPTION, template, tok)
        first_trained = next(i for i, lab in enumerate(full["labels"]) if lab != IGNORE_INDEX)
        assert tokenize_prompt(CAPTION[:1], template, tok) == full["input_ids"][:first_trained]


def test_truncation(tiny_tokenizer):
    full = tokenize_conversation(MULTI, "vicuna_v1", tiny_tokenizer)
    cut = tokenize_conversation(MULTI, "vicuna_v1", tiny_tokenizer, max_length=40)
    assert cut["input_ids"] == full["input_ids"][:40] and cut["labels"] == full["labels"][:40]
    assert all(lab == IGNORE_INDEX for lab in cut["labels"])


def test_unanswered_conversation_has_no_labels(tiny_tokenizer):
    got = tokenize_conversation(MULTI[:1], "vicuna_v1", tiny_tokenizer)
    assert set(got["labels"]) == {IGNORE_INDEX}


def test_tokenizer_without_image_token_is_refused(llama_tokenizer_file):
    bare = PreTrainedTokenizerFast(tokenizer_file=str(llama_tokenizer_file), bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    with pytest.raises(ValueError, match="<image>"):
        tokenize_conversation(MULTI, "vicuna_v1", bare)
    assert load_tokenizer(llama_tokenizer_file).convert_tokens_to_ids("<image>") == IMG
