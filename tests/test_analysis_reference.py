"""Given records carrying the paper's reported numbers, each table function reproduces the paper's table.

The records are synthetic: built from `analysis/reference/paper_tables.csv` through the real record
builder on the experiment configs (analysis.reference). The expected tables below are typed from the
paper (arXiv 2309.09958) independently of that CSV, so a transcription slip in either shows up here.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis import tables
from analysis.collect import runs_view
from analysis.reference import REFERENCE_CSV, load_reference, reference_frame, reference_records
from lmm.config import CONF_DIR

NAN = math.nan


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    return reference_frame()


def assert_values(table: tables.Table, index: list, columns: list, rows: list[list[float]]) -> None:
    assert list(table.values.index) == index
    assert list(table.values.columns) == columns
    expected = pd.DataFrame(rows, index=table.values.index, columns=table.values.columns, dtype=float)
    pd.testing.assert_frame_equal(table.values.astype(float), expected, check_names=False)


def test_reference_csv_names_its_source_and_real_experiments(paper):
    head = "".join(REFERENCE_CSV.read_text().splitlines()[:2])
    assert "arXiv 2309.09958" in head
    ref = load_reference()
    assert ref["source"].str.startswith("arXiv 2309.09958").all()
    llava = ref[(ref["system"] == "LLaVA") & (ref["experiment"] != "")]
    by_experiment = {e: r for r in reference_records() for e in r["_experiments"]}
    assert set(by_experiment) == set(llava["experiment"])
    for experiment, rows in llava.groupby("experiment"):
        assert (CONF_DIR / "experiment" / f"{experiment}.yaml").exists(), experiment
        # the CSV's readable columns agree with the composed experiment config
        record, row = by_experiment[experiment], rows.iloc[0]
        hp = record["hparams"]
        assert record["choices"]["model"] == row["model"] and hp["image_size"] == row["image_size"]
        assert (hp["mixing_ratio"] > 0) == bool(row["mixing"]) and hp["method"] == row["method"]
        assert hp["rank"] == (None if row["method"] == "full" else row["rank"])


def test_reference_records_have_the_run_record_schema(paper):
    records = reference_records()
    assert {r["sweep"] for r in records} == {"table1", "table2", "table3", "table4", "table5"}
    one = next(r for r in records if r["run_id"].startswith("33b-clip_l14_336-linear-qlora64"))
    assert one["stages"]["finetune"]["gpu_hours_per_node"] == pytest.approx(4.68)
    assert one["stages"]["finetune"]["params_trainable"] == pytest.approx(0.49e9)
    assert one["eval"]["llava_bench"]["beam1"]["overall"] == 71.6
    assert len(runs_view(paper)) == len(records)


def test_table1(paper):
    t = tables.table1(paper, sweep="table1")
    assert_values(t, [f"LLaVA-{s}B (beam={b})" for s in (13, 33, 65) for b in (1, 5)],
                  ["Reasoning", "Conversation", "Detail", "Overall"],
                  [[81.7, 64.3, 55.9, 70.1], [84.3, 68.4, 59.9, 73.5], [82.9, 70.2, 62.6, 73.9],
                   [83.5, 72.6, 61.9, 74.8], [87.3, 63.8, 62.3, 74.2], [88.7, 59.4, 65.7, 74.4]])
    full = tables.reported_table("1")
    assert list(full.display.index[:2]) == ["Bard-0718", "Bing-Chat-0629"]
    assert list(full.display.loc["Bing-Chat-0629"]) == ["90.1", "59.6", "52.2", "71.5"]


def test_table2(paper):
    t = tables.table2(paper, sweep="table2")
    assert_values(t, ["LLaVA-13B (LLaMA-2)", "LLaVA-33B", "LLaVA-33B (data mixing)", "LLaVA-65B",
                      "LLaVA-65B (data mixing)"],
                  ["Rec", "OCR", "Knowledge", "Generation", "Spatial", "Math", "Total"],
                  [[38.4, 21.0, 26.3, 28.8, 28.0, 7.7, 32.6], [38.5, 25.0, 26.2, 28.2, 29.2, 7.7, 32.9],
                   [37.7, 27.1, 26.2, 28.6, 28.1, 11.5, 34.1], [39.2, 28.2, 26.2, 28.3, 33.0, 15.0, 35.5],
                   [41.8, 27.9, 30.4, 32.3, 30.5, 7.3, 36.4]])
    assert list(t.display["Total"]) == ["32.6±0.1", "32.9±0.3", "34.1±0.3", "35.5±0.3", "36.4±0.2"]
    full = tables.reported_table("2")
    assert len(full.display) == 15 + 5 and full.display.index[0] == "LLaMA-Adapter v2-7B †"
    assert full.display.loc["MM-ReAct-GPT-4 †", "Total"] == "44.6±0.2"
    assert full.display.loc["MM-ReAct-GPT-4 †", "OCR"] == "65.7"
    assert full.display.loc["LLaVA-13B (LLaMA-2) †", "Total"] == "32.9±0.1"  # MM-Vet's own run of it
    assert full.display.loc["LLaVA-13B (LLaMA-2)", "Total"] == "32.6±0.1"  # the paper's run


def test_table3a(paper):
    t = tables.table3a(paper, sweep="table3")
    assert_values(t, [("224×224", "×"), ("336×336", "×"), ("336×336", "✓")], ["7B", "13B", "33B", "65B"],
                  [[63.6, 67.1, 69.3, 70.3], [NAN, 70.1, 72.0, 72.3], [NAN, NAN, 73.9, 74.2]])
    assert t.display.loc[("336×336", "✓"), "7B"] == "–" and t.display.loc[("336×336", "✓"), "13B"] == "–"


def test_table3b(paper):
    t = tables.table3b(paper, sweep="table3")
    assert_values(t, [("LLaVA-7B", "224×224", "×"), ("LLaVA-33B", "336×336", "✓"), ("LLaVA-65B", "336×336", "✓")],
                  ["Overall", "LR", "AR", "RR", "FP-S", "FP-C", "CP"],
                  [[36.2, 15.9, 53.6, 28.6, 41.8, 20.0, 40.4], [55.7, 23.3, 74.0, 46.0, 51.5, 50.4, 67.2],
                   [56.0, 24.4, 72.3, 49.3, 50.5, 51.2, 68.1]])


def test_table4(paper):
    t = tables.reported_table("4")
    columns = [("7B", "Full"), ("13B", "LoRA r64"), ("13B", "Full"), ("33B", "LoRA r8"), ("33B", "QLoRA r64"),
               ("33B", "LoRA r64"), ("33B", "Full"), ("65B", "LoRA r64"), ("65B", "Full")]
    assert_values(t, list(tables.TABLE4_ROWS), columns,
                  [[65.9, 70.1, 70.1, 70.3, 71.6, 71.8, 72.0, 72.2, 72.3],
                   [1.3, 2.1, 2.3, 4.62, 4.68, 4.79, 5.80, 9.17, 13.50],
                   [7, 0.26, 13, 0.06, 0.49, 0.49, 33, 0.81, 65]])
    assert list(t.display.iloc[2]) == ["7", "0.26", "13", "0.06", "0.49", "0.49", "33", "0.81", "65"]
    # the whole sweep also has the Section 3.2 LoRA runs (alpha 16, lr 2e-5), labelled as such
    whole = tables.table4(paper, sweep="table4")
    extra = [c for c in whole.values.columns if c not in columns]
    assert extra == [("33B", "LoRA r64 (α16, lr 2e-05)"), ("33B", "LoRA r128 (α16, lr 2e-05)"),
                     ("33B", "LoRA r512 (α16, lr 2e-05)")]
    assert list(whole.values.loc[tables.TABLE4_ROWS[0], extra]) == [65.5, 66.1, 68.1]
    assert list(whole.display.loc[tables.TABLE4_ROWS[1], extra]) == ["–", "–", "–"]  # not reported


def test_table5(paper):
    t = tables.table5(paper, sweep="table5")
    assert_values(t, [("LLaVA-13B", "×"), ("LLaVA-33B", "×"), ("LLaVA-33B", "✓"), ("LLaVA-65B", "×"),
                      ("LLaVA-65B", "✓"), ("LLaVA-70B", "✓")], ["LLaVA-Bench", "MM-Vet", "Vicuna-80", "MMLU"],
                  [[70.1, 32.5, 79.6, 55.0], [72.0, 32.9, 85.3, 56.1], [73.9, 34.1, 80.3, 58.6],
                   [72.3, 35.5, 84.5, 62.6], [74.2, 36.4, 82.6, 62.2], [69.8, 35.4, 81.3, 65.1]])
    full = tables.reported_table("5")
    assert [i[0] for i in full.display.index] == [
        "Vicuna-13B", "LLaVA-13B", "Vicuna-33B", "LLaVA-33B", "LLaVA-33B", "Vicuna-65B", "LLaVA-65B", "LLaVA-65B",
        "LLaMA-2-70B-Chat", "LLaVA-70B"]
    assert list(full.display.loc[("Vicuna-65B", "–")]) == ["–", "–", "83.2", "62.5"]


@pytest.mark.parametrize("key", ["1", "2", "3a", "3b", "4", "5"])
def test_measured_equal_reported_side_by_side(paper, key):
    """The paper's records as 'measured': every measured cell equals its '(paper)' neighbour."""
    measured = tables.TABLE_FUNCTIONS[key](paper, sweep=tables.PAPER_SWEEPS[key])
    if key == "4":
        measured = tables.reported_table("4")
    both = tables.with_reference(measured, tables.reported_table(key))
    for column in measured.display.columns:
        rows = list(measured.display.index)
        assert list(both.display.loc[rows, column]) == list(both.display.loc[rows, tables._paper_column(column)])
    for fmt in ("md", "latex", "html"):
        text = both.render(fmt)
        assert "(paper)" in text and "2309.09958" in text
