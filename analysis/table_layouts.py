"""The table definitions: one layout function per paper table (and the cost tables), and their registry.

Each function takes the tidy frame of `analysis.collect.collect` (or `collect_wandb_csv`, or
`analysis.reference.reference_frame`) and returns an `analysis.table_render.Table`. Rows and columns come
from the runs present (the tiny CPU sizes get their own columns), so a toy study gets Table 3/4-style
tables from tiny runs. Several runs landing in one cell (repeats, or the same config in several sweeps)
are averaged, and a note says so. Where the run records keep per-question outcomes (the synthetic
benchmarks), a score is shown with its 95 % interval (`27.0 ± 3.1`, bootstrap over questions, and over
runs where a cell has several: analysis/intervals.py). A checkpoint evaluated without training here
(`python -m lmm.eval +checkpoint=...`) is a measured row too: a LLaVA as `LLaVA-<size>` (its name added
when a trained run would share the label), a bare LLM as a base-LLM row of Table 5; it never enters Table
4 or the cost tables (no training here).

`TABLES` is the registry: id → `TableSpec` (the layout function, the benchmark(s) it shows by default, the
paper's sweep, the layout in words). `reference=True` in a layout adds the paper's values beside the
measured ones (analysis/table_reference.py); `reported_table` builds the paper's own tables from the reference
records with these layouts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from analysis import intervals
from analysis.collect import runs_view
from analysis.reference import baseline_rows, reference_frame
from analysis.table_reference import add_baselines, with_reference
from analysis.table_render import (
    DASH,
    Table,
    _image,
    _mark,
    _missing,
    fmt_params_b,
    fmt_score,
    fmt_score_std,
    fmt_small,
)
from lmm.tuning import METHOD_ORDER, tuning_method
from lmm.units import COST_UNIT

LLAVA_BENCH_COLUMNS = {"complex": "Reasoning", "reasoning": "Reasoning", "conv": "Conversation",
                       "conversation": "Conversation", "detail": "Detail", "overall": "Overall"}
MMVET_COLUMNS = {"rec": "Rec", "ocr": "OCR", "know": "Knowledge", "gen": "Generation", "spat": "Spatial",
                 "math": "Math", "overall": "Total"}
MMBENCH_COLUMNS = {"overall": "Overall", "LR": "LR", "AR": "AR", "RR": "RR", "FP-S": "FP-S", "FP-C": "FP-C",
                   "CP": "CP"}
TABLE5_BENCHMARKS = {"llava_bench": "LLaVA-Bench", "mmvet": "MM-Vet", "vicuna80": "Vicuna-80", "mmlu": "MMLU"}
# The toy study's Table 5: the synthetic images' score beside its text-only split's (the language score).
TOY_TABLE5_BENCHMARKS = {"synthetic": "Synthetic (images)", "synthetic_text": "Synthetic (text only)"}
TABLE4_ROWS = ("Performance ↑", "Time (GPU-hours per node) ↓", "# Trainable Parameters (B) ↓")


# -- selecting runs and their scores ----------------------------------------------------------------


def select(frame: pd.DataFrame, sweep: str | Sequence[str] | None = None, method: str | None = None) -> pd.DataFrame:
    """The rows of some sweeps and one tuning method (None = all)."""
    if sweep is not None:
        frame = frame[frame["sweep"].isin([sweep] if isinstance(sweep, str) else list(sweep))]
    if method is not None:
        frame = frame[frame["method"] == method]
    return frame


def _key(frame: pd.DataFrame) -> pd.Series:
    return frame["source"].astype(str) + ":" + frame["sweep"].astype(str) + ":" + frame["run_id"].astype(str)


def _runs_for(frame: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """One row per run that asked for (eval.benchmarks) or has a score of any of `benchmarks`."""
    scored = set(_key(frame[frame["benchmark"].isin(benchmarks)]))
    runs = runs_view(frame)
    runs = runs.assign(_key=_key(runs))
    asked = runs["requested"].fillna("").map(lambda s: bool(set(s.split(",")) & set(benchmarks)))
    return runs[asked | runs["_key"].isin(scored)].reset_index(drop=True)


def _scores(frame: pd.DataFrame, benchmark: str, beam: int) -> dict[str, dict[str, float]]:
    """run key → {metric: score, "_std": std of the overall}."""
    rows = frame[(frame["benchmark"] == benchmark) & (frame["beam"] == beam)]
    out: dict[str, dict[str, float]] = {}
    for key, metric, score, std in zip(_key(rows), rows["metric"], rows["score"], rows["std"]):
        out.setdefault(key, {})[metric] = score
        if metric == "overall" and not _missing(std):
            out[key]["_std"] = std
    return out


QUALIFIERS: dict[str, Callable[[pd.Series], str]] = {
    "llm": lambda r: r["llm"] or "",
    "image": lambda r: "" if _missing(r["image_size"]) else f"{int(r['image_size'])}px",
    "mixing": lambda r: "data mixing" if r["mixing"] else "",
    "tuning": lambda r: r["tuning_label"],
    "variant": lambda r: r["variant"] or "",
    "checkpoint": lambda r: r["checkpoint_name"] or "",
}


def _labels(runs: pd.DataFrame, base: Callable[[pd.Series], str], always: Sequence[str] = (),
            ambiguous: Sequence[str] = ("llm", "image", "mixing", "tuning", "variant", "checkpoint"),
            scope: Callable[[pd.Series], str] = lambda r: "") -> pd.Series:
    """Row labels: `base` plus the `always` qualifiers, plus those `ambiguous` qualifiers whose values
    differ among runs that would otherwise share a label within the same `scope` (so different configs
    never merge silently)."""
    if runs.empty:
        return pd.Series([], dtype=object)
    first = runs.apply(lambda r: (base(r), tuple(QUALIFIERS[q](r) for q in always), scope(r)), axis=1)
    quals = {q: runs.apply(QUALIFIERS[q], axis=1) for q in ambiguous}
    labels = []
    for i in range(len(runs)):
        same = first == first.iloc[i]
        parts = [p for p in first.iloc[i][1] if p]
        parts += [quals[q].iloc[i] for q in ambiguous if quals[q][same].nunique() > 1 and quals[q].iloc[i]]
        labels.append(f"{first.iloc[i][0]} ({', '.join(parts)})" if parts else first.iloc[i][0])
    return pd.Series(labels, index=runs.index)


def _llava(row: pd.Series) -> str:
    return f"LLaVA-{row['size']}"


def _order(runs: pd.DataFrame, *extra: str) -> pd.DataFrame:
    keys = ["size_b", "model", *extra]
    return runs.sort_values(keys, kind="stable", na_position="last")


def _average(rows: list[tuple[tuple, dict]], index_names: Sequence[str],
             columns: Sequence) -> tuple[pd.DataFrame, list[str]]:
    """Rows keyed by label (in first-seen order) → mean of the values of runs sharing a label."""
    grouped: dict[tuple, list[dict]] = {}
    for key, values in rows:
        grouped.setdefault(key, []).append(values)
    data, notes = [], []
    for key, group in grouped.items():
        merged = {}
        for column in columns:
            present = [g[column] for g in group if column in g and not _missing(g[column])]
            merged[column] = sum(present) / len(present) if present else float("nan")
        data.append(merged)
        if len(group) > 1:
            notes.append(f"{' / '.join(map(str, key))}: mean of {len(group)} runs")
    index = pd.MultiIndex.from_tuples(list(grouped), names=index_names) if len(index_names) > 1 else \
        pd.Index([k[0] for k in grouped], name=index_names[0])
    return pd.DataFrame(data, index=index, columns=list(columns)), notes


def _category_columns(frame: pd.DataFrame, benchmark: str, known: dict[str, str], native: str) -> dict[str, str]:
    """The paper's columns for its benchmark (`native`), then any other category the runs report; for
    another benchmark (e.g. `synthetic` in a toy study), that benchmark's own categories."""
    present = frame.loc[frame["benchmark"] == benchmark, "metric"].dropna().unique()
    columns = dict(known) if benchmark == native else {"overall": known["overall"]}
    seen = set(known.values())
    for metric in present:
        if metric not in known and metric not in seen:
            columns[metric] = metric
            seen.add(metric)
    overall = columns.pop("overall")  # where the paper has it: last (Tables 1, 2) or first (3b)
    return {**columns, "overall": overall} if list(known)[-1] == "overall" else {"overall": overall, **columns}


