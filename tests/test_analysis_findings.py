"""The findings table's verdicts on hand-made runs: reproduced / not reproduced / inconclusive from the intervals."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import findings
from analysis.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from analysis.intervals import Estimate

N = 400  # questions per run


def outcomes(right: int, offset: int = 0) -> dict[str, int]:
    """`right` of N questions answered right: questions offset … offset + right − 1 (mod N)."""
    return {f"q{i:03d}": int((i - offset) % N < right) for i in range(N)}


def run(key, size, size_b, image, method="full", mixing=False, hours=1.0, params=100.0) -> dict:
    return {"_key": key, "size": size, "size_b": size_b, "model": size, "image_size": image, "method": method,
            "mixing": mixing, "tuning_label": "full" if method == "full" else "LoRA r8",
            "gpu_hours_per_node": hours, "params_trainable": params}


def study(**right) -> tuple[pd.DataFrame, dict, dict]:
    """The toy grid (3 sizes × 2 images full, mixing and LoRA at 48 px) with `right[key]` right answers."""
    rows, multimodal, language = [], {}, {}
    for size, size_b, hours in (("s", 1, 1.0), ("m", 2, 2.0), ("l", 3, 3.0)):
        rows += [run(f"{size}32", size, size_b, 32, hours=hours), run(f"{size}48", size, size_b, 48, hours=hours),
                 run(f"{size}mix", size, size_b, 48, mixing=True, hours=hours),
                 run(f"{size}lora", size, size_b, 48, method="lora", hours=hours / 2, params=1.0)]
    for row in rows:
        multimodal[row["_key"]] = outcomes(right.get(row["_key"], 200))
        language[row["_key"]] = outcomes(right.get("text_" + row["_key"], 0))
    return pd.DataFrame(rows), multimodal, language


def verdicts(frame, multimodal, language) -> dict[str, str]:
    return {f.key: f.verdict for f in findings.findings(frame, multimodal, language)}


def test_every_finding_reproduced():
    right = {"s32": 100, "s48": 200, "m32": 160, "m48": 240, "l32": 220, "l48": 300,
             "smix": 240, "mmix": 280, "lmix": 340, "slora": 100, "mlora": 200, "llora": 296,
             "text_smix": 300, "text_mmix": 300, "text_lmix": 300}
    got = verdicts(*study(**right))
    assert got == {"1": REPRODUCED, "2": REPRODUCED, "3a": REPRODUCED, "3b": REPRODUCED, "4": REPRODUCED,
                   "5a": REPRODUCED, "5b": REPRODUCED}
    rows = findings.findings(*study(**right))
    # size: l − s over the three cells (32, 48, 48 mixed) = mean(30, 25, 25) points
    assert rows[0].effect.value == pytest.approx((120 + 100 + 100) / 3 / N * 100)
    assert rows[1].effect.value == pytest.approx((100 + 80 + 80) / 3 / N * 100)  # resolution: mean over sizes
    assert rows[3].effect.value == pytest.approx(75.0)  # language score: 0 → 75 %


def test_not_reproduced_when_the_interval_is_on_the_wrong_side():
    right = {"s32": 300, "m32": 300, "l32": 300, "s48": 100, "m48": 100, "l48": 100,  # 48 px worse
             "smix": 50, "mmix": 50, "lmix": 50,  # mixing hurts
             "slora": 90, "mlora": 60, "llora": 10}  # LoRA far behind, further as size grows
    frame, multimodal, language = study(**right)
    frame.loc[frame["method"] == "lora", "gpu_hours_per_node"] *= 4  # LoRA slower than full
    got = verdicts(frame, multimodal, language)
    assert got["2"] == NOT_REPRODUCED and got["3a"] == NOT_REPRODUCED and got["4"] == NOT_REPRODUCED
    assert got["5b"] == NOT_REPRODUCED and got["5a"] == REPRODUCED  # the size half stands on its own
    frame["gpu_hours_per_node"] = 1.0  # every run equally long
    got = verdicts(frame, multimodal, language)
    assert got["5a"] == got["5b"] == INCONCLUSIVE
    assert got["3b"] == INCONCLUSIVE  # 0 % with and without mixing: an interval [0, 0] holds 0


def test_inconclusive_when_the_interval_holds_zero():
    # 4 questions of 400 apart: a 1-point effect with an interval of about ±1 point around it
    right = {"s32": 200, "s48": 202, "m32": 200, "m48": 202, "l32": 200, "l48": 202}
    frame, multimodal, language = study(**right)
    multimodal["l48"] = outcomes(202, offset=3)  # shifted: disagrees with l32 on a few questions both ways
    got = verdicts(frame, multimodal, language)
    assert got["2"] == INCONCLUSIVE
    assert got["1"] == INCONCLUSIVE  # every size scores the same


def test_one_size_below_zero_makes_resolution_not_reproduced():
    right = {"s32": 100, "s48": 300, "m32": 100, "m48": 300, "l32": 300, "l48": 250}
    rows = findings.findings(*study(**right))
    assert rows[1].effect.above_zero() and rows[1].verdict == NOT_REPRODUCED


def test_missing_runs_are_inconclusive_not_guessed():
    frame, multimodal, language = study()
    only_full_32 = frame[frame["image_size"] == 32]
    got = verdicts(only_full_32, multimodal, language)
    assert got["2"] == got["3a"] == got["4"] == got["5b"] == INCONCLUSIVE
    assert got["5a"] == REPRODUCED  # three sizes of full fine-tuning were timed
    del multimodal["l32"]  # a run without per-question outcomes: no interval, no verdict
    assert verdicts(only_full_32, multimodal, language)["1"] == INCONCLUSIVE


def test_verdict_rules():
    assert findings.increase_verdict(Estimate(2.0, 0.5, 3.5)) == REPRODUCED
    assert findings.increase_verdict(Estimate(-2.0, -3.5, -0.5)) == NOT_REPRODUCED
    assert findings.increase_verdict(Estimate(1.0, -0.5, 2.5)) == INCONCLUSIVE
    close, far = Estimate(-2.0, -4.0, 0.0), Estimate(-20.0, -25.0, -15.0)
    closer, wider, flat = Estimate(5.0, 1.0, 9.0), Estimate(-5.0, -9.0, -1.0), Estimate(0.0, -3.0, 3.0)
    assert findings.lora_verdict(close, closer) == REPRODUCED
    assert findings.lora_verdict(far, closer) == NOT_REPRODUCED
    assert findings.lora_verdict(close, wider) == NOT_REPRODUCED
    assert findings.lora_verdict(close, flat) == INCONCLUSIVE
    assert findings.lora_verdict(Estimate(-6.0, -8.0, -4.0), closer) == INCONCLUSIVE  # straddles −5
    assert findings.cost_verdict([0.5, 0.8]) == REPRODUCED
    assert findings.cost_verdict([0.5, 1.2]) == NOT_REPRODUCED
    assert findings.cost_verdict([0.5, 0.95]) == INCONCLUSIVE  # within the timing noise
    assert findings.cost_verdict([]) == INCONCLUSIVE


def test_findings_table_renders_one_row_per_finding(tmp_path):
    from analysis.collect import collect
    from analysis.tables import make_tables
    from tests.test_analysis_intervals import write_run

    runs = tmp_path / "runs"
    write_run(runs, "s", model="tiny_s", size_b=0.1, image=48, correct=[0] * 300 + [1] * 100, text=[0] * 10)
    write_run(runs, "l", model="tiny_l", size_b=0.3, image=48, correct=[1] * 300 + [0] * 100, text=[0] * 10)
    write_run(runs, "lm", model="tiny_l", size_b=0.3, image=48, mixing=0.25, correct=[1] * 300 + [0] * 100,
              text=[1] * 10)
    (table,) = make_tables(collect(runs), "findings", sweep=["toy"])
    assert list(table.display.index) == ["1. Model size", "2. Image resolution", "3a. Data mixing (multimodal)",
                                         "3b. Data mixing (language)", "4. LoRA vs full", "5a. Cost (size)",
                                         "5b. Cost (LoRA vs full)"]
    assert list(table.display["Verdict"]) == [REPRODUCED, INCONCLUSIVE, INCONCLUSIVE, REPRODUCED, INCONCLUSIVE,
                                              INCONCLUSIVE, INCONCLUSIVE]
    measured = table.display.loc["1. Model size", "Measured (toy study, 95 % interval)"]
    assert measured.startswith("tiny_l − tiny_s: +50.0 ±")
    assert "| 3b. Data mixing (language)" in table.to_markdown()
