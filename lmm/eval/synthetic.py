"""The synthetic capability-tagged benchmark: generate short answers and score them by exact match."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from lmm.eval.generate import Question, generate_answers


def normalise(answer: str) -> str:
    """Lower case, first line, no surrounding punctuation: "Red." and "red" match."""
    first = answer.strip().splitlines()[0] if answer.strip() else ""
    return re.sub(r"^[\W_]+|[\W_]+$", "", first.lower())


def exact_match_scores(items: list[dict], answers: list[str]) -> dict:
    """Accuracy ×100 overall and per capability."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for item, answer in zip(items, answers, strict=True):
        hits[item["capability"]].append(normalise(answer) == normalise(item["answer"]))
    every = [h for values in hits.values() for h in values]
    return {
        "overall": round(100 * sum(every) / len(every), 1) if every else None,
        "categories": {cap: round(100 * sum(v) / len(v), 1) for cap, v in sorted(hits.items())},
        "count": len(every),
    }


def evaluate_synthetic(model, tokenizer, processor, template: str, eval_json: Path, image_folder: Path, *,
                       num_image_tokens: int, image_aspect: str = "pad", num_beams: int = 1,
                       max_new_tokens: int = 8, batch_size: int = 16, blank_image: bool = False,
                       limit: int | None = None) -> dict:
    """Scores and the answers given (one record per question)."""
    items = json.loads(Path(eval_json).read_text())[:limit]
    questions = [Question(i["id"], i["question"], Path(image_folder) / i["image"]) for i in items]
    answers = generate_answers(model, tokenizer, processor, template, questions,
                               num_image_tokens=num_image_tokens, image_aspect=image_aspect,
                               num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               blank_image=blank_image)
    scores = exact_match_scores(items, answers)
    scores["answers"] = [{"id": i["id"], "capability": i["capability"], "answer": i["answer"], "prediction": a}
                         for i, a in zip(items, answers)]
    return scores