def _fill(values: pd.DataFrame, formatter=fmt_score) -> pd.DataFrame:
    return values.map(formatter) if not values.empty else values.astype(object)


def _averaged_note(notes: list[str]) -> list[str]:
    return [f"Averaged cells: {'; '.join(notes)}."] if notes else []


# -- Table 1: LLaVA-Bench by category, beam 1 and 5 -------------------------------------------------


def table1(frame: pd.DataFrame, *, sweep=None, method: str | None = None, beams: Sequence[int] = (1, 5),
           benchmark: str = "llava_bench", reference: bool = False) -> Table:
    """Table 1: LLaVA-Bench (In-the-Wild) by category (reasoning, conversation, detail, overall) at beam
    sizes 1 and 5, one row per model."""
    data = select(frame, sweep, method)
    runs = _order(_runs_for(data, [benchmark]))
    labels = _labels(runs, _llava)
    # LLaVA's short category names (conv, detail, complex) and the paper's long ones share a column
    spec = _category_columns(data, benchmark, LLAVA_BENCH_COLUMNS, "llava_bench")
    scores = {beam: _scores(data, benchmark, beam) for beam in beams}
    rows = []
    for (_, run), label in zip(runs.iterrows(), labels):
        for beam in beams:  # each model's beams together, as in the paper
            got = scores[beam].get(run["_key"], {})
            name = label[:-1] + f", beam={beam})" if label.endswith(")") else f"{label} (beam={beam})"
            rows.append(((name,), {spec[k]: v for k, v in got.items() if k in spec}))
    values, notes = _average(rows, ["Models"], list(dict.fromkeys(spec.values())))
    name = "LLaVA-Bench (In-the-Wild)" if benchmark == "llava_bench" else benchmark
    table = Table("1", f"{name} by category, beam search sizes {', '.join(map(str, beams))}.", values,
                  _fill(values), _averaged_note(notes))
    return _with_reference(table, "1", reference)


