"""Build judge messages for benchmark items following each benchmark's published judging protocol."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The system message both LLaVA-Bench and Vicuna-80 reviews are sent with.
REVIEW_SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."

# Appended to the MM-Vet grader query when a reply was not a valid grade (the published retry).
MMVET_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "

# Sampling parameters of the published judge calls.
JUDGE_PARAMS = {
    "llava_bench": {"temperature": 0.2, "max_tokens": 1024},
    "mmvet": {"temperature": 0.0, "max_tokens": 3},
    "vicuna80": {"temperature": 0.2, "max_tokens": 1024},
}

LLAVA_BENCH_PREFIX = "llava_bench_"


def _read_json(path: str | Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _chat(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# ---------------------------------------------------------------------------------------------------------
# LLaVA-Bench
# ---------------------------------------------------------------------------------------------------------


def load_rules(path: str | Path) -> dict:
    """The judge rules (rule.json layout: key -> {"role": ..., "prompt": ...}); the caller owns the file."""
    return _read_json(path)


def llava_bench_context(record: Mapping, legacy_character_lines: bool = False) -> str:
    """The [Context] text for one image.

    In-the-Wild records have a `caption` string; COCO records have `captions` and `instances` (boxes), which
    become the captions, a blank line and one `category: [box]` line per instance.
    The published In-the-Wild script joined the caption *string* with newlines, which put every character on
    its own line; `legacy_character_lines=True` reproduces that exact judge input.
    """
    if "caption" in record:
        caption = record["caption"]
        return "\n".join(caption) if legacy_character_lines else caption
    captions = "\n".join(record["captions"])
    boxes = "\n".join(f"{inst['category']}: {inst['bbox']}" for inst in record.get("instances", []))
    return f"{captions}\n\n{boxes}"


def build_llava_bench_messages(
    *,
    context: str,
    question: str,
    reference_answer: str,
    model_answer: str,
    category: str,
    rules: Mapping[str, Mapping],
) -> list[dict]:
    """Judge messages for one LLaVA-Bench item: Assistant 1 is the GPT-4 reference, Assistant 2 the model."""
    key = category if category.startswith(LLAVA_BENCH_PREFIX) else LLAVA_BENCH_PREFIX + category
    if key not in rules:
        raise KeyError(f"no judge rule for category {key!r} in the rule file")
    role, rule_prompt = rules[key]["role"], rules[key]["prompt"]
    content = (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[{role} 1]\n{reference_answer}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{model_answer}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule_prompt}\n\n"
    )
    return _chat(REVIEW_SYSTEM_PROMPT, content)


@dataclass
class JudgeItem:
    """One judge call to make: messages plus what is needed to file the reply."""

    question_id: int | str
    category: str
    messages: list[dict]


def llava_bench_items(
    questions: Iterable[Mapping],
    contexts: Iterable[Mapping],
    reference_answers: Iterable[Mapping],
    model_answers: Iterable[Mapping],
    rules: Mapping[str, Mapping],
    legacy_character_lines: bool = False,
) -> list[JudgeItem]:
    """Judge items for a whole LLaVA-Bench split (rows as in questions/context/answers jsonl files).

    Answers are matched to questions by question_id, contexts by image file name.
    """
    context_by_image = {c["image"]: c for c in contexts}
    reference_by_id = {a["question_id"]: a["text"] for a in reference_answers}
    model_by_id = {a["question_id"]: a["text"] for a in model_answers}
    items = []
    for q in questions:
        qid = q["question_id"]
        messages = build_llava_bench_messages(
            context=llava_bench_context(context_by_image[q["image"]], legacy_character_lines),
            question=q["text"],
            reference_answer=reference_by_id[qid],
            model_answer=model_by_id[qid],
            category=q["category"],
            rules=rules,
        )
        items.append(
            JudgeItem(question_id=qid, category=LLAVA_BENCH_PREFIX + q["category"], messages=messages)
        )
    return items


# ---------------------------------------------------------------------------------------------------------
# MM-Vet
# ---------------------------------------------------------------------------------------------------------


def load_grader_prompt(path: str | Path) -> str:
    """The MM-Vet few-shot grader prompt, byte for byte (its trailing newline matters)."""
    return Path(path).read_text(encoding="utf-8")


def build_mmvet_query(grader_prompt: str, question: str, ground_truth: str, prediction: str) -> str:
    """The grader query: the few-shot table, then a new row `question | ground truth | prediction | `."""
    if ground_truth is None:
        raise ValueError("an MM-Vet question without a ground truth cannot be graded")
    # The few-shot rows write "<AND>"/"<OR>" with spaces around them; ground truths in mm-vet.json do not.
    spaced = ground_truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return f"{grader_prompt}\n{question} | {spaced} | {prediction} | "


def build_mmvet_messages(grader_prompt: str, question: str, ground_truth: str, prediction: str) -> list[dict]:
    """The grader's single user message (MM-Vet sends no system message)."""
    return [{"role": "user", "content": build_mmvet_query(grader_prompt, question, ground_truth, prediction)}]


# ---------------------------------------------------------------------------------------------------------
# Vicuna-80
# ---------------------------------------------------------------------------------------------------------


@dataclass
class VicunaTemplates:
    """FastChat's review prompts (prompt.jsonl) and which reviewer handles which category (reviewer.jsonl)."""

    prompts: Sequence[Mapping]
    reviewers: Sequence[Mapping]

    @classmethod
    def load(cls, prompt_path: str | Path, reviewer_path: str | Path) -> VicunaTemplates:
        return cls(prompts=_read_jsonl(prompt_path), reviewers=_read_jsonl(reviewer_path))

    def reviewer_for(self, category: str) -> Mapping:
        # Question categories with no reviewer of their own (e.g. "generic") go to the first, general one.
        for reviewer in self.reviewers:
            if reviewer["category"] == category:
                return reviewer
        return self.reviewers[0]

    def prompt_for(self, reviewer: Mapping) -> Mapping:
        for prompt in self.prompts:
            if prompt["prompt_id"] == reviewer["prompt_id"]:
                return prompt
        raise KeyError(f"no review prompt with prompt_id {reviewer['prompt_id']}")


def build_vicuna_messages(
    question: str, answer_1: str, answer_2: str, category: str, templates: VicunaTemplates
) -> tuple[list[dict], dict]:
    """Pairwise review messages (answer 1 = baseline, answer 2 = target) and the reviewer's sampling."""
    reviewer = templates.reviewer_for(category)
    prompt = templates.prompt_for(reviewer)
    user = prompt["prompt_template"].format(
        question=question, answer_1=answer_1, answer_2=answer_2, **prompt.get("defaults", {})
    )
    params = dict(JUDGE_PARAMS["vicuna80"])
    params.update(
        {k: v for k, v in reviewer.get("metadata", {}).items() if k in ("temperature", "max_tokens")}
    )
    return _chat(prompt["system_prompt"], user), params
