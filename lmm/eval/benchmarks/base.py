"""What every benchmark shares: the evaluation context, question items, judge calls, errors and files."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from PIL import Image

from lmm.atomic import write_text_atomic
from lmm.eval.benchmarks.common import BenchmarkScore, read_json, read_jsonl  # noqa: F401  (read_*: re-exported)
from lmm.eval.judge import JudgeClient, JudgeRequest


class BenchmarkError(RuntimeError):
    """A benchmark could not be scored; the other benchmarks of the run go on."""


class MissingBenchmarkData(BenchmarkError, FileNotFoundError):
    """A benchmark's published files are not where the config says."""


class JudgeFailed(BenchmarkError):
    """Some judge calls failed; the answers are saved, so a re-run only re-judges."""


class ParseFailures(BenchmarkError):
    """More judge replies than `eval.judge.max_parse_failures` gave no score: the benchmark is incomplete.

    Those replies were not cached, so a re-run asks the judge again for exactly these items.
    """

    def __init__(self, benchmark: str, failed: Sequence[tuple[int, object]], total: int, limit: int):
        self.failed_ids = sorted({item for _, item in failed}, key=str)
        self.count, self.total, self.limit = len(failed), total, limit
        super().__init__(
            f"{benchmark}: {self.count} of {total} judge replies could not be parsed as a score "
            f"(eval.judge.max_parse_failures = {limit}); item ids: {', '.join(map(str, self.failed_ids))}. "
            "Re-run the same command to ask the judge again for these items only.")


@dataclass
class Item:
    """One question to answer: an image (a path, a PIL image, or a function that decodes one) and text."""

    id: int | str
    prompt: str
    image: str | Path | Image.Image | Callable[[], Image.Image] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def materialise_image(self):
        return self.image() if callable(self.image) else self.image


@dataclass
class EvalContext:
    """The run's config (model, data, eval sections) and the judge it uses."""

    cfg: DictConfig
    run_dir: Path

    @property
    def paths(self) -> DictConfig:
        return self.cfg.eval.paths

    @property
    def judge_cfg(self) -> DictConfig:
        return self.cfg.eval.judge

    def judge_model(self, benchmark: str) -> str:
        judge = self.judge_cfg
        model = judge.model or judge.models.get(benchmark)
        if not model:
            raise BenchmarkError(f"no judge model for {benchmark}: set eval.judge.models.{benchmark}")
        return str(model)

    def judge_runs(self, benchmark: str) -> int:
        return int(self.judge_cfg.num_runs.get(benchmark, 1))

    @property
    def max_parse_failures(self) -> int:
        return int(self.judge_cfg.get("max_parse_failures") or 0)  # configs saved before the field: 0

    def check_parse_failures(self, benchmark: str, failed: Sequence[tuple[int, object]], total: int,
                             runs: int = 1) -> int:
        """The number of (run, item id) replies that gave no score, out of `total` over `runs` judge runs;
        raises ParseFailures above the limit, or when a judge run has no score at all to average."""
        per_run = Counter(run for run, _ in failed)
        if len(failed) > self.max_parse_failures or any(n == total // runs for n in per_run.values()):
            raise ParseFailures(benchmark, failed, total, self.max_parse_failures)
        return len(failed)

    def judge_client(self, benchmark: str) -> JudgeClient:
        judge = self.judge_cfg
        return JudgeClient(
            model=self.judge_model(benchmark), base_url=judge.base_url, api_key_env=judge.api_key_env,
            cache_dir=judge.cache_dir, max_retries=int(judge.max_retries), timeout=float(judge.timeout_s),
        )

    def judge_many(self, benchmark: str, requests: Sequence[JudgeRequest]) -> list[str]:
        """Reply texts in request order; raises JudgeFailed if any call failed (the cache keeps the rest)."""
        batch = self.judge_client(benchmark).judge_many(requests, max_workers=int(self.judge_cfg.max_workers))
        failed = [r for r in batch.results if not r.ok]
        if failed:
            raise JudgeFailed(f"{benchmark}: {len(failed)} of {len(requests)} judge calls failed "
                              f"(first: {failed[0].error})")
        return [r.content for r in batch.results]


def require(path: str | Path, what: str, config_key: str) -> Path:
    """The path if it exists, else a MissingBenchmarkData naming the config field to set."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingBenchmarkData(f"{what} not found at {path} (set {config_key})")
    return path




def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    write_text_atomic(Path(path), "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def answer_texts(items: Sequence[Item], answers: Sequence[str]) -> list[dict]:
    """Model answers as `{"question_id", "text"}` rows (the layout the judge prompt builders read)."""
    return [{"question_id": it.id, "text": a} for it, a in zip(items, answers, strict=True)]


class Benchmark:
    """A benchmark: load its questions, then score the model's answers (judged or not).

    Generative benchmarks implement `load` and `score`; the runner generates between the two. Others
    (MMLU's log-likelihood) implement `evaluate`, which gets a function returning the loaded model (called
    once the benchmark's files are found, so missing data never costs a model load).
    """

    name: str = ""
    generative: bool = True
    judged: bool = False
    # Text only (no image in any question): a bare LLM can take it (Vicuna-80, MMLU).
    text_only: bool = False

    def settings(self, ctx: EvalContext) -> dict:
        """Benchmark-specific settings that change its scores (a changed setting means re-scoring)."""
        return {}

    def load(self, ctx: EvalContext) -> list[Item]:
        raise NotImplementedError

    def score(self, ctx: EvalContext, items: Sequence[Item], answers: Sequence[str], out: Path) -> dict:
        raise NotImplementedError

    def evaluate(self, ctx: EvalContext, model: Callable[[], Any], out: Path) -> dict:
        raise NotImplementedError

    # What `python -m lmm.eval.rescore` reads to score this benchmark again without any API call (None: it
    # cannot be rescored from saved files).
    rescore_files: str | None = None

    def rescore(self, files: Sequence[str | Path], *, capabilities: str | Path | None = None,
                questions: str | Path | None = None, category_column: str | None = None) -> BenchmarkScore:
        """The published-scale score of saved judge outputs (or predictions), as the benchmark's own scripts."""
        raise ValueError(f"{self.name} is not rescored from saved files")