# -- Table 2: MM-Vet by capability ------------------------------------------------------------------


def table2(frame: pd.DataFrame, *, sweep=None, method: str | None = None, beam: int = 1,
           benchmark: str = "mmvet", reference: bool = False) -> Table:
    """Table 2: MM-Vet by capability (rec, ocr, know, gen, spat, math) and total ± std."""
    data = select(frame, sweep, method)
    runs = _order(_runs_for(data, [benchmark]), "llm", "mixing")
    labels = _labels(runs, _llava, always=("llm", "mixing"), ambiguous=("image", "tuning", "variant", "checkpoint"))
    spec = _category_columns(data, benchmark, MMVET_COLUMNS, "mmvet")
    scores = _scores(data, benchmark, beam)
    rows = []
    for (_, run), label in zip(runs.iterrows(), labels):
        got = scores.get(run["_key"], {})
        values = {spec[k]: v for k, v in got.items() if k in spec}
        values["_std"] = got.get("_std", float("nan"))
        rows.append(((label,), values))
    values, notes = _average(rows, ["Model"], [*spec.values(), "_std"])
    display = _mmvet_display(values)
    name = "MM-Vet by capability" if benchmark == "mmvet" else f"{benchmark} by category"
    table = Table("2", f"{name}, total ± std over grading runs (beam {beam}).",
                  values.drop(columns="_std"), display, _averaged_note(notes))
    return _with_reference(table, "2", reference)


def _mmvet_display(values: pd.DataFrame) -> pd.DataFrame:
    display = _fill(values.drop(columns="_std"))
    if "Total" in display.columns:
        display["Total"] = [fmt_score_std(v, s) for v, s in zip(values["Total"], values["_std"])]
    return display


# -- Table 3: scaling factors (a) LLaVA-Bench by size × image size × mixing, (b) MMBench --------------


