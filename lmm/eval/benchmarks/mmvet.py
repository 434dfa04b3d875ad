"""MM-Vet: open answers graded 0-1 by an LLM against ground truths, per capability (rec, ocr, know, ...)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lmm.atomic import write_text_atomic
from lmm.eval.benchmarks.base import (
    Benchmark,
    EvalContext,
    Item,
    JudgeFailed,
    MissingBenchmarkData,
    read_json,
    require,
    write_jsonl,
)
from lmm.eval.judge import JudgeRequest
from lmm.eval.prompts import JUDGE_PARAMS, build_mmvet_query, load_grader_prompt
from lmm.eval.scorers import grade_mmvet_with_retries, mmvet_score, parse_mmvet_grade

QUESTIONS_FILE = "mm-vet.json"


class MMVet(Benchmark):
    name = "mmvet"
    judged = True

    def _questions(self, ctx: EvalContext) -> dict:
        folder = require(ctx.paths.mmvet, "MM-Vet folder", "eval.paths.mmvet")
        return read_json(require(folder / QUESTIONS_FILE, "MM-Vet questions", "eval.paths.mmvet"))

    def load(self, ctx: EvalContext) -> list[Item]:
        images = Path(ctx.paths.mmvet) / "images"
        items = [Item(qid, q["question"], images / q["imagename"],
                      {"capability": q["capability"], "answer": q["answer"]})
                 for qid, q in self._questions(ctx).items()]
        missing = [it.image.name for it in items if not it.image.exists()]
        if missing:
            raise MissingBenchmarkData(f"mmvet: {len(missing)} images missing from {images} (e.g. {missing[0]})")
        return items

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        prompt = load_grader_prompt(require(ctx.paths.mmvet_grader_prompt, "MM-Vet grader prompt",
                                            "eval.paths.mmvet_grader_prompt"))
        client = ctx.judge_client(self.name)
        max_tokens = JUDGE_PARAMS["mmvet"]["max_tokens"]
        runs = ctx.judge_runs(self.name)

        def grade(task):
            run, item, answer = task

            def call(messages, temperature):
                result = client.complete(JudgeRequest(messages=messages, temperature=temperature,
                                                      max_tokens=max_tokens, run=run, accept=is_grade))
                if not result.ok:  # a failed call is no grade: never let it turn into a silent 0
                    raise JudgeFailed(f"mmvet {item.id}: {result.error}")
                return result.content

            query = build_mmvet_query(prompt, item.prompt, item.meta["answer"], answer)
            return grade_mmvet_with_retries(call, query)

        tasks = [(run, it, a) for run in range(runs) for it, a in zip(items, answers, strict=True)]
        failures: list[str] = []

        def safe(task):
            try:
                return grade(task)
            except JudgeFailed as e:
                failures.append(str(e))
                return None

        with ThreadPoolExecutor(max_workers=max(1, int(ctx.judge_cfg.max_workers))) as pool:
            grades = list(pool.map(safe, tasks))
        if failures:
            raise JudgeFailed(f"mmvet: {len(failures)} of {len(tasks)} gradings failed (first: {failures[0]})")

        # A grading whose retries all gave no grade is a parse failure, not a published 0.0 (within the
        # allowed number it keeps the published grader's 0.0, and the count is reported beside the score).
        failed = [(run, it.id) for run in range(runs) for i, it in enumerate(items)
                  if not grades[run * len(items) + i].valid]
        model = ctx.judge_model(self.name)
        merged = {it.id: {"model": [], "content": [], "score": []} for it in items}
        for run in range(runs):
            rows = []
            for i, it in enumerate(items):
                g = grades[run * len(items) + i]
                rows.append({"question_id": it.id, "content": g.reply, "score": g.score, "calls": g.calls,
                             "valid": g.valid})
                slot = merged[it.id]
                slot["model"].append(model)
                slot["content"].append(g.reply)
                slot["score"].append(g.score)
            write_jsonl(out / f"reviews-{run + 1}.jsonl", rows)
        # The published grade-file layout, for `python -m lmm.eval.rescore mmvet grades.json`.
        write_text_atomic(out / "grades.json", json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
        ctx.check_parse_failures(self.name, failed, len(tasks), runs)
        questions = {it.id: {"capability": it.meta["capability"]} for it in items}
        score = mmvet_score(merged, questions, num_runs=runs)
        return {**score.to_json(), "parse_failures": len(failed), "count": len(items), "details": score.details}


def is_grade(reply: str) -> bool:
    return parse_mmvet_grade(reply) is not None
