"""LLaVA-Bench (In-the-Wild and COCO): open answers judged against GPT-4 references, relative score."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmm.eval.benchmarks.base import (
    Benchmark,
    EvalContext,
    Item,
    MissingBenchmarkData,
    answer_texts,
    require,
    write_jsonl,
)
from lmm.eval.benchmarks.common import (
    FAILED_PAIR,
    REVIEW_SYSTEM_PROMPT,
    BenchmarkScore,
    chat,
    has_score_pair,
    parse_score_pair,
    population_std,
    read_json,
    read_jsonl,
    review_pairs,
    round1,
)
from lmm.eval.judge import JudgeRequest

# Sampling parameters of the published judge calls.
JUDGE_PARAMS = {"temperature": 0.2, "max_tokens": 1024}


LLAVA_BENCH_PREFIX = "llava_bench_"


# Short names used in reports -> the names the LLaVA paper's tables use.
LLAVA_BENCH_PAPER_NAMES = {"conv": "conversation", "detail": "detail", "complex": "reasoning"}


def llava_bench_short_name(category: str) -> str:
    """'llava_bench_conv' -> 'conv' (names without the prefix pass through)."""
    return category.removeprefix(LLAVA_BENCH_PREFIX)


def llava_bench_review_row(question_id: int, category: str, reply: str) -> dict:
    """A review row in the published layout, for a judge reply to one LLaVA-Bench question."""
    full = category if category.startswith(LLAVA_BENCH_PREFIX) else LLAVA_BENCH_PREFIX + category
    return {
        "question_id": question_id,
        "category": full,
        "content": reply,
        "tuple": list(parse_score_pair(reply)),
    }


def _llava_bench_order(names: Iterable[str]) -> list[str]:
    """The paper's column order (conv, detail, complex), then any other category alphabetically."""
    names = set(names)
    known = [n for n in LLAVA_BENCH_PAPER_NAMES if n in names]
    return known + sorted(names - set(known))


def _relative(pairs: Sequence[tuple[float, float]]) -> float:
    """mean(model) / mean(reference) x 100, a ratio of means (not a mean of ratios)."""
    reference = sum(p[0] for p in pairs) / len(pairs)
    model = sum(p[1] for p in pairs) / len(pairs)
    return model / reference * 100


@dataclass
class LlavaBenchRun:
    """One judge run of LLaVA-Bench, unrounded."""

    overall: float
    categories: dict[str, float]
    parse_failures: int


def llava_bench_run(rows: Iterable[Mapping], exclude_failed: bool = False) -> LlavaBenchRun:
    """Relative scores of one review file (rows with `category` and `tuple`, or `content` to parse).

    Failed parses are counted. By default they stay in the means as (-1, -1), as the published summariser
    does (to reproduce published files); `exclude_failed` leaves them out instead (our own runs).
    """
    every, by_category, failures = review_pairs(
        rows, "tuple", "content", lambda row: llava_bench_short_name(row["category"]), exclude_failed)
    if not every:
        raise ValueError(f"a LLaVA-Bench review file has no {'parsed reviews' if failures else 'rows'}")
    categories = {name: _relative(by_category[name]) for name in _llava_bench_order(by_category)}
    return LlavaBenchRun(overall=_relative(every), categories=categories, parse_failures=failures)


def llava_bench_score(runs: Sequence[Iterable[Mapping]], exclude_failed: bool = False) -> BenchmarkScore:
    """LLaVA-Bench over several judge runs: the published number is the mean of the runs' scores.

    `exclude_failed`: see `llava_bench_run`.
    """
    per_run = [llava_bench_run(rows, exclude_failed) for rows in runs]
    if not per_run:
        raise ValueError("no LLaVA-Bench review runs given")
    names = _llava_bench_order({name for run in per_run for name in run.categories})
    categories = {
        name: round1(statistics.fmean(run.categories[name] for run in per_run if name in run.categories))
        for name in names
    }
    totals = [run.overall for run in per_run]
    return BenchmarkScore(
        overall=round1(statistics.fmean(totals)),
        categories=categories,
        runs=[round1(t) for t in totals],
        std=round1(population_std(totals)),
        parse_failures=sum(run.parse_failures for run in per_run),
        details={
            "run_categories": [{k: round1(v) for k, v in run.categories.items()} for run in per_run],
            "paper_names": {k: LLAVA_BENCH_PAPER_NAMES.get(k, k) for k in names},
        },
    )


def paper_category_names(categories: Mapping[str, float]) -> dict[str, float]:
    """Re-key LLaVA-Bench short category names (conv/detail/complex) to the paper's names."""
    return {LLAVA_BENCH_PAPER_NAMES.get(k, k): v for k, v in categories.items()}


def load_rules(path: str | Path) -> dict:
    """The judge rules (rule.json layout: key -> {"role": ..., "prompt": ...}); the caller owns the file."""
    return read_json(path)


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
    return chat(REVIEW_SYSTEM_PROMPT, content)


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

# Published file names per split: questions, GPT-4 reference answers, judge context (captions / boxes).
LAYOUTS = {
    "llava_bench": ("questions.jsonl", "answers_gpt4.jsonl", "context.jsonl"),
    "llava_bench_coco": ("qa90_questions.jsonl", "qa90_gpt4_answer.jsonl", "caps_boxes_coco2014_val_80.jsonl"),
}


class LlavaBench(Benchmark):
    judged = True

    rescore_files = "review jsonl files, one per judge run (rows with category, tuple)"

    def rescore(self, files, *, capabilities=None, questions=None, category_column=None) -> BenchmarkScore:
        return llava_bench_score([read_jsonl(f) for f in files])

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
        params = JUDGE_PARAMS
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
