"""Evaluates a trained run on `eval.benchmarks`: generate, judge or score, merge into results.json.

Per benchmark and beam size, files go to `<run>/eval/<benchmark>/beam<k>/`: answers.jsonl (the model's
answers, with the generation settings in each row's metadata), the judge's replies (reviews-<n>.jsonl, one
file per judge run) and scores.json. The summary lands in results.json under `eval.<benchmark>.beam<k>`
(overall, categories, runs, std, parse_failures, count, judge_model, judge_runs, num_beams) with the
settings that produced it. A benchmark already scored with the same settings is skipped; saved
answers with the same generation settings are reused, so a run whose judge failed only re-judges (and the
judge's disk cache makes calls that succeeded before free).

A score is published only when every judge reply parsed, or when the failures are within
`eval.judge.max_parse_failures` (the count is then shown beside the score). Otherwise the entry is marked
`status: incomplete` with no overall score and the failed item ids, and the evaluation fails; replies
that did not parse are never cached, so a re-run asks the judge again for exactly those items.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm import layout
from lmm.atomic import write_text_atomic
from lmm.eval.benchmarks import Benchmark, BenchmarkError, EvalContext, Item, ParseFailures, get_benchmark
from lmm.eval.benchmarks.base import read_jsonl, write_jsonl
from lmm.filelock import exclusive
from lmm.layout import model_dir
from lmm.records import is_done, read_record, update_record

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
SCORES_FILE = "scores.json"
# What results.json keeps of a benchmark's scores (scores.json has everything).
SUMMARY_KEYS = ("overall", "categories", "runs", "std", "parse_failures", "count")
# Questions handed to generation at a time (images of one chunk are decoded together).
CHUNK_BATCHES = 8


class EvalFailed(RuntimeError):
    """Some benchmarks could not be scored; `results` holds those that were, `failures` says why not."""

    def __init__(self, failures: dict[str, str], results: dict[str, dict]):
        super().__init__("evaluation failed for " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
        self.failures = failures
        self.results = results


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    processor: object
    num_image_tokens: int


def load_model(cfg: DictConfig, run_dir: Path) -> LoadedModel:
    """The run's trained model (spread over the GPUs when there are some), its tokenizer and image processor."""
    from transformers import AutoTokenizer, CLIPImageProcessor

    from lmm.models.assemble import num_image_tokens
    from lmm.models.checkpoint import load_for_eval

    record = read_record(run_dir)
    source = Path(record.get("assembled") or "")
    if not (source / "tokenizer_config.json").exists():
        source = model_dir(run_dir)  # a run moved from another machine: its own exported folder
    tokenizer = AutoTokenizer.from_pretrained(source)
    processor = CLIPImageProcessor.from_pretrained(source)
    model = load_for_eval(cfg, run_dir)  # sharded over the GPUs (eval.device_map), whole on a CPU
    return LoadedModel(model, tokenizer, processor, num_image_tokens(cfg.vision))


def generation_settings(cfg: DictConfig) -> dict:
    """Everything that changes generated answers (batch size does not: prompts are left-padded)."""
    return {"template": str(cfg.model.template), "num_beams": int(cfg.eval.num_beams),
            "max_new_tokens": int(cfg.eval.max_new_tokens), "image_aspect": str(cfg.data.image_aspect)}


def benchmark_settings(ctx: EvalContext, bench: Benchmark) -> dict:
    settings: dict = {}
    if bench.generative:
        settings["generation"] = generation_settings(ctx.cfg)
    if bench.judged:
        settings["judge"] = {"model": ctx.judge_model(bench.name), "num_runs": ctx.judge_runs(bench.name)}
    settings.update(bench.settings(ctx))
    return settings


def beam_key(cfg: DictConfig) -> str:
    return f"beam{int(cfg.eval.num_beams)}"


def eval_dir(run_dir: Path, benchmark: str, cfg: DictConfig) -> Path:
    return layout.eval_dir(run_dir, benchmark, beam_key(cfg))


def saved_answers(path: Path, items: Sequence[Item], generation: dict) -> list[str] | None:
    """The answers saved by an earlier evaluation, if they answer these questions with these settings."""
    if not path.exists():
        return None
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError):
        return None
    if [r.get("question_id") for r in rows] != [it.id for it in items]:
        return None
    if any(r.get("metadata") != generation for r in rows):
        return None
    return [r["text"] for r in rows]