def size_column(row: pd.Series) -> str:
    """`33B`, `13B (LLaMA-2)`; an evaluated checkpoint keeps its own column: `13B (llava-1.5-13b-hf)`."""
    qualifiers = [q for q in (row["llm"], row.get("checkpoint_name")) if isinstance(q, str) and q]
    return f"{row['size']} ({', '.join(qualifiers)})" if qualifiers else row["size"]


def trained_here(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs trained by this project (not evaluated checkpoints): those with a training cost."""
    return runs[runs["checkpoint"].fillna("") == ""] if "checkpoint" in runs else runs


def table3a(frame: pd.DataFrame, *, sweep=None, method: str | None = "full", beam: int = 1,
            benchmark: str = "llava_bench", reference: bool = False) -> Table:
    """Table 3(a): overall score by LLM size (columns, the sizes present) × image size × data mixing."""
    data = select(frame, sweep, method)
    runs = _order(_runs_for(data, [benchmark]))
    scores = _scores(data, benchmark, beam)
    columns = list(dict.fromkeys(runs.apply(size_column, axis=1))) if len(runs) else []
    cells: dict[tuple, dict[str, list[float]]] = {}
    keys: dict[tuple, list[str]] = {}
    for _, run in runs.sort_values(["image_size", "mixing"], kind="stable").iterrows():
        row_key = (_image(run["image_size"]), _mark(run["mixing"]))
        row = cells.setdefault(row_key, {})
        value = scores.get(run["_key"], {}).get("overall")
        row.setdefault(size_column(run), [])
        if not _missing(value):
            row[size_column(run)].append(value)
            keys.setdefault((row_key, size_column(run)), []).append(run["_key"])
    data_rows, notes = [], []
    for key, row in cells.items():
        data_rows.append({c: (sum(v) / len(v) if v else float("nan")) for c, v in row.items()})
        notes += [f"{key[0]} {key[1]} {c}: mean of {len(v)} runs" for c, v in row.items() if len(v) > 1]
    index = pd.MultiIndex.from_tuples(list(cells), names=["Image Size", "Data Mixing"])
    values = pd.DataFrame(data_rows, index=index, columns=columns)
    estimates = _interval_cells(keys, data, benchmark, beam)
    table = Table("3a", f"Scaling model size, image resolution and data mixing: {benchmark} overall "
                        f"(beam {beam}{', ' + method + ' fine-tuning' if method else ''}).",
                  values, _with_intervals(_fill(values), estimates), [*_interval_note(estimates),
                                                                     *_averaged_note(notes)])
    return _with_reference(table, "3a", reference)


def table3b(frame: pd.DataFrame, *, sweep=None, method: str | None = "full", beam: int = 1,
            benchmark: str = "mmbench", reference: bool = False) -> Table:
    """Table 3(b): MMBench by ability (LR, AR, RR, FP-S, FP-C, CP), one row per checkpoint."""
    data = select(frame, sweep, method)
    runs = _order(_runs_for(data, [benchmark]), "image_size", "mixing")
    labels = _labels(runs, _llava, ambiguous=("llm", "tuning", "variant", "checkpoint"))
    spec = _category_columns(data, benchmark, MMBENCH_COLUMNS, "mmbench")
    scores = _scores(data, benchmark, beam)
    rows, keys = [], {}
    for (_, run), label in zip(runs.iterrows(), labels):
        got = scores.get(run["_key"], {})
        row_key = (label, _image(run["image_size"]), _mark(run["mixing"]))
        rows.append((row_key, {spec[k]: v for k, v in got.items() if k in spec}))
        if "overall" in got:
            keys.setdefault((row_key, spec["overall"]), []).append(run["_key"])
    values, notes = _average(rows, ["Checkpoint", "Image Size", "Data Mixing"], list(spec.values()))
    name = "MMBench by ability" if benchmark == "mmbench" else f"{benchmark} by category"
    estimates = _interval_cells(keys, data, benchmark, beam)
    table = Table("3b", f"{name} (beam {beam}).", values, _with_intervals(_fill(values), estimates),
                  [*_interval_note(estimates), *(["Categories: without intervals."] if estimates else []),
                   *_averaged_note(notes)])
    return _with_reference(table, "3b", reference)


# -- Table 4: performance vs cost by size × tuning method --------------------------------------------


def _table4_order(runs: pd.DataFrame) -> pd.DataFrame:
    """Per size: adapters by rank (quantized bases first, then the registry's order), full fine-tuning last."""
    methods = runs["method"].map(tuning_method)
    runs = runs.assign(_full=~methods.map(lambda m: m.adapter).astype(bool), _rank=runs["rank"].fillna(0),
                       _unquantized=~methods.map(lambda m: m.quantized).astype(bool),
                       _method=runs["method"].map(METHOD_ORDER))
    return runs.sort_values(["size_b", "model", "_full", "_rank", "_unquantized", "_method", "variant"],
                            kind="stable")


def _tuning_column(run) -> str:
    """A run's Table 4 column label: `Full`, or the method with its rank (`LoRA r64`, `DoRA r64`)."""
    method = tuning_method(run["method"])
    return run["tuning_label"] if method.adapter else method.label


def table4_setting(runs: pd.DataFrame) -> tuple | None:
    """The (image size, mixing) setting Table 4 shows when runs span several: the one with the most tuning
    methods (the paper's Table 4 compares methods at one setting), ties to the larger image, then no mixing."""
    settings = runs.assign(_image=runs["image_size"].fillna(-1), _mixing=runs["mixing"].fillna(False).astype(bool))
    counts = settings.groupby(["_image", "_mixing"])["tuning_label"].nunique()
    if len(counts) < 2:
        return None
    ranked = sorted(counts.items(), key=lambda item: (-item[1], -item[0][0], item[0][1]))
    return ranked[0][0]


def table4(frame: pd.DataFrame, *, sweep=None, method: str | None = None, beam: int = 1,
           benchmark: str = "llava_bench", reference: bool = False) -> Table:
    """Table 4: performance, GPU-hours per node (stage 2) and trainable parameters (B), one column per
    LLM size × tuning method (Full, LoRA r<k>, QLoRA r<k>, DoRA r<k>: lmm.tuning's labels), at one image size
    and mixing setting."""
    data = select(frame, sweep, method)
    runs = _table4_order(trained_here(runs_view(data)).assign(_key=lambda d: _key(d)))
    setting, setting_note = table4_setting(runs) if len(runs) else None, []
    if setting is not None:
        image, mixing = setting
        runs = runs[(runs["image_size"].fillna(-1) == image) & (runs["mixing"].fillna(False).astype(bool) == mixing)]
        setting_note = [f"At {_image(None if image < 0 else image)}, {'with' if mixing else 'no'} data mixing: "
                        "the setting with the most tuning methods; the other settings are in Table 3."]
    scores = _scores(data, benchmark, beam)
    tuning = _labels(runs, _tuning_column,
                     always=("variant",), ambiguous=("image", "mixing"), scope=size_column)
    cells: dict[tuple, list] = {}
    keys: dict[tuple, list[str]] = {}
    for (_, run), label in zip(runs.iterrows(), tuning):
        score = scores.get(run["_key"], {}).get("overall")
        cells.setdefault((size_column(run), label), []).append(
            (score, run["gpu_hours_per_node"], run["params_trainable"] / 1e9))
        if not _missing(score):
            keys.setdefault((TABLE4_ROWS[0], (size_column(run), label)), []).append(run["_key"])
    columns = pd.MultiIndex.from_tuples(list(cells), names=["LLM", "Tuning"])
    data_rows, notes = [[], [], []], []
    for key, group in cells.items():
        for i in range(3):
            present = [g[i] for g in group if not _missing(g[i])]
            data_rows[i].append(sum(present) / len(present) if present else float("nan"))
        if len(group) > 1:
            notes.append(f"{' '.join(key)}: mean of {len(group)} runs")
    values = pd.DataFrame(data_rows, index=pd.Index(TABLE4_ROWS, name=""), columns=columns)
    display = values.astype(object).copy()
    for row, formatter in zip(TABLE4_ROWS, (fmt_score, fmt_small, fmt_params_b)):
        display.loc[row] = [formatter(v) for v in values.loc[row]]
    estimates = _interval_cells(keys, data, benchmark, beam)
    display = _with_intervals(display, estimates)
    notes = [f"Performance: {benchmark} overall (beam {beam}). Time: stage 2's {COST_UNIT}.", *setting_note,
             *_interval_note(estimates), *_averaged_note(notes)]
    table = Table("4", "Performance vs compute cost by model size and tuning method.", values, display, notes)
    return _with_reference(table, "4", reference)


# -- Table 5: multimodal and language capabilities ---------------------------------------------------


def table5(frame: pd.DataFrame, *, sweep=None, method: str | None = "full", beam: int = 1,
           benchmarks: dict[str, str] | None = None, reference: bool = False) -> Table:
    """Table 5: multimodal (LLaVA-Bench, MM-Vet) and language (Vicuna-80, MMLU) overall scores."""
    benchmarks = benchmarks or TABLE5_BENCHMARKS
    data = select(frame, sweep, method)
    runs = _runs_for(data, list(benchmarks))
    runs = runs.assign(_llava_row=runs["checkpoint_kind"].fillna("") != "llm")
    runs = runs.sort_values(["size_b", "_llava_row", "model", "mixing"], kind="stable", na_position="last")
    labels = _labels(runs, lambda r: _llava(r) if r["_llava_row"] else base_llm_label(r),
                     ambiguous=("llm", "image", "tuning", "variant", "checkpoint"))
    scores = {b: _scores(data, b, beam) for b in benchmarks}
    rows, keys = [], {b: {} for b in benchmarks}
    for (_, run), label in zip(runs.iterrows(), labels):
        row_key = (label, _mark(run["mixing"]) if run["_llava_row"] else DASH)
        got = {name: scores[b].get(run["_key"], {}).get("overall") for b, name in benchmarks.items()}
        rows.append((row_key, got))
        for b, name in benchmarks.items():
            if not _missing(got[name]):
                keys[b].setdefault((row_key, name), []).append(run["_key"])
    values, notes = _average([(k, {c: v for c, v in d.items() if v is not None}) for k, d in rows],
                             ["Model", "Data Mix"], list(benchmarks.values()))
    estimates = {cell: e for b in benchmarks for cell, e in _interval_cells(keys[b], data, b, beam).items()}
    table = Table("5", f"Multimodal and language capabilities (overall scores, beam {beam}"
                       f"{', ' + method + ' fine-tuning' if method else ''}).", values,
                  _with_intervals(_fill(values), estimates), [*_interval_note(estimates), *_averaged_note(notes)])
    return _with_reference(table, "5", reference)


def base_llm_label(row: pd.Series) -> str:
    """A bare LLM's row in Table 5: the paper's name for its preset (Vicuna-13B, LLaMA-2-70B-Chat) when the
    command named one, else the checkpoint's own name."""
    preset = row.get("checkpoint_preset") or ""
    if preset:
        paper = baseline_rows("5")
        names = paper.loc[paper["model"] == preset, "row"].unique()
        if len(names):
            return str(names[0])
    return row.get("checkpoint_name") or str(row["model"])


# -- cost tables ------------------------------------------------------------------------------------


def cost_table(frame: pd.DataFrame, *, sweep=None) -> Table:
    """GPU-hours per node and $ per run: stage 1, stage 2 and total (stage 1 counted in full)."""
    runs = trained_here(runs_view(select(frame, sweep))).sort_values(["sweep", "size_b", "model", "method", "rank"],
                                                       kind="stable")
    stage0 = _has_stage0(runs)  # its columns only where a run's LLM came from stage 0
    rows = []
    for _, run in runs.iterrows():
        rows.append({
            "Sweep": run["sweep"], "Model": size_column(run),
            "Tuning": f"{run['tuning_label']} ({run['variant']})" if run["variant"] else run["tuning_label"],
            "GPUs": DASH if _missing(run["gpus"]) else f"{int(run['gpus'])} × {run['gpu_type']}",
            "Stage 0 (GPU-h/node)": run["stage0_gpu_hours_per_node"],
            "Stage 1 (GPU-h/node)": run["stage1_gpu_hours_per_node"],
            "Stage 2 (GPU-h/node)": run["gpu_hours_per_node"],
            "Total (GPU-h/node)": run["total_gpu_hours_per_node"],
            "Stage 0 ($)": run["stage0_usd"],
            "Stage 1 ($)": run["stage1_usd"], "Stage 2 ($)": run["usd"], "Total ($)": run["total_usd"],
        })
    columns = ["Sweep", "Model", "Tuning", "GPUs", *(["Stage 0 (GPU-h/node)"] if stage0 else []),
               "Stage 1 (GPU-h/node)", "Stage 2 (GPU-h/node)", "Total (GPU-h/node)",
               *(["Stage 0 ($)"] if stage0 else []), "Stage 1 ($)", "Stage 2 ($)", "Total ($)"]
    values = pd.DataFrame(rows, columns=columns, index=pd.Index(runs["run_id"].tolist(), name="Run"))
    display = values.copy().astype(object)
    for column in columns[4:]:
        display[column] = [fmt_small(v) for v in values[column]]
    price = runs["usd_per_gpu_hour_per_node"].dropna().unique()
    notes = [(f"{COST_UNIT} (the paper's unit); $ = GPU-hours per node × "
              f"{', '.join(f'${p:g}' for p in price) or 'the cluster price'} per node-hour. A shared stage 1 "
              "is counted in full for every run that uses it (once per sweep in the sweep table).")]
    if stage0:
        notes.append("Stage 0 (the LLM instruction-tuned from its base, shared by every run on it) is shown beside "
                     "and left out of each run's total; the sweep table counts it once.")
    return Table("cost", "Compute cost per run.", values, display, notes)


def _has_stage0(runs: pd.DataFrame) -> bool:
    """Whether some run's LLM came from stage 0 (the cost tables show its columns only then)."""
    return bool(runs["stage0_run_id"].notna().any())


def sweep_cost_table(frame: pd.DataFrame, *, sweep=None) -> Table:
    """GPU-hours per node and $ per sweep, each shared stage-1 run counted once per sweep, and overall."""
    runs = trained_here(runs_view(select(frame, sweep)))
    stage0 = _has_stage0(runs)

    def summarise(group: pd.DataFrame) -> dict:
        made = group.dropna(subset=["stage0_run_id"]).drop_duplicates("stage0_run_id")
        stage1 = group.drop_duplicates("stage1_run_id")
        s0_h, s0_d = made["stage0_gpu_hours_per_node"].sum(min_count=1), made["stage0_usd"].sum(min_count=1)
        s1_h, s2_h = stage1["stage1_gpu_hours_per_node"].sum(min_count=1), group["gpu_hours_per_node"].sum(min_count=1)
        s1_d, s2_d = stage1["stage1_usd"].sum(min_count=1), group["usd"].sum(min_count=1)
        return {"Runs": len(group), "Stage-0 runs": made["stage0_run_id"].nunique(),
                "Stage-1 runs": stage1["stage1_run_id"].nunique(),
                "Stage 0 (GPU-h/node)": s0_h, "Stage 1 (GPU-h/node)": s1_h, "Stage 2 (GPU-h/node)": s2_h,
                "Total (GPU-h/node)": pd.Series([s0_h, s1_h, s2_h]).sum(min_count=1),
                "Stage 0 ($)": s0_d, "Stage 1 ($)": s1_d, "Stage 2 ($)": s2_d,
                "Total ($)": pd.Series([s0_d, s1_d, s2_d]).sum(min_count=1)}

    rows = {name: summarise(group) for name, group in runs.groupby("sweep", sort=True)}
    if len(rows) > 1:
        rows["all sweeps"] = summarise(runs)
    values = pd.DataFrame.from_dict(rows, orient="index")
    if not stage0:  # no run's LLM came from stage 0: the table as before stage 0 existed
        values = values.drop(columns=["Stage-0 runs", "Stage 0 (GPU-h/node)", "Stage 0 ($)"])
    values.index.name = "Sweep"
    display = values.copy().astype(object)
    for column in values.columns[values.columns.get_loc("Stage-1 runs") + 1:]:
        display[column] = [fmt_small(v) for v in values[column]]
    title = "Compute cost per sweep (each stage-0 and stage-1 run counted once)." if stage0 else \
        "Compute cost per sweep (each stage-1 run counted once)."
    return Table("sweep-cost", title, values, display, [f"{COST_UNIT}; $ at the runs' cluster price."])




# -- intervals ---------------------------------------------------------------------------------------


def _interval_cells(runs_by_cell: dict, frame: pd.DataFrame, benchmark: str, beam: int) -> dict:
    """Cell → its 95 % interval (an Estimate) for the cells all of whose runs kept per-question outcomes."""
    keys = [k for ks in runs_by_cell.values() for k in ks]
    if not keys:
        return {}
    runs = runs_view(frame).assign(_key=lambda d: _key(d))
    by_run = intervals.outcomes(runs[runs["_key"].isin(keys)], benchmark, beam)
    out = {}
    for cell, cell_keys in runs_by_cell.items():
        arrays = intervals.aligned(by_run, list(cell_keys))
        if arrays is not None:
            out[cell] = intervals.score(arrays)
    return out


def _with_intervals(display: pd.DataFrame, estimates: dict) -> pd.DataFrame:
    """The display with `value ± half-width` in every cell (row, column) that has an interval."""
    display = display.copy()
    for (row, column), estimate in estimates.items():
        if row in display.index and column in display.columns:
            display.at[row, column] = estimate.format()
    return display


def _interval_note(estimates: dict) -> list[str]:
    return ([f"± is the half-width of a 95 % interval (bootstrap over questions, {intervals.N_BOOT} replicates, "
             f"seed {intervals.SEED}; over runs too where a cell has several)."] if estimates else [])


# -- reported values beside measured ones ------------------------------------------------------------


def _with_reference(table: Table, key: str, reference: bool) -> Table:
    return with_reference(table, reported_table(key)) if reference else table


# -- the registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """One table: its id, the layout function that builds it, the benchmark(s) it shows by default, the
    paper's sweep that fills it (conf/experiment/tableN/*.yaml set `sweep: tableN`) and its layout in words."""

    key: str
    layout: Callable[..., Table]
    benchmark: str | tuple[str, ...]
    paper_sweep: str
    description: str


TABLES: dict[str, TableSpec] = {spec.key: spec for spec in (
    TableSpec("1", table1, "llava_bench", "table1", "rows: models × beam; columns: LLaVA-Bench categories"),
    TableSpec("2", table2, "mmvet", "table2", "rows: models; columns: MM-Vet capabilities, total ± std"),
    TableSpec("3a", table3a, "llava_bench", "table3",
              "rows: image size × data mixing; columns: LLM sizes (full fine-tuning)"),
    TableSpec("3b", table3b, "mmbench", "table3", "rows: checkpoint × image size × mixing; columns: abilities"),
    TableSpec("4", table4, "llava_bench", "table4",
              "rows: performance, GPU-hours per node, trainable parameters; columns: size × tuning method, "
              "at one image size and mixing setting"),
    TableSpec("5", table5, tuple(TABLE5_BENCHMARKS), "table5",
              "rows: base LLMs and LLaVA × mixing; columns: multimodal and language benchmarks"),
)}
TABLE_FUNCTIONS: dict[str, Callable[..., Table]] = {key: spec.layout for key, spec in TABLES.items()}
PAPER_SWEEPS = {key: spec.paper_sweep for key, spec in TABLES.items()}


def reported_table(key: str) -> Table:
    """The paper's table: the table function on the reference records of its sweep, plus the rows of
    other systems (Bard, Bing Chat, MM-Vet's quoted models, the base LLMs of Table 5)."""
    table = TABLES[key].layout(reference_frame(), sweep=TABLES[key].paper_sweep)
    if key == "4":  # the LoRA hyper-parameter runs of Section 3.2 are text, not columns of Table 4
        keep = [c for c in table.values.columns if "α" not in c[1] and "lr " not in c[1]]
        table = Table(table.key, table.title, table.values[keep], table.display[keep], table.notes)
    baseline = baseline_rows(key)
    if baseline.empty:
        return table
    names = {"1": LLAVA_BENCH_COLUMNS, "2": MMVET_COLUMNS, "5": TABLE5_BENCHMARKS}[key]
    return add_baselines(table, key, baseline, names)
