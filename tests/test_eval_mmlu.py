"""MMLU through lm-evaluation-harness on tiny models and a local MMLU-format fixture (no network)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_hf import tiny_llava, tiny_llm

from lmm.config import compose
from lmm.eval.benchmarks import EvalContext, get_benchmark, mmlu

# One subject per super-category (lm-eval files astronomy under STEM, philosophy under humanities,
# sociology under social sciences, virology under other).
SUBJECTS = {"astronomy": "stem", "philosophy": "humanities", "sociology": "social_sciences", "virology": "other"}


def write_fixture(folder: Path, num_dev: int = 5, num_test: int = 3) -> Path:
    """An MMLU-format folder (dev/<subject>_dev.csv, test/<subject>_test.csv, no header) with made-up
    questions, answers cycling through A-D."""
    for split, count in (("dev", num_dev), ("test", num_test)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for s, subject in enumerate(SUBJECTS):
            with open(folder / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                for i in range(count):
                    writer.writerow([f"Which {subject} answer is number {i} of the {split} set?", f"red {i}",
                                     f"blue {i}, or green", "the sun", f"{s} cats", "ABCD"[(i + s) % 4]])
    return folder


def hand_prompt(subject: str, shots: list[list[str]], question: list[str]) -> str:
    """lm-eval's MMLU prompt written out by hand: its header, the solved shots, the question."""
    def block(row: list[str]) -> str:
        return f"{row[0]}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer:"

    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return header + "".join(f"{block(s)} {s[5]}\n\n" for s in shots) + block(question)


@torch.inference_mode()
def hand_logliks(model, tokenizer, context: str) -> list[float]:
    """log P(" X" | context) for X in A-D: the continuation's tokens are what `context + " X"` adds to the
    context's own tokens (lm-eval's definition), each scored from the position before it."""
    ctx = tokenizer(context)["input_ids"]
    out = []
    for letter in "ABCD":
        cont = tokenizer(f"{context} {letter}")["input_ids"][len(ctx):]
        ids = torch.tensor([ctx + cont], device=model.device)
        logprobs = torch.log_softmax(model(input_ids=ids[:, :-1]).logits.float(), dim=-1)[0]
        out.append(sum(float(logprobs[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
    return out


def read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [r for r in csv.reader(f) if r]


def context_for(tmp_path: Path, folder: Path, *overrides: str) -> EvalContext:
    cfg = compose([f"paths.root={tmp_path}", f"eval.paths.mmlu={folder}", "eval.batch_size=4", *overrides])
    return EvalContext(cfg, tmp_path / "run")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_lm_eval_mmlu_equals_a_hand_count_of_log_likelihood_answers(tmp_path, tiny_tokenizer, device):
    folder = write_fixture(tmp_path / "mmlu")
    model = tiny_llm(tiny_tokenizer, seed=3).to(device)
    # A sharper output layer than random init: the four options' log-likelihoods lie far apart.
    model.lm_head.weight.data *= 40
    loaded = SimpleNamespace(model=model, tokenizer=tiny_tokenizer)
    scores = get_benchmark("mmlu").evaluate(context_for(tmp_path, folder), lambda: loaded, tmp_path / "out")

    correct: dict[str, list[bool]] = {}
    predictions = {}
    for subject, category in SUBJECTS.items():
        shots = read_rows(folder / "dev" / f"{subject}_dev.csv")
        for i, row in enumerate(read_rows(folder / "test" / f"{subject}_test.csv")):
            logliks = hand_logliks(model, tiny_tokenizer, hand_prompt(subject, shots, row))
            predictions[f"{subject}-{i}"] = "ABCD"[max(range(4), key=lambda k: logliks[k])]
            correct.setdefault(category, []).append(predictions[f"{subject}-{i}"] == row[5])
    every = [c for v in correct.values() for c in v]
    assert 0 < sum(every) < len(every)  # the count is not trivially all or nothing
    assert scores["count"] == len(every) == 12
    assert scores["overall"] == round(100 * sum(every) / len(every), 1)
    assert scores["categories"] == {c: round(100 * sum(v) / len(v), 1) for c, v in correct.items()}
    assert set(scores["categories"]) == {"stem", "humanities", "social_sciences", "other"}
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert {r["question_id"]: r["prediction"] for r in rows} == predictions
    assert scores["details"]["harness"].startswith("lm-eval ")
    assert scores["details"]["subjects"]["virology"]["shots"] == 5


def test_a_short_dev_set_gives_fewer_shots_and_the_task_folder_is_reused(tmp_path, tiny_tokenizer):
    folder = write_fixture(tmp_path / "mmlu", num_dev=2, num_test=2)
    loaded = SimpleNamespace(model=tiny_llm(tiny_tokenizer), tokenizer=tiny_tokenizer)
    ctx = context_for(tmp_path, folder)
    first = get_benchmark("mmlu").evaluate(ctx, lambda: loaded, tmp_path / "a")
    assert first["details"]["subjects"]["astronomy"]["shots"] == 2 and first["count"] == 8
    cache = Path(ctx.cfg.paths.cache_dir) / "mmlu-lm-eval"
    built = sorted(cache.iterdir())
    second = get_benchmark("mmlu").evaluate(ctx, lambda: loaded, tmp_path / "b")
    assert second["overall"] == first["overall"]
    assert sorted(cache.iterdir()) == built  # the same inputs: the same task folder, not another


def test_unknown_subjects_are_refused(tmp_path, tiny_tokenizer):
    folder = write_fixture(tmp_path / "mmlu", num_dev=1, num_test=1)
    for split in ("dev", "test"):
        (folder / split / f"astronomy_{split}.csv").rename(folder / split / f"astrology_{split}.csv")
    with pytest.raises(mmlu.BenchmarkError, match="'astrology' is not one of lm-eval's 57 MMLU subjects"):
        get_benchmark("mmlu").evaluate(context_for(tmp_path, folder), lambda: None, tmp_path / "out")


@torch.inference_mode()
def test_llava_language_model_runs_as_a_causal_lm_with_lora_unmerged_or_merged(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    llava = tiny_llava(tiny_tokenizer, seed=1)
    ids = tiny_tokenizer("What colour is the sun?", return_tensors="pt")["input_ids"]
    view = mmlu.causal_lm_view(llava)
    assert type(view).__name__ == "LlamaForCausalLM" and view.model is llava.model.language_model
    assert torch.allclose(view(input_ids=ids).logits, llava(input_ids=ids).logits)

    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                        init_lora_weights=False)
    lora = get_peft_model(tiny_llava(tiny_tokenizer, seed=1), config).eval()
    adapter_view = mmlu.causal_lm_view(lora)
    with_adapter = adapter_view(input_ids=ids).logits
    assert not torch.allclose(with_adapter, view(input_ids=ids).logits, atol=1e-4)  # the adapter counts
    merged = mmlu.causal_lm_view(lora.merge_and_unload())
    assert torch.allclose(merged(input_ids=ids).logits, with_adapter, atol=1e-5)