def generate(items: Sequence[Item], loaded: LoadedModel, cfg: DictConfig, label: str = "") -> list[str]:
    """Answers in item order, deterministic (greedy or beam search), a chunk of images decoded at a time."""
    import torch

    from lmm.eval.generate import Question, generate_answers

    torch.manual_seed(int(cfg.seed))
    batch = max(1, int(cfg.eval.batch_size))
    chunk = batch * CHUNK_BATCHES
    answers: list[str] = []
    started = time.time()
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        questions = [Question(str(it.id), it.prompt, it.materialise_image()) for it in part]
        answers += generate_answers(
            loaded.model, loaded.tokenizer, loaded.processor, cfg.model.template, questions,
            num_image_tokens=loaded.num_image_tokens, image_aspect=cfg.data.image_aspect,
            num_beams=int(cfg.eval.num_beams), max_new_tokens=int(cfg.eval.max_new_tokens), batch_size=batch,
        )
        log.info("%s: %d/%d answers (%.0f s)", label, len(answers), len(items), time.time() - started)
    return answers


def answer_rows(items: Sequence[Item], answers: Sequence[str], model_id: str, generation: dict) -> list[dict]:
    """answers.jsonl rows in LLaVA's layout; `metadata` holds the generation settings."""
    rows = []
    for it, text in zip(items, answers, strict=True):
        row = {"question_id": it.id, "prompt": it.prompt, "text": text, "model_id": model_id,
               "metadata": generation}
        if "category" in it.meta:
            row["category"] = it.meta["category"]
        rows.append(row)
    return rows


def merge_scores(run_dir: Path, benchmark: str, key: str, entry: dict) -> dict:
    """Put one benchmark's entry into results.json (eval.<benchmark>.<key>), keeping every other entry."""
    with exclusive(Path(run_dir) / layout.EVAL_LOCK_FILE):
        scores = dict(read_record(run_dir).get("eval") or {})
        scores[benchmark] = {**(scores.get(benchmark) or {}), key: entry}
        return update_record(run_dir, eval=scores)


