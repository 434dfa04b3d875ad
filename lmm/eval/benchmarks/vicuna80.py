"""Vicuna-80: text-only answers reviewed pairwise against a reference model's answers (relative score)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmm.eval.benchmarks.base import Benchmark, EvalContext, Item, require, write_jsonl
from lmm.eval.benchmarks.common import (
    FAILED_PAIR,
    BenchmarkScore,
    chat,
    has_score_pair,
    parse_score_pair,
    read_jsonl,
    review_pairs,
    round1,
)
from lmm.eval.judge import JudgeRequest

# Sampling parameters of the published judge calls.
JUDGE_PARAMS = {"temperature": 0.2, "max_tokens": 1024}


def _ratio_of_sums(pairs: Sequence[tuple[float, float]]) -> float:
    """sum(target) / sum(reference) x 100 (equal to LLaVA-Bench's ratio of means up to float rounding)."""
    return sum(p[1] for p in pairs) / sum(p[0] for p in pairs) * 100


def vicuna80_score(
    rows: Iterable[Mapping], question_categories: Mapping[int, str] | None = None, exclude_failed: bool = False
) -> BenchmarkScore:
    """Vicuna-80 relative score of one review file: sum(target) / sum(reference) x 100.

    Rows carry `score: [reference, target]` (or `text` to parse).
    Per-category scores need a question_id -> category map. Failed parses are counted; they stay in the
    sums as (-1, -1) like the published files, unless `exclude_failed` (our own runs).
    """
    pairs, by_category, failures = review_pairs(
        rows, "score", "text",
        lambda row: None if question_categories is None else question_categories[row["question_id"]], exclude_failed)
    if not pairs:
        raise ValueError(f"a Vicuna-80 review file has no {'parsed reviews' if failures else 'rows'}")
    overall = _ratio_of_sums(pairs)
    return BenchmarkScore(
        overall=round1(overall),
        categories={name: round1(_ratio_of_sums(p)) for name, p in sorted(by_category.items())},
        runs=[round1(overall)],
        std=0.0,
        parse_failures=failures,
        details={"reference_sum": sum(p[0] for p in pairs), "target_sum": sum(p[1] for p in pairs)},
    )


@dataclass
class VicunaTemplates:
    """FastChat's review prompts (prompt.jsonl) and which reviewer handles which category (reviewer.jsonl)."""

    prompts: Sequence[Mapping]
    reviewers: Sequence[Mapping]

    @classmethod
    def load(cls, prompt_path: str | Path, reviewer_path: str | Path) -> VicunaTemplates:
        return cls(prompts=read_jsonl(prompt_path), reviewers=read_jsonl(reviewer_path))

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
    params = dict(JUDGE_PARAMS)
    params.update(
        {k: v for k, v in reviewer.get("metadata", {}).items() if k in ("temperature", "max_tokens")}
    )
    return chat(prompt["system_prompt"], user), params


class Vicuna80(Benchmark):
    name = "vicuna80"
    judged = True
    text_only = True

    rescore_files = "one review jsonl (rows with score)"

    def rescore(self, files, *, capabilities=None, questions=None, category_column=None) -> BenchmarkScore:
        if len(files) != 1:
            raise ValueError("vicuna80 scores one review file at a time")
        categories = {q["question_id"]: q["category"] for q in read_jsonl(questions)} if questions else None
        return vicuna80_score(read_jsonl(files[0]), categories)

    def _file(self, ctx: EvalContext, name: str) -> Path:
        folder = require(ctx.paths.vicuna80, "Vicuna-80 folder", "eval.paths.vicuna80")
        return require(folder / name, f"Vicuna-80 {name}", "eval.paths.vicuna80")

    def load(self, ctx: EvalContext) -> list[Item]:
        return [Item(q["question_id"], q["text"], None, {"category": q["category"]})
                for q in read_jsonl(self._file(ctx, "question.jsonl"))]

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        templates = VicunaTemplates.load(self._file(ctx, "prompt.jsonl"), self._file(ctx, "reviewer.jsonl"))
        reference_file = require(ctx.paths.vicuna80_reference, "Vicuna-80 reference answers",
                                 "eval.paths.vicuna80_reference")
        reference = {a["question_id"]: a["text"] for a in read_jsonl(reference_file)}
        runs = ctx.judge_runs(self.name)
        requests = []
        for run in range(runs):
            for it, answer in zip(items, answers, strict=True):
                # Assistant 1 = the reference model, Assistant 2 = this model (FastChat's order).
                messages, params = build_vicuna_messages(it.prompt, reference[it.id], answer,
                                                         it.meta["category"], templates)
                requests.append(JudgeRequest(messages=messages, temperature=params["temperature"],
                                             max_tokens=params["max_tokens"], tag=it.id, run=run,
                                             accept=has_score_pair))
        replies = ctx.judge_many(self.name, requests)
        categories = {it.id: it.meta["category"] for it in items}
        all_rows, failed = [], []
        for run in range(runs):
            chunk = replies[run * len(items):(run + 1) * len(items)]
            rows = [{"question_id": it.id, "category": it.meta["category"], "text": reply,
                     "score": list(parse_score_pair(reply))} for it, reply in zip(items, chunk)]
            write_jsonl(out / f"reviews-{run + 1}.jsonl", rows)  # every reply, parsed or not, to inspect
            all_rows.append(rows)
            failed += [(run, row["question_id"]) for row in rows if tuple(row["score"]) == FAILED_PAIR]
        ctx.check_parse_failures(self.name, failed, len(requests), runs)
        # Replies that gave no score (within the allowed number) are left out, never summed as (-1, -1).
        scores = [vicuna80_score(rows, categories, exclude_failed=True) for rows in all_rows]
        names = sorted({name for s in scores for name in s.categories})
        # Unrounded per-run totals (sum of target scores / sum of reference scores), averaged over runs.
        totals = [s.details["target_sum"] / s.details["reference_sum"] * 100 for s in scores]
        return {
            "overall": round1(statistics.fmean(totals)),
            "categories": {n: round1(statistics.fmean(s.categories[n] for s in scores)) for n in names},
            "runs": [round1(t) for t in totals],
            "std": round1(statistics.pstdev(totals)),
            "parse_failures": sum(s.parse_failures for s in scores),
            "count": len(items),
            "details": {"reference": reference_file.name},
        }
