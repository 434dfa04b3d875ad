"""MMLU through lm-evaluation-harness: lm-eval's own `mmlu` subject tasks on the local MMLU files.

Each subject runs as lm-eval's `mmlu_<subject>` task (its prompt: the "The following are multiple choice
questions (with answers) about <subject>." header, the first five dev questions as shots, "Answer:", and
log-likelihood scoring of " A"/" B"/" C"/" D"), with only its data source replaced: instead of downloading
`cais/mmlu`, a generated task folder points lm-eval at JSON copies of the published CSVs under
`eval.paths.mmlu` (`dev/<subject>_dev.csv`, `test/<subject>_test.csv`), so nothing goes to the network.
Groups mirror lm-eval's: the four super-categories (STEM, humanities, social sciences, other, each
subject's category as lm-eval tags it) and the overall score, all weighted by size (micro averages).

The model is the run's (or checkpoint's) Hugging Face causal LM: a bare LLM as it is; a LLaVA model as
its language model + lm_head (`causal_lm_view`), LoRA layers included when the run's adapters are loaded
unmerged (they sit inside the language model's modules).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmm.eval.benchmarks.base import Benchmark, BenchmarkError, EvalContext, require, write_jsonl
from lmm.eval.benchmarks.common import round1

log = logging.getLogger(__name__)

CHOICES = ("A", "B", "C", "D")
NUM_SHOTS = 5
# lm-eval's super-categories (the `mmlu_<category>_tasks` tags of its subject tasks), in its order.
CATEGORIES = ("stem", "humanities", "social_sciences", "other")
TASK_PREFIX = "lmm_mmlu"
GROUP = TASK_PREFIX
# Bump when the generated task folder changes shape (the folder is cached by its inputs).
TASK_FOLDER_VERSION = 1


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

    def as_doc(self) -> dict:
        """The row in `cais/mmlu`'s layout, which lm-eval's mmlu tasks read."""
        return {"question": self.question, "subject": self.subject, "choices": list(self.options),
                "answer": CHOICES.index(self.answer)}


def read_split(path: Path, subject: str) -> list[MMLUQuestion]:
    """One subject's CSV (no header): question, A, B, C, D, answer letter."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    questions = []
    for i, r in enumerate(rows):
        if len(r) < 6 or r[5].strip() not in CHOICES:
            raise BenchmarkError(f"{path} row {i + 1}: expected question, A, B, C, D, answer letter; got {r!r}")
        questions.append(MMLUQuestion(subject, i, r[0], tuple(r[1:5]), r[5].strip()))
    return questions


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


