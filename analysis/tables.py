"""The paper's tables from run records: one function per table, in its layout, as Markdown, LaTeX or HTML.

Each function takes the tidy frame of `analysis.collect.collect` (or `collect_wandb_csv`, or
`analysis.reference.reference_frame`) and returns a `Table`: `values` (numbers, NaN where no run),
`display` (the strings shown; "–" where no run, never a made-up number) and notes. Rows and columns come
from the runs present (the tiny CPU sizes get their own columns), so a toy study gets Table 3/4-style
tables from tiny runs. Several runs landing in one cell (repeats, or the same config in several sweeps)
are averaged, and a note says so. A checkpoint evaluated without training here (`python -m lmm.eval
+checkpoint=...`) is a measured row too: a LLaVA as `LLaVA-<size>` (its name added when a trained run would
share the label), a bare LLM as a base-LLM row of Table 5 (the paper's name for its `model=` preset, e.g.
"Vicuna-13B", else the checkpoint's own name); it never enters Table 4 or the cost tables (no training
here). `reference=True` adds the paper's reported values beside the measured
ones ("<column> (paper)", and the rows of other systems such as Bard or Vicuna).

    python -m analysis.tables --runs runs --table 4 --format md [--reference] [--sweep table4]
    python -m analysis.tables --runs runs --table all --benchmark synthetic   # a toy study on tiny runs
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from analysis.collect import collect, collect_wandb_csv, runs_view
from analysis.reference import baseline_rows, reference_frame
from lmm.tuning import METHOD_ORDER, tuning_method

DASH = "–"
CHECK, CROSS = "✓", "×"
QUOTED_MARK = "†"
SOURCE_NOTE = "Reported values: the paper (Lu et al., arXiv 2309.09958)."
# The paper's sweep of each table (conf/experiment/tableN/*.yaml set `sweep: tableN`).
PAPER_SWEEPS = {"1": "table1", "2": "table2", "3a": "table3", "3b": "table3", "4": "table4", "5": "table5"}

LLAVA_BENCH_COLUMNS = {"complex": "Reasoning", "reasoning": "Reasoning", "conv": "Conversation",
                       "conversation": "Conversation", "detail": "Detail", "overall": "Overall"}
MMVET_COLUMNS = {"rec": "Rec", "ocr": "OCR", "know": "Knowledge", "gen": "Generation", "spat": "Spatial",
                 "math": "Math", "overall": "Total"}
MMBENCH_COLUMNS = {"overall": "Overall", "LR": "LR", "AR": "AR", "RR": "RR", "FP-S": "FP-S", "FP-C": "FP-C",
                   "CP": "CP"}
TABLE5_BENCHMARKS = {"llava_bench": "LLaVA-Bench", "mmvet": "MM-Vet", "vicuna80": "Vicuna-80", "mmlu": "MMLU"}
TABLE4_ROWS = ("Performance ↑", "Time (GPU-hours per node) ↓", "# Trainable Parameters (B) ↓")


# -- formatting -------------------------------------------------------------------------------------


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt_score(value) -> str:
    return DASH if _missing(value) else f"{value:.1f}"


def fmt_small(value, decimals: int = 2) -> str:
    """Fixed decimals, or two significant digits for the tiny values of CPU runs (never a false 0.00)."""
    if _missing(value):
        return DASH
    if value == 0 or abs(value) >= 10 ** -decimals:
        return f"{value:,.{decimals}f}"
    return f"{value:.2g}"


def fmt_params_b(value) -> str:
    """Trainable parameters in billions as the paper prints them: 7, 0.26, 0.06 (tiny models: 0.00024)."""
    if _missing(value):
        return DASH
    return f"{value:.0f}" if value >= 1 else fmt_small(value)


def fmt_score_std(value, std) -> str:
    if _missing(value):
        return DASH
    return f"{value:.1f}±{std:.1f}" if not _missing(std) else f"{value:.1f}"


def _mark(mixing) -> str:
    return DASH if _missing(mixing) else (CHECK if mixing else CROSS)


def _image(size) -> str:
    return DASH if _missing(size) else f"{int(size)}×{int(size)}"


# -- the Table object -------------------------------------------------------------------------------


@dataclass
class Table:
    """One regenerated table: numbers, the strings shown, a title and notes."""

    key: str
    title: str
    values: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def _flat(self) -> pd.DataFrame:
        frame = self.display.copy()
        if isinstance(frame.columns, pd.MultiIndex):
            frame.columns = [" ".join(str(p) for p in c if str(p)) for c in frame.columns]
        return frame.reset_index()

    def to_markdown(self) -> str:
        flat = self._flat()
        align = ("left",) * self.display.index.nlevels + ("right",) * self.display.shape[1]
        # numbers are already formatted ("72.0", "–"): tabulate must not re-parse them
        empty = not len(flat) or not self.display.shape[1]
        body = "_(no runs)_" if empty else flat.to_markdown(index=False, disable_numparse=True, colalign=align)
        notes = "".join(f"\n\n{n}" for n in self.notes)
        return f"**Table {self.key}.** {self.title}\n\n{body}{notes}\n"

    def to_latex(self) -> str:
        frame = self.display.copy()
        frame = frame.map(_latex_text)
        frame.index = _latex_index(frame.index)
        frame.columns = _latex_index(frame.columns)
        styler = frame.style
        body = styler.to_latex(hrules=True, caption=_latex_text(f"Table {self.key}: {self.title}"),
                               multicol_align="c", sparse_index=False,
                               column_format="l" * frame.index.nlevels + "r" * frame.shape[1])
        notes = "".join(f"% {n}\n" for n in self.notes)
        return notes + body

    def to_html(self) -> str:
        styler = self.display.style.set_caption(html.escape(f"Table {self.key}: {self.title}"))
        styler = styler.format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
        notes = "".join(f"<p>{html.escape(n)}</p>\n" for n in self.notes)
        return styler.to_html() + notes

    def render(self, fmt: str = "md") -> str:
        return {"md": self.to_markdown, "markdown": self.to_markdown, "latex": self.to_latex,
                "tex": self.to_latex, "html": self.to_html}[fmt]()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"×": r"$\times$", "✓": r"\checkmark{}", "–": "--", "±": r"$\pm$", "α": r"$\alpha$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "—": "---"}


def _latex_text(value) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(value))
    for char, macro in _LATEX_UNICODE.items():
        text = text.replace(char, macro)
    return text


def _latex_index(index: pd.Index) -> pd.Index:
    if isinstance(index, pd.MultiIndex):
        return pd.MultiIndex.from_tuples([tuple(_latex_text(p) for p in t) for t in index],
                                         names=[_latex_text(n) if n else n for n in index.names])
    return pd.Index([_latex_text(v) for v in index], name=_latex_text(index.name) if index.name else None)


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
    for _, run in runs.sort_values(["image_size", "mixing"], kind="stable").iterrows():
        row = cells.setdefault((_image(run["image_size"]), _mark(run["mixing"])), {})
        value = scores.get(run["_key"], {}).get("overall")
        row.setdefault(size_column(run), [])
        if not _missing(value):
            row[size_column(run)].append(value)
    data_rows, notes = [], []
    for key, row in cells.items():
        data_rows.append({c: (sum(v) / len(v) if v else float("nan")) for c, v in row.items()})
        notes += [f"{key[0]} {key[1]} {c}: mean of {len(v)} runs" for c, v in row.items() if len(v) > 1]
    index = pd.MultiIndex.from_tuples(list(cells), names=["Image Size", "Data Mixing"])
    values = pd.DataFrame(data_rows, index=index, columns=columns)
    table = Table("3a", f"Scaling model size, image resolution and data mixing: {benchmark} overall "
                        f"(beam {beam}{', ' + method + ' fine-tuning' if method else ''}).",
                  values, _fill(values), _averaged_note(notes))
    return _with_reference(table, "3a", reference)


def table3b(frame: pd.DataFrame, *, sweep=None, method: str | None = "full", beam: int = 1,
            benchmark: str = "mmbench", reference: bool = False) -> Table:
    """Table 3(b): MMBench by ability (LR, AR, RR, FP-S, FP-C, CP), one row per checkpoint."""
    data = select(frame, sweep, method)
    runs = _order(_runs_for(data, [benchmark]), "image_size", "mixing")
    labels = _labels(runs, _llava, ambiguous=("llm", "tuning", "variant", "checkpoint"))
    spec = _category_columns(data, benchmark, MMBENCH_COLUMNS, "mmbench")
    scores = _scores(data, benchmark, beam)
    rows = []
    for (_, run), label in zip(runs.iterrows(), labels):
        got = scores.get(run["_key"], {})
        rows.append(((label, _image(run["image_size"]), _mark(run["mixing"])),
                     {spec[k]: v for k, v in got.items() if k in spec}))
    values, notes = _average(rows, ["Checkpoint", "Image Size", "Data Mixing"], list(spec.values()))
    name = "MMBench by ability" if benchmark == "mmbench" else f"{benchmark} by category"
    table = Table("3b", f"{name} (beam {beam}).", values, _fill(values),
                  _averaged_note(notes))
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


def table4(frame: pd.DataFrame, *, sweep=None, method: str | None = None, beam: int = 1,
           benchmark: str = "llava_bench", reference: bool = False) -> Table:
    """Table 4: performance, GPU-hours per node (stage 2) and trainable parameters (B), one column per
    LLM size × tuning method (Full, LoRA r<k>, QLoRA r<k>, DoRA r<k>: lmm.tuning's labels)."""
    data = select(frame, sweep, method)
    runs = _table4_order(trained_here(runs_view(data)).assign(_key=lambda d: _key(d)))
    scores = _scores(data, benchmark, beam)
    tuning = _labels(runs, _tuning_column,
                     always=("variant",), ambiguous=("image", "mixing"), scope=size_column)
    cells: dict[tuple, list] = {}
    for (_, run), label in zip(runs.iterrows(), tuning):
        cells.setdefault((size_column(run), label), []).append(
            (scores.get(run["_key"], {}).get("overall"), run["gpu_hours_per_node"], run["params_trainable"] / 1e9))
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
    notes = [(f"Performance: {benchmark} overall (beam {beam}). Time: stage-2 GPU-hours per node = wall hours "
              "× GPUs / 8."), *_averaged_note(notes)]
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
    rows = []
    for (_, run), label in zip(runs.iterrows(), labels):
        rows.append(((label, _mark(run["mixing"]) if run["_llava_row"] else DASH),
                     {name: scores[b].get(run["_key"], {}).get("overall") for b, name in benchmarks.items()}))
    values, notes = _average([(k, {c: v for c, v in d.items() if v is not None}) for k, d in rows],
                             ["Model", "Data Mix"], list(benchmarks.values()))
    table = Table("5", f"Multimodal and language capabilities (overall scores, beam {beam}"
                       f"{', ' + method + ' fine-tuning' if method else ''}).", values, _fill(values),
                  _averaged_note(notes))
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
    rows = []
    for _, run in runs.iterrows():
        rows.append({
            "Sweep": run["sweep"], "Model": size_column(run),
            "Tuning": f"{run['tuning_label']} ({run['variant']})" if run["variant"] else run["tuning_label"],
            "GPUs": DASH if _missing(run["gpus"]) else f"{int(run['gpus'])} × {run['gpu_type']}",
            "Stage 1 (GPU-h/node)": run["stage1_gpu_hours_per_node"],
            "Stage 2 (GPU-h/node)": run["gpu_hours_per_node"],
            "Total (GPU-h/node)": run["total_gpu_hours_per_node"],
            "Stage 1 ($)": run["stage1_usd"], "Stage 2 ($)": run["usd"], "Total ($)": run["total_usd"],
        })
    columns = ["Sweep", "Model", "Tuning", "GPUs", "Stage 1 (GPU-h/node)", "Stage 2 (GPU-h/node)",
               "Total (GPU-h/node)", "Stage 1 ($)", "Stage 2 ($)", "Total ($)"]
    values = pd.DataFrame(rows, columns=columns, index=pd.Index(runs["run_id"].tolist(), name="Run"))
    display = values.copy().astype(object)
    for column in columns[4:]:
        display[column] = [fmt_small(v) for v in values[column]]
    price = runs["usd_per_gpu_hour_per_node"].dropna().unique()
    notes = [("GPU-hours per node = wall hours × GPUs / 8 (the paper's unit); $ = GPU-hours per node × "
              f"{', '.join(f'${p:g}' for p in price) or 'the cluster price'} per node-hour. A shared stage 1 "
              "is counted in full for every run that uses it (once per sweep in the sweep table).")]
    return Table("cost", "Compute cost per run.", values, display, notes)


def sweep_cost_table(frame: pd.DataFrame, *, sweep=None) -> Table:
    """GPU-hours per node and $ per sweep, each shared stage-1 run counted once per sweep, and overall."""
    runs = trained_here(runs_view(select(frame, sweep)))

    def summarise(group: pd.DataFrame) -> dict:
        stage1 = group.drop_duplicates("stage1_run_id")
        s1_h, s2_h = stage1["stage1_gpu_hours_per_node"].sum(min_count=1), group["gpu_hours_per_node"].sum(min_count=1)
        s1_d, s2_d = stage1["stage1_usd"].sum(min_count=1), group["usd"].sum(min_count=1)
        return {"Runs": len(group), "Stage-1 runs": stage1["stage1_run_id"].nunique(),
                "Stage 1 (GPU-h/node)": s1_h, "Stage 2 (GPU-h/node)": s2_h,
                "Total (GPU-h/node)": pd.Series([s1_h, s2_h]).sum(min_count=1),
                "Stage 1 ($)": s1_d, "Stage 2 ($)": s2_d, "Total ($)": pd.Series([s1_d, s2_d]).sum(min_count=1)}

    rows = {name: summarise(group) for name, group in runs.groupby("sweep", sort=True)}
    if len(rows) > 1:
        rows["all sweeps"] = summarise(runs)
    values = pd.DataFrame.from_dict(rows, orient="index")
    values.index.name = "Sweep"
    display = values.copy().astype(object)
    for column in values.columns[2:]:
        display[column] = [fmt_small(v) for v in values[column]]
    return Table("sweep-cost", "Compute cost per sweep (each stage-1 run counted once).", values, display,
                 ["GPU-hours per node = wall hours × GPUs / 8; $ at the runs' cluster price."])


# -- reported values beside measured ones ------------------------------------------------------------

TABLE_FUNCTIONS: dict[str, Callable[..., Table]] = {"1": table1, "2": table2, "3a": table3a, "3b": table3b,
                                                    "4": table4, "5": table5}


def reported_table(key: str) -> Table:
    """The paper's table: the table function on the reference records of its sweep, plus the rows of
    other systems (Bard, Bing Chat, MM-Vet's quoted models, the base LLMs of Table 5)."""
    table = TABLE_FUNCTIONS[key](reference_frame(), sweep=PAPER_SWEEPS[key])
    if key == "4":  # the LoRA hyper-parameter runs of Section 3.2 are text, not columns of Table 4
        keep = [c for c in table.values.columns if "α" not in c[1] and "lr " not in c[1]]
        table = Table(table.key, table.title, table.values[keep], table.display[keep], table.notes)
    baseline = baseline_rows(key)
    if baseline.empty:
        return table
    return _add_baselines(table, key, baseline)


def _add_baselines(table: Table, key: str, baseline: pd.DataFrame) -> Table:
    values, display = table.values, table.display
    names = {"1": LLAVA_BENCH_COLUMNS, "2": MMVET_COLUMNS, "5": TABLE5_BENCHMARKS}[key]
    extra_values, extra_display, where = [], [], []
    for row, group in baseline.groupby("row", sort=False):
        if key == "5":
            got = {names[b]: v for b, v in zip(group["benchmark"], group["value"])}
            index = (row, DASH)
        else:
            got = {names[m]: v for m, v in zip(group["metric"], group["value"])}
            index = f"{row} {QUOTED_MARK}" if key == "2" else row
        series = pd.Series({c: got.get(c, float("nan")) for c in values.columns}, name=index)
        shown = series.map(fmt_score)
        if key == "2":
            std = group.loc[group["metric"] == "overall", "std"]
            shown["Total"] = fmt_score_std(got.get("Total"), std.iloc[0] if len(std) else None)
        extra_values.append(series)
        extra_display.append(shown)
        where.append(str(group["model"].iloc[0]))
    if key == "5":  # each base LLM just above the LLaVA rows built on it
        order: list = []
        pending = list(zip(extra_values, extra_display, where))
        for label in values.index:
            for item in list(pending):
                if label[0].startswith(f"LLaVA-{item[2].upper()}"):
                    order.append(("extra", item))
                    pending.remove(item)
            order.append(("own", label))
        order += [("extra", item) for item in pending]
        rows_v = [item[0] if kind == "extra" else values.loc[[item]].iloc[0] for kind, item in order]
        rows_d = [item[1] if kind == "extra" else display.loc[[item]].iloc[0] for kind, item in order]
        index = pd.MultiIndex.from_tuples([r.name for r in rows_v], names=values.index.names)
    else:  # the other systems first, as in the paper
        rows_v = extra_values + [values.loc[i] for i in values.index]
        rows_d = extra_display + [display.loc[i] for i in display.index]
        index = pd.Index([r.name for r in rows_v], name=values.index.name)
    new_values = pd.DataFrame([r.values for r in rows_v], index=index, columns=values.columns)
    new_display = pd.DataFrame([r.values for r in rows_d], index=index, columns=display.columns)
    notes = table.notes + ([f"{QUOTED_MARK} quoted by the paper from MM-Vet (arXiv 2308.02490)."] if key == "2" else [])
    return Table(table.key, table.title, new_values, new_display, notes)


def _paper_column(column):
    return (*column[:-1], f"{column[-1]} (paper)") if isinstance(column, tuple) else f"{column} (paper)"


def with_reference(measured: Table, reported: Table) -> Table:
    """Measured and reported side by side: every column twice ("<column>", "<column> (paper)"); rows in
    the paper's order, then measured rows the paper does not have. "–" where one side has nothing."""
    rows = list(reported.display.index) + [i for i in measured.display.index if i not in reported.display.index]
    columns = list(measured.display.columns) + [c for c in reported.display.columns
                                                if c not in measured.display.columns]
    out_cols, display_cols, value_cols = [], {}, {}
    for column in columns:
        for source, name in ((measured, column), (reported, _paper_column(column))):
            if source is reported and column not in reported.display.columns:
                continue
            out_cols.append(name)
            has = column in source.display.columns
            display_cols[name] = [source.display.at[r, column] if has and r in source.display.index else DASH
                                  for r in rows]
            value_cols[name] = [source.values.at[r, column] if has and r in source.values.index
                                and column in source.values.columns else float("nan") for r in rows]
    multi = isinstance(measured.display.columns, pd.MultiIndex) or isinstance(reported.display.columns, pd.MultiIndex)
    names = (reported.display.columns if len(reported.display.columns) else measured.display.columns).names
    col_index = pd.MultiIndex.from_tuples(out_cols, names=names) if multi else pd.Index(out_cols)
    index_names = reported.display.index.names if len(reported.display.index) else measured.display.index.names
    row_index = pd.MultiIndex.from_tuples(rows, names=index_names) if any(isinstance(r, tuple) for r in rows) \
        else pd.Index(rows, name=index_names[0])
    display = pd.DataFrame({c: display_cols[c] for c in out_cols}, index=row_index)
    values = pd.DataFrame({c: value_cols[c] for c in out_cols}, index=row_index)
    display.columns = values.columns = col_index
    return Table(measured.key, measured.title + " Measured beside the paper's reported values.", values, display,
                 measured.notes + [SOURCE_NOTE])


def _with_reference(table: Table, key: str, reference: bool) -> Table:
    return with_reference(table, reported_table(key)) if reference else table


# -- all tables and the CLI --------------------------------------------------------------------------

TABLE_CHOICES = ("1", "2", "3", "3a", "3b", "4", "5", "cost", "all")


def table_keys(which: str) -> list[str]:
    return {"all": ["1", "2", "3a", "3b", "4", "5", "cost"], "3": ["3a", "3b"]}.get(which, [which])


def make_tables(frame: pd.DataFrame, which: str = "all", *, reference: bool = False, sweep=None,
                benchmark: str | None = None, beam: int | None = None) -> list[Table]:
    """The tables asked for (`1`, `2`, `3` = 3a + 3b, `3a`, `3b`, `4`, `5`, `cost` = per run + per sweep,
    `all`). `benchmark`/`beam` override the score each table shows (e.g. `synthetic` for a toy study)."""
    tables = []
    for key in table_keys(which):
        if key == "cost":
            tables += [cost_table(frame, sweep=sweep), sweep_cost_table(frame, sweep=sweep)]
            continue
        kwargs: dict = {"sweep": sweep, "reference": reference}
        if benchmark is not None and key != "5":
            kwargs["benchmark"] = benchmark
        if beam is not None:
            kwargs["beams" if key == "1" else "beam"] = (beam,) if key == "1" else beam
        tables.append(TABLE_FUNCTIONS[key](frame, **kwargs))
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--runs", default="runs", help="runs folder (runs/<sweep>/<run_id>/results.json)")
    source.add_argument("--wandb-csv", help="a W&B runs export (CSV) instead of a runs folder")
    parser.add_argument("--table", default="all", choices=TABLE_CHOICES)
    parser.add_argument("--format", default="md", choices=("md", "latex", "html"))
    parser.add_argument("--reference", action="store_true", help="show the paper's values beside")
    parser.add_argument("--sweep", action="append", help="only these sweeps (repeatable)")
    parser.add_argument("--benchmark", help="score shown instead of each table's benchmark (e.g. synthetic)")
    parser.add_argument("--beam", type=int, help="beam size of the scores shown")
    parser.add_argument("--paper", action="store_true", help="the paper's reported tables only (no runs)")
    args = parser.parse_args(argv)

    if args.paper:
        tables = [reported_table(key) for key in table_keys(args.table) if key in TABLE_FUNCTIONS]
    else:
        frame = collect_wandb_csv(args.wandb_csv) if args.wandb_csv else collect(args.runs)
        tables = make_tables(frame, args.table, reference=args.reference, sweep=args.sweep,
                             benchmark=args.benchmark, beam=args.beam)
    sys.stdout.write("\n".join(t.render(args.format) for t in tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