def evaluate_benchmark(ctx: EvalContext, bench: Benchmark, settings: dict,
                       model: Callable[[], LoadedModel]) -> dict:
    """Scores of one benchmark (with details), generating only when no matching answers are saved."""
    cfg, out = ctx.cfg, eval_dir(ctx.run_dir, bench.name, ctx.cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not bench.generative:
        return bench.evaluate(ctx, model, out)
    items = bench.load(ctx)
    if not items:
        raise BenchmarkError(f"{bench.name}: no questions")
    answers = saved_answers(out / ANSWERS_FILE, items, settings["generation"])
    if answers is None:
        answers = generate(items, model(), cfg, label=f"{bench.name} {beam_key(cfg)}")
        write_jsonl(out / ANSWERS_FILE, answer_rows(items, answers, ctx.run_dir.name, settings["generation"]))
    else:
        log.info("%s %s: reusing %d saved answers", bench.name, beam_key(cfg), len(answers))
    return bench.score(ctx, items, answers, out)


def evaluate_run(cfg: DictConfig, run_dir: str | Path, *,
                 loader: Callable[[DictConfig, Path], LoadedModel] = load_model) -> dict[str, dict]:
    """Evaluate a finished stage-2 run on every benchmark of `cfg.eval.benchmarks`; returns the entries
    merged into results.json, by benchmark. The model is loaded once, and only if something needs it.

    Raises EvalFailed after the other benchmarks are done when some could not be scored (missing data, a
    failing judge); a re-run then picks up where this one stopped.
    """
    run_dir = Path(run_dir).resolve()
    if not is_done(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a finished run (no DONE and results.json)")
    if read_record(run_dir).get("kind") == "stage1":
        raise ValueError(f"{run_dir} is a stage-1 run (projector only): evaluate its stage-2 runs")
    benches = [get_benchmark(name) for name in cfg.eval.benchmarks]  # unknown names fail before any work
    ctx = EvalContext(cfg, run_dir)
    key = beam_key(cfg)
    loaded: list[LoadedModel] = []

    def model() -> LoadedModel:
        if not loaded:
            log.info("loading the trained model of %s", run_dir.name)
            loaded.append(loader(cfg, run_dir))
        return loaded[0]

    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    for bench in benches:
        started = time.time()
        try:
            settings = benchmark_settings(ctx, bench)
            previous = (read_record(run_dir).get("eval") or {}).get(bench.name, {}).get(key)
            if is_published(previous, settings, ctx.max_parse_failures):
                log.info("%s %s: already scored with these settings, skipped", bench.name, key)
                results[bench.name] = previous
                continue
            scores = evaluate_benchmark(ctx, bench, settings, model)
        except BenchmarkError as e:
            log.error("%s %s: %s", bench.name, key, e)
            failures[bench.name] = str(e)
            if isinstance(e, ParseFailures):  # the record says why there is no score
                merge_scores(run_dir, bench.name, key,
                             incomplete_entry(bench.name, e, settings, cfg, run_dir, started))
            continue
        out = eval_dir(run_dir, bench.name, cfg)
        write_text_atomic(out / SCORES_FILE, json.dumps(
            {"benchmark": bench.name, "beam": key, "settings": settings, **scores}, indent=2, default=str) + "\n")
        entry = {"status": "complete", **{k: scores[k] for k in SUMMARY_KEYS if k in scores}}
        entry.update(_entry_context(bench.name, settings, cfg, run_dir, started))
        merge_scores(run_dir, bench.name, key, entry)
        results[bench.name] = entry
        log.info("%s %s: %s%s", bench.name, key, entry.get("overall"), _failures_note(entry))
    if failures:
        raise EvalFailed(failures, results)
    return results


def is_published(previous: dict | None, settings: dict, max_parse_failures: int) -> bool:
    """Whether a recorded entry is a score for these settings that needs no re-scoring (an incomplete
    entry, or one scored with more unparsed judge replies than now allowed, is scored again)."""
    return bool(previous) and previous.get("settings") == settings and previous.get("status") != "incomplete" \
        and previous.get("overall") is not None and int(previous.get("parse_failures") or 0) <= max_parse_failures


def _entry_context(bench: str, settings: dict, cfg: DictConfig, run_dir: Path, started: float) -> dict:
    """What every results.json entry records beside its scores: the settings, judge, folder and timing."""
    judge = settings.get("judge") or {}
    return {"settings": settings, "num_beams": int(cfg.eval.num_beams), "judge_model": judge.get("model"),
            "judge_runs": judge.get("num_runs"), "folder": str(eval_dir(run_dir, bench, cfg).relative_to(run_dir)),
            "wall_time_s": round(time.time() - started, 2), "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def incomplete_entry(bench: str, error: ParseFailures, settings: dict, cfg: DictConfig, run_dir: Path,
                     started: float) -> dict:
    """The results.json entry of a benchmark whose judge replies did not all parse: no overall score."""
    return {"status": "incomplete", "overall": None, "parse_failures": error.count,
            "max_parse_failures": error.limit, "reviews": error.total, "failed_items": error.failed_ids,
            "error": str(error), **_entry_context(bench, settings, cfg, run_dir, started)}


def _failures_note(entry: dict) -> str:
    n = int(entry.get("parse_failures") or 0)
    return f" ({n} judge replies unparsed, within eval.judge.max_parse_failures)" if n else ""


def resolve_run(cfg: DictConfig) -> tuple[Path, DictConfig]:
    """The run folder to evaluate and the config to evaluate it with.

    `+run=PATH` names the folder; its saved config.yaml then supplies the model, data and template, and the
    command line's `eval` section (benchmarks, beams, judge, benchmark paths) replaces the saved one.
    Without it the folder is the one this config's run id names.
    """
    given = cfg.get("run")
    if not given:
        from lmm.launch.identity import run_dir

        return run_dir(cfg), cfg
    folder = Path(str(given)).expanduser().resolve()
    saved = folder / layout.CONFIG_FILE
    if not saved.exists():
        return folder, cfg
    run_cfg = OmegaConf.load(saved)
    run_cfg.eval = OmegaConf.create(OmegaConf.to_container(cfg.eval, resolve=True))
    return folder, run_cfg


def format_results(results: dict[str, dict]) -> str:
    lines = []
    for name, entry in results.items():
        cats = ", ".join(f"{k} {v}" for k, v in (entry.get("categories") or {}).items())
        by = f" [judge {entry['judge_model']} x{entry['judge_runs']}]" if entry.get("judge_model") else ""
        suffix = f"  ({cats})" if cats else ""
        lines.append(f"{name} beam{entry.get('num_beams')}: {entry.get('overall')}{_failures_note(entry)}{by}"
                     f"{suffix}")
    return "\n".join(lines)
