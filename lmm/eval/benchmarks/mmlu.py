"""MMLU: 5-shot multiple choice, the option whose " A"/" B"/" C"/" D" continuation is most likely wins."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmm.eval.benchmarks.base import Benchmark, EvalContext, require, write_jsonl
from lmm.eval.scorers import round1

CHOICES = ("A", "B", "C", "D")
NUM_SHOTS = 5


@dataclass
class MMLUQuestion:
    subject: str
    number: int
    question: str
    options: tuple[str, str, str, str]
    answer: str

    @property
    def id(self) -> str:
        return f"{self.subject}-{self.number}"


def read_split(path: Path, subject: str) -> list[MMLUQuestion]:
    """One subject's CSV (no header): question, A, B, C, D, answer letter."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return [MMLUQuestion(subject, i, r[0], tuple(r[1:5]), r[5].strip()) for i, r in enumerate(rows)]


def load_subjects(folder: str | Path) -> dict[str, tuple[list[MMLUQuestion], list[MMLUQuestion]]]:
    """subject -> (dev shots, test questions), from `dev/<subject>_dev.csv` and `test/<subject>_test.csv`."""
    folder = require(folder, "MMLU folder", "eval.paths.mmlu")
    tests = sorted(require(folder / "test", "MMLU test/ folder", "eval.paths.mmlu").glob("*_test.csv"))
    if not tests:
        raise FileNotFoundError(f"no <subject>_test.csv files in {folder / 'test'}")
    out = {}
    for test in tests:
        subject = test.name.removesuffix("_test.csv")
        dev = require(folder / "dev" / f"{subject}_dev.csv", f"MMLU dev shots of {subject}", "eval.paths.mmlu")
        out[subject] = (read_split(dev, subject), read_split(test, subject))
    return out


def format_example(q: MMLUQuestion, with_answer: bool) -> str:
    text = q.question + "".join(f"\n{letter}. {option}" for letter, option in zip(CHOICES, q.options))
    text += "\nAnswer:"
    return text + f" {q.answer}\n\n" if with_answer else text


def build_prompt(q: MMLUQuestion, shots: Sequence[MMLUQuestion]) -> str:
    """Hendrycks et al.'s prompt: a header naming the subject, the solved shots, then the question."""
    header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    return header + "".join(format_example(s, True) for s in shots) + format_example(q, False)


def fit_prompt(q: MMLUQuestion, shots: Sequence[MMLUQuestion], tokenizer, max_tokens: int) -> tuple[str, int]:
    """The prompt with as many shots (up to all) as fit in `max_tokens` with an answer token to spare."""
    k = len(shots)
    while True:
        prompt = build_prompt(q, shots[:k])
        if k == 0 or len(tokenizer(prompt)["input_ids"]) < max_tokens:
            return prompt, k
        k -= 1


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def scoring_jobs(tokenizer, prompt: str) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Sequences to run for one prompt, each with (position, token) pairs whose log-probs add up to an option's.

    Usually each option " X" is one token that extends the prompt's own tokens: one pass over the prompt
    then reads all four at its last position. Otherwise each option gets its own pass over prompt + option,
    scored from where its tokens leave the prompt's.
    """
    ids = tokenizer(prompt)["input_ids"]
    fulls = [tokenizer(f"{prompt} {letter}")["input_ids"] for letter in CHOICES]
    starts = [_common_prefix(ids, full) for full in fulls]
    if all(start == len(ids) and len(full) == len(ids) + 1 for start, full in zip(starts, fulls)):
        return [(ids, [(len(ids) - 1, full[-1]) for full in fulls])]
    return [(full[:-1], [(j - 1, full[j]) for j in range(max(start, 1), len(full))])
            for full, start in zip(fulls, starts)]


@torch.inference_mode()
def option_logprobs(model, tokenizer, prompts: Sequence[str], batch_size: int = 8) -> list[list[float]]:
    """log P(" X" | prompt) for X in A-D, per prompt (summed over the option's tokens)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # (prompt number, option number or -1 for all four, sequence, scored positions)
    jobs = []
    for p, prompt in enumerate(prompts):
        plan = scoring_jobs(tokenizer, prompt)
        if len(plan) == 1:
            jobs.append((p, -1, *plan[0]))
        else:
            jobs.extend((p, o, seq, picks) for o, (seq, picks) in enumerate(plan))
    scores = [[0.0] * len(CHOICES) for _ in prompts]
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        width = max(len(seq) for _, _, seq, _ in batch)
        # Right padding: every real token keeps its position, and the pads come after what is scored.
        input_ids = torch.tensor([seq + [pad] * (width - len(seq)) for _, _, seq, _ in batch], device=device)
        mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for _, _, seq, _ in batch], device=device)
        logprobs = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
        for row, (p, o, _, picks) in enumerate(batch):
            values = [float(logprobs[row, pos, token]) for pos, token in picks]
            if o == -1:
                scores[p] = values
            else:
                scores[p][o] = sum(values)
    return scores


def accuracy_scores(rows: Sequence[dict]) -> dict:
    """Accuracy x100 over all questions (micro average) and per subject."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        hits[row["subject"]].append(row["prediction"] == row["answer"])
    every = [h for v in hits.values() for h in v]
    return {
        "overall": round1(100 * sum(every) / len(every)),
        "categories": {s: round1(100 * sum(v) / len(v)) for s, v in sorted(hits.items())},
        "runs": [round1(100 * sum(every) / len(every))],
        "std": 0.0,
        "parse_failures": 0,
        "count": len(every),
    }


class MMLU(Benchmark):
    name = "mmlu"
    generative = False

    def settings(self, ctx: EvalContext) -> dict:
        return {"num_shots": NUM_SHOTS, "method": "loglik"}

    def evaluate(self, ctx: EvalContext, model: Callable[[], Any], out: Path) -> dict:
        subjects = load_subjects(ctx.paths.mmlu)
        loaded = model()
        max_tokens = int(ctx.cfg.model.max_position_embeddings)
        questions, prompts, shots_used = [], [], []
        for dev, test in subjects.values():
            for q in test:
                prompt, k = fit_prompt(q, dev[:NUM_SHOTS], loaded.tokenizer, max_tokens)
                questions.append(q)
                prompts.append(prompt)
                shots_used.append(k)
        logprobs = option_logprobs(loaded.model, loaded.tokenizer, prompts, int(ctx.cfg.eval.batch_size))
        rows = []
        for q, scores, k in zip(questions, logprobs, shots_used):
            best = max(range(len(CHOICES)), key=lambda i: scores[i])
            rows.append({"question_id": q.id, "subject": q.subject, "answer": q.answer,
                         "prediction": CHOICES[best], "shots": k,
                         "logprobs": {c: (s if math.isfinite(s) else None) for c, s in zip(CHOICES, scores)}})
        write_jsonl(out / "answers.jsonl", rows)
        return accuracy_scores(rows)
