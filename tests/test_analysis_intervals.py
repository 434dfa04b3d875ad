"""Bootstrap intervals against hand-computed values; tables render `value ± half-width` from run records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import intervals
from analysis.collect import collect
from analysis.intervals import Estimate
from analysis.tables import make_tables, table3a, table4

# 5 right out of 10. A bootstrap mean is Binomial(10, 1/2)/10: P(≤ 1 right) = 11/1024 = 1.1 % and
# P(≤ 2 right) = 56/1024 = 5.5 %, so the 2.5th percentile is 2/10 = 20 % and, by symmetry, the 97.5th 80 %.
HALF = [1] * 5 + [0] * 5


def test_score_interval_matches_the_binomial_percentiles():
    estimate = intervals.score([HALF], n_boot=20000)
    assert (estimate.value, estimate.low, estimate.high) == (50.0, 20.0, 80.0)
    assert estimate.format() == "50.0 ± 30.0"


def test_difference_is_paired_over_questions():
    # a is right everywhere: a − b = 100 − score(b) on every replicate, so the interval is 100 − [20, 80].
    estimate = intervals.difference([[1] * 10], [HALF], n_boot=20000)
    assert (estimate.value, estimate.low, estimate.high) == (50.0, 20.0, 80.0)
    # the same run against itself: zero on every replicate (unpaired resampling would spread it)
    same = intervals.difference([HALF], [HALF])
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def test_constant_outcomes_and_determinism():
    assert intervals.score([[1, 1, 1]]) == Estimate(100.0, 100.0, 100.0)
    rng = np.random.default_rng(0)
    outcomes = [rng.integers(0, 2, 300), rng.integers(0, 2, 300)]
    first, second = intervals.score(outcomes), intervals.score(outcomes)
    assert first == second  # a fixed seed: a second `make demo` prints the same tables
    assert first.low < first.value < first.high


def test_several_runs_in_a_cell_are_resampled_too():
    # two seeds, one right everywhere, one wrong everywhere: resampling questions alone leaves 50 on every
    # replicate; resampling the two runs gives 100 or 0 with probability 1/4 each, so the interval is [0, 100]
    estimate = intervals.score([[1] * 10, [0] * 10])
    assert (estimate.value, estimate.low, estimate.high) == (50.0, 0.0, 100.0)


def test_contrast_rejects_misaligned_runs():
    with pytest.raises(ValueError, match="same"):
        intervals.difference([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="at least one run"):
        intervals.contrast([(1.0, [])])


def test_estimate_formats():
    estimate = Estimate(4.25, 1.0, 7.0)
    assert estimate.format(signed=True) == "+4.2 ± 3.0" and estimate.interval() == "[1.0, 7.0]"
    assert estimate.above_zero() and not estimate.below_zero()


# -- tables from run records --------------------------------------------------------------------------


def write_run(runs, run_id, *, model, size_b, image, method="full", mixing=0.0, correct=None, text=None,
              hours=0.01, trainable=1000):
    """A finished stage-2 run folder: the record holds the synthetic scores, the evaluation's scores.json the
    per-question outcomes (the text-only split's in the record's entry, as an older layout would)."""
    folder = runs / "toy" / run_id
    folder.mkdir(parents=True)
    evals = {}
    for name, outcomes in (("synthetic", correct), ("synthetic_text", text)):
        if outcomes is not None:
            entry = {"overall": round(100 * sum(outcomes) / len(outcomes), 1), "categories": {}}
            correct_by_id = {f"q{i:03d}": v for i, v in enumerate(outcomes)}
            if name == "synthetic":
                detail = folder / "eval" / name / "beam1"
                detail.mkdir(parents=True)
                (detail / "scores.json").write_text(json.dumps({**entry, "correct": correct_by_id}))
            else:
                entry["correct"] = correct_by_id
            evals[name] = {"beam1": entry}
    record = {"run_id": run_id, "sweep": "toy", "kind": "stage2",
              "choices": {"model": model, "tuning": method, "data": "synthetic_mix" if mixing else "synthetic"},
              "hparams": {"nominal_params_b": size_b, "image_size": image, "method": method,
                          "rank": 8 if method != "full" else None, "alpha": 16 if method != "full" else None,
                          "mixing_ratio": mixing},
              "config": {"eval": {"benchmarks": ["synthetic", "synthetic_text"]}},
              "stages": {"finetune": {"gpu_hours_per_node": hours, "params_trainable": trainable, "gpus": 1}},
              "eval": evals}
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "DONE").write_text("")


def test_tables_render_plus_minus_in_markdown_latex_and_html(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", model="tiny_s", size_b=0.1, image=32, correct=HALF)
    write_run(runs, "b", model="tiny_s", size_b=0.1, image=48, correct=[1] * 10)
    frame = collect(runs)
    table = table3a(frame, benchmark="synthetic")
    assert table.display.loc[("32×32", "×"), "tiny_s"] == "50.0 ± 30.0"
    assert table.display.loc[("48×48", "×"), "tiny_s"] == "100.0 ± 0.0"
    assert table.values.loc[("32×32", "×"), "tiny_s"] == 50.0  # the numbers stay numbers
    assert "50.0 ± 30.0" in table.to_markdown()
    assert r"50.0 $\pm$ 30.0" in table.to_latex()
    assert "50.0 ± 30.0" in table.to_html()


def test_table4_keeps_one_setting_and_shows_intervals(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "f32", model="tiny_s", size_b=0.1, image=32, correct=[1] * 10)
    write_run(runs, "f48", model="tiny_s", size_b=0.1, image=48, correct=HALF, hours=0.02, trainable=1000)
    write_run(runs, "m48", model="tiny_s", size_b=0.1, image=48, mixing=0.25, correct=[1] * 10)
    write_run(runs, "l48", model="tiny_s", size_b=0.1, image=48, method="lora", correct=HALF, hours=0.01,
              trainable=10)
    table = table4(collect(runs), benchmark="synthetic")
    assert list(table.display.columns) == [("tiny_s", "LoRA r8"), ("tiny_s", "Full")]
    assert list(table.display.index) == ["Performance ↑", "Time (GPU-hours per node) ↓",
                                         "# Trainable Parameters (B) ↓"]
    assert table.display.loc["Performance ↑", ("tiny_s", "Full")] == "50.0 ± 30.0"
    assert table.values.loc["Time (GPU-hours per node) ↓", ("tiny_s", "Full")] == 0.02
    assert any("At 48×48, no data mixing" in n for n in table.notes)


def test_toy_table5_shows_the_text_only_split(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", model="tiny_s", size_b=0.1, image=48, correct=HALF, text=[0] * 10)
    write_run(runs, "b", model="tiny_s", size_b=0.1, image=48, mixing=0.25, correct=HALF, text=[1] * 10)
    (table,) = make_tables(collect(runs), "5", benchmark="synthetic")
    assert list(table.display.columns) == ["Synthetic (images)", "Synthetic (text only)"]
    assert list(table.display["Synthetic (text only)"]) == ["0.0 ± 0.0", "100.0 ± 0.0"]