# -- lm-eval's task definitions ---------------------------------------------------------------------


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def lm_eval_mmlu_folder() -> Path:
    """lm-eval's own MMLU subject tasks (`mmlu_<subject>.yaml`, 5-shot-ready, log-likelihood)."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"


def subject_task_file(subject: str) -> Path:
    path = lm_eval_mmlu_folder() / f"mmlu_{subject}.yaml"
    if not path.exists():
        raise BenchmarkError(f"mmlu: {subject!r} is not one of lm-eval's 57 MMLU subjects (no {path.name} in "
                             f"{path.parent}); the files under eval.paths.mmlu must be named <subject>_test.csv")
    return path


def subject_category(subject: str) -> str:
    """The super-category lm-eval files a subject under (its task's `mmlu_<category>_tasks` tag)."""
    import yaml

    tag = (yaml.safe_load(subject_task_file(subject).read_text(encoding="utf-8")) or {}).get("tag", "")
    category = str(tag).removeprefix("mmlu_").removesuffix("_tasks")
    if category not in CATEGORIES:
        raise BenchmarkError(f"mmlu: lm-eval's task for {subject} has an unexpected tag {tag!r}")
    return category


def _yaml(data: dict) -> str:
    # JSON is YAML: no quoting surprises in paths or descriptions.
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _digest(subjects: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([TASK_FOLDER_VERSION, lm_eval_version(), str(lm_eval_mmlu_folder()), NUM_SHOTS]).encode())
    for subject, (dev, test) in sorted(subjects.items()):
        h.update(json.dumps([subject, [q.as_doc() for q in dev], [q.as_doc() for q in test]]).encode())
    return h.hexdigest()[:12]


def write_task_folder(subjects: dict[str, tuple[list[MMLUQuestion], list[MMLUQuestion]]], cache_dir: Path) -> Path:
    """A folder of lm-eval task configs (and their data) for these subjects; cached by content.

    Per subject: `<subject>/{dev,test}.jsonl` and a task `lmm_mmlu_<subject>` that includes lm-eval's own
    `mmlu_<subject>.yaml` and replaces only where the data comes from. Groups: `lmm_mmlu_<category>` per
    super-category present, and `lmm_mmlu` over them, each averaging `acc` weighted by size, as lm-eval's
    `mmlu` group does.
    """
    folder = Path(cache_dir) / "mmlu-lm-eval" / _digest(subjects)
    if (folder / "DONE").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    final = folder  # paths inside the configs name the final folder
    categories: dict[str, list[str]] = {}
    for subject, (dev, test) in sorted(subjects.items()):
        category = subject_category(subject)
        categories.setdefault(category, []).append(subject)
        (staging / subject).mkdir()
        for split, questions in (("dev", dev), ("test", test)):
            (staging / subject / f"{split}.jsonl").write_text(
                "".join(json.dumps(q.as_doc(), ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
        task = {
            "task": f"{TASK_PREFIX}_{subject}",
            "include": str(subject_task_file(subject)),
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"dev": str(final / subject / "dev.jsonl"),
                                              "test": str(final / subject / "test.jsonl")},
                               "cache_dir": str(final / "hf-datasets")},
            "test_split": "test",
            "fewshot_split": "dev",
            # lm-eval's first_n sampler takes the first dev questions; the published dev sets hold exactly 5.
            "num_fewshot": min(NUM_SHOTS, len(dev)),
            "tag": f"{TASK_PREFIX}_{category}_tasks",
        }
        (staging / f"{TASK_PREFIX}_{subject}.yaml").write_text(_yaml(task), encoding="utf-8")
    aggregate = [{"metric": "acc", "weight_by_size": True}]
    present = [c for c in CATEGORIES if c in categories]
    for category in present:
        group = {"group": f"{TASK_PREFIX}_{category}", "group_alias": category,
                 "task": [f"{TASK_PREFIX}_{category}_tasks"], "aggregate_metric_list": aggregate}
        (staging / f"_{TASK_PREFIX}_{category}.yaml").write_text(_yaml(group), encoding="utf-8")
    top = {"group": GROUP, "task": [f"{TASK_PREFIX}_{c}" for c in present], "aggregate_metric_list": aggregate}
    (staging / f"_{GROUP}.yaml").write_text(_yaml(top), encoding="utf-8")
    (staging / "DONE").write_text("done\n")
    try:
        os.replace(staging, folder)  # whole folders only: a concurrent evaluation sees none or all of it
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process finished first
    return folder


# -- the model as a causal LM -----------------------------------------------------------------------


def causal_lm_view(model):
    """The model as a Hugging Face causal LM: a causal LM itself, or a LLaVA model's language model and
    lm_head in a `*ForCausalLM` shell (shared modules, no copy; LoRA layers inside them stay active)."""
    import torch
    from transformers import AutoModelForCausalLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wrapper
    inner = getattr(base, "model", None)
    language_model = getattr(inner, "language_model", None)
    if language_model is None or not hasattr(base, "lm_head"):
        return base  # a causal LM already
    text_config = base.config.text_config
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(text_config)
    shell.model = language_model
    shell.lm_head = base.lm_head
    return shell.eval()


# -- running lm-eval --------------------------------------------------------------------------------


def run_lm_eval(model, tokenizer, task_folder: Path, *, batch_size: int, seed: int) -> dict:
    """lm-eval's `simple_evaluate` on the generated `lmm_mmlu` group (5-shot, log-likelihood)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    lm = HFLM(pretrained=causal_lm_view(model), tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(task_folder), include_defaults=False)
    # num_fewshot is each task's own (5, or all of a smaller dev set): passing it here would override that.
    return simple_evaluate(model=lm, tasks=[GROUP], task_manager=manager,
                           log_samples=True, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed,
                           torch_random_seed=seed, fewshot_random_seed=seed)


def _acc(results: dict, name: str) -> float | None:
    value = (results.get(name) or {}).get("acc,none")
    return None if value is None else round1(100 * float(value))


def scores_from(output: dict, subjects: dict) -> tuple[dict, list[dict]]:
    """The record's entry (overall, the super-categories, count) and one answers.jsonl row per question."""
    results = output["results"]
    rows: list[dict] = []
    per_subject: dict[str, dict] = {}
    for subject, (_, test) in sorted(subjects.items()):
        task = f"{TASK_PREFIX}_{subject}"
        samples = sorted(output.get("samples", {}).get(task, []), key=lambda s: s["doc_id"])
        if len(samples) != len(test):
            raise BenchmarkError(f"mmlu: lm-eval scored {len(samples)} of {len(test)} {subject} questions")
        for sample, q in zip(samples, test):
            logliks = [float(r[0]) for r in sample["filtered_resps"]]
            best = max(range(len(CHOICES)), key=lambda i: logliks[i])
            rows.append({"question_id": q.id, "subject": subject, "answer": q.answer, "prediction": CHOICES[best],
                         "correct": CHOICES[best] == q.answer, "logprobs": dict(zip(CHOICES, logliks))})
        per_subject[subject] = {"acc": _acc(results, task), "count": len(test),
                                "shots": min(NUM_SHOTS, len(subjects[subject][0]))}
    overall = _acc(results, GROUP)
    categories = {c: _acc(results, f"{TASK_PREFIX}_{c}") for c in CATEGORIES if f"{TASK_PREFIX}_{c}" in results}
    entry = {"overall": overall, "categories": categories, "runs": [overall], "std": 0.0, "parse_failures": 0,
             "count": len(rows), "details": {"subjects": per_subject, "harness": f"lm-eval {lm_eval_version()}",
                                             "num_fewshot": NUM_SHOTS}}
    return entry, rows


class MMLU(Benchmark):
    name = "mmlu"
    generative = False
    text_only = True

    def settings(self, ctx: EvalContext) -> dict:
        return {"num_shots": NUM_SHOTS, "method": "loglik", "harness": "lm-eval", "task": "mmlu"}

    def evaluate(self, ctx: EvalContext, model: Callable[[], Any], out: Path) -> dict:
        subjects = load_subjects(ctx.paths.mmlu)
        cache = Path(str(ctx.cfg.paths.cache_dir)).expanduser()
        folder = write_task_folder(subjects, cache)
        loaded = model()
        output = run_lm_eval(loaded.model, loaded.tokenizer, folder, batch_size=int(ctx.cfg.eval.batch_size),
                             seed=int(ctx.cfg.seed))
        entry, rows = scores_from(output, subjects)
        write_jsonl(out / "answers.jsonl", rows)
        log.info("mmlu (lm-eval): %s over %d questions; %s", entry["overall"], entry["count"], entry["categories"])
        return entry
