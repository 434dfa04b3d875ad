"""Vicuna-80: text-only answers reviewed pairwise against a reference model's answers (relative score)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from lmm.eval.benchmarks.base import Benchmark, EvalContext, Item, read_jsonl, require, write_jsonl
from lmm.eval.judge import JudgeRequest
from lmm.eval.prompts import VicunaTemplates, build_vicuna_messages
from lmm.eval.scorers import FAILED_PAIR, has_score_pair, parse_score_pair, round1, vicuna80_score


class Vicuna80(Benchmark):
    name = "vicuna80"
    judged = True
    text_only = True

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
