"""LLaVA-Bench (In-the-Wild and COCO): open answers judged against GPT-4 references, relative score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmm.eval.benchmarks.base import (
    Benchmark,
    EvalContext,
    Item,
    MissingBenchmarkData,
    answer_texts,
    read_jsonl,
    require,
    write_jsonl,
)
from lmm.eval.judge import JudgeRequest
from lmm.eval.prompts import JUDGE_PARAMS, llava_bench_items, load_rules
from lmm.eval.scorers import FAILED_PAIR, has_score_pair, llava_bench_review_row, llava_bench_score

# Published file names per split: questions, GPT-4 reference answers, judge context (captions / boxes).
LAYOUTS = {
    "llava_bench": ("questions.jsonl", "answers_gpt4.jsonl", "context.jsonl"),
    "llava_bench_coco": ("qa90_questions.jsonl", "qa90_gpt4_answer.jsonl", "caps_boxes_coco2014_val_80.jsonl"),
}


class LlavaBench(Benchmark):
    judged = True

    def __init__(self, name: str = "llava_bench"):
        self.name = name
        self.questions_file, self.references_file, self.context_file = LAYOUTS[name]

    def folder(self, ctx: EvalContext) -> Path:
        return require(ctx.paths[self.name], f"{self.name} folder", f"eval.paths.{self.name}")

    def _file(self, ctx: EvalContext, name: str) -> Path:
        return require(self.folder(ctx) / name, f"{self.name} {name}", f"eval.paths.{self.name}")

    def _image(self, ctx: EvalContext, name: str) -> Path:
        images = self.folder(ctx) / "images"
        # COCO questions name images by number; a COCO val2014 folder prefixes them.
        for candidate in (images / name, images / f"COCO_val2014_{name}"):
            if candidate.exists():
                return candidate
        raise MissingBenchmarkData(f"{self.name}: image {name} not found in {images} (set eval.paths.{self.name})")

    def load(self, ctx: EvalContext) -> list[Item]:
        rows = read_jsonl(self._file(ctx, self.questions_file))
        return [Item(q["question_id"], q["text"], self._image(ctx, q["image"]), {"category": q["category"]})
                for q in rows]

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        rules = load_rules(require(ctx.paths.llava_bench_rules, "LLaVA-Bench judge rules",
                                   "eval.paths.llava_bench_rules"))
        questions = read_jsonl(self._file(ctx, self.questions_file))
        wanted = {it.id for it in items}
        judge_items = llava_bench_items(
            [q for q in questions if q["question_id"] in wanted],
            read_jsonl(self._file(ctx, self.context_file)),
            read_jsonl(self._file(ctx, self.references_file)),
            answer_texts(items, answers),
            rules,
        )
        runs = ctx.judge_runs(self.name)
        params = JUDGE_PARAMS["llava_bench"]
        requests = [JudgeRequest(messages=it.messages, temperature=params["temperature"],
                                 max_tokens=params["max_tokens"], tag=it.question_id, run=run,
                                 accept=has_score_pair)
                    for run in range(runs) for it in judge_items]
        replies = ctx.judge_many(self.name, requests)
        per_run, failed = [], []
        for run in range(runs):
            chunk = replies[run * len(judge_items):(run + 1) * len(judge_items)]
            rows = [{"id": i + 1, **llava_bench_review_row(it.question_id, it.category, reply)}
                    for i, (it, reply) in enumerate(zip(judge_items, chunk))]
            write_jsonl(out / f"reviews-{run + 1}.jsonl", rows)  # every reply, parsed or not, to inspect
            per_run.append(rows)
            failed += [(run, row["question_id"]) for row in rows if tuple(row["tuple"]) == FAILED_PAIR]
        ctx.check_parse_failures(self.name, failed, len(requests), runs)
        # Replies that gave no score (within the allowed number) are left out, never scored as (-1, -1).
        score = llava_bench_score(per_run, exclude_failed=True)
        return {**score.to_json(), "count": len(judge_items), "details": score.details}
