"""The paper's five findings, each measured on a study's runs as an effect with its 95 % interval and a verdict.

One row per finding (Lu et al., arXiv 2309.09958): 1 size, 2 resolution, 3a/3b data mixing (multimodal and
language-only score), 4 LoRA against full fine-tuning, 5a/5b cost (size, method). Effects are differences in
percentage points of a benchmark's overall score, paired over its questions (analysis/intervals.py); where a
comparison exists in several cells (e.g. resolution at each size) the effect is the mean of the per-cell
differences.

Verdicts follow from the interval alone, never from the point estimate:
- a claimed increase is *reproduced* when the interval lies above 0, *not reproduced* when it lies below
  0, and *inconclusive* when it holds 0 (or when a run or its per-question outcomes are missing);
- "at every size" (resolution): a size whose own interval lies below 0 makes it *not reproduced*;
- LoRA "close to full, and closer as the model grows": close means the gap at the largest size stays
  within CLOSE_MARGIN points (its interval's low end above −CLOSE_MARGIN), closer means the gap at the
  largest size minus the gap at the smallest has an interval above 0. Both → reproduced; a gap clearly
  wider than the margin or an interval of the trend below 0 → not reproduced; otherwise inconclusive;
- cost (5a: grows with size, 5b: LoRA below full) has one device-time measurement per run and no interval: a
  comparison counts only when the ratio is off 1 by more than TIMING_NOISE; all comparisons the paper's way →
  reproduced, any the other way → not reproduced, otherwise inconclusive.

Why 5b does not show on tiny CPU models (measured with torch.profiler, tiny_l, one thread, one step of 8 × 100
tokens): what LoRA saves is the weight gradient of every frozen matrix, 22 % of a full fine-tuning step; what it
adds is two rank-8 products per adapted matrix forward and four backward (skinny, slow products at width 256,
together about as long as the saving) and, on CPU, the dropout mask on every adapter input (16 % of a LoRA
step). The saving grows with the width squared and the adapters' cost with the width, so the ratio falls as the
LLM widens: `python -m bench.lora_cost` (the toy's shape and LoRA at widths 256-1536, one thread, idle 2-core
machine) measured LoRA/full 1.21× at 256 (tiny_l's width), 0.90× at 512, 0.83× at 1024 and 0.74× at 1536 (the
paper: 0.91× at 13B, 0.83× at 33B, 0.68× at 65B).
So the toy's verdict is about its scale, not the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.intervals import Estimate
from lmm.tuning import tuning_method

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
CLOSE_MARGIN = 5.0  # points: "close" for LoRA vs full (the paper's gaps are ≤ 1.9 points at 13B–65B)
TIMING_NOISE = 0.10  # relative: device-time differences below this are not read as a cost difference

CLAIMS = {
    "1": ("Model size", "A larger LLM scores higher (Tables 1, 3a: 7B < 13B < 33B < 65B)."),
    "2": ("Image resolution", "Higher image resolution scores higher at every size (Table 3a: 224 → 336 px)."),
    "3a": ("Data mixing (multimodal)", "Mixing language-only data into stage 2 improves the multimodal score "
                                       "(Table 3a)."),
    "3b": ("Data mixing (language)", "Mixing language-only data into stage 2 improves the language-only score "
                                     "(Table 5)."),
    "4": ("LoRA vs full", "LoRA/QLoRA get close to full fine-tuning, and closer as the model grows (Table 4)."),
    "5a": ("Cost (size)", "Cost grows with size (Table 4: 1.3 GPU-hours per node at 7B → 13.5 at 65B, full)."),
    "5b": ("Cost (LoRA vs full)", "LoRA costs fewer GPU-hours than full fine-tuning at the same size (Table 4: "
                                  "0.91× at 13B, 0.83× at 33B, 0.68× at 65B)."),
}


@dataclass
class Finding:
    """One row: the paper's claim, what the runs measured (text), the main effect and the verdict."""

    key: str
    name: str
    claim: str
    measured: str
    verdict: str
    effect: Estimate | None = None


Outcomes = Mapping[str, Mapping[str, int]]  # run key → {question id: 0/1}


def increase_verdict(estimate: Estimate | None) -> str:
    """reproduced / not reproduced / inconclusive for a claimed positive effect, from its interval."""
    if estimate is None:
        return INCONCLUSIVE
    if estimate.above_zero():
        return REPRODUCED
    if estimate.below_zero():
        return NOT_REPRODUCED
    return INCONCLUSIVE


def mean_difference(pairs: Sequence[tuple[str, str]], outcomes: Outcomes) -> Estimate | None:
    """Mean over pairs (a, b) of score(a) − score(b), paired over the questions all of them answered."""
    keys = list(dict.fromkeys(k for pair in pairs for k in pair))
    arrays = intervals.aligned(outcomes, keys)
    if not pairs or arrays is None:
        return None
    by_key = dict(zip(keys, arrays))
    weight = 1.0 / len(pairs)
    groups = [g for a, b in pairs for g in ((weight, [by_key[a]]), (-weight, [by_key[b]]))]
    return intervals.contrast(groups)


def difference_of_differences(first: tuple[str, str], second: tuple[str, str], outcomes: Outcomes) -> Estimate | None:
    """(score(a1) − score(b1)) − (score(a2) − score(b2)), paired over questions."""
    keys = [*first, *second]
    arrays = intervals.aligned(outcomes, list(dict.fromkeys(keys)))
    if arrays is None:
        return None
    by_key = dict(zip(dict.fromkeys(keys), arrays))
    (a1, b1), (a2, b2) = first, second
    return intervals.contrast([(1.0, [by_key[a1]]), (-1.0, [by_key[b1]]), (-1.0, [by_key[a2]]), (1.0, [by_key[b2]])])


def _pts(estimate: Estimate | None) -> str:
    return "no per-question outcomes" if estimate is None else \
        f"{estimate.format(signed=True)} pts {estimate.interval()}"


def _mean_of(n: int, what: str) -> str:
    return f"one {what}" if n == 1 else f"mean of {n} {what}s"


def _sizes(runs: pd.DataFrame) -> list[str]:
    ordered = runs.sort_values(["size_b", "model"], kind="stable")
    return list(dict.fromkeys(ordered["size"]))


def _one(runs: pd.DataFrame, **where) -> str | None:
    """The key of the one run matching `where` (the first when repeats share a cell), or None."""
    mask = pd.Series(True, index=runs.index)
    for column, value in where.items():
        mask &= runs[column] == value
    return runs.loc[mask, "_key"].iloc[0] if mask.any() else None


def _missing_text(what: str) -> str:
    return f"not measured: the study has no {what}"


# -- the findings ------------------------------------------------------------------------------------


def _size_pairs(full: pd.DataFrame, larger: str, smaller: str) -> list[tuple[str, str]]:
    """(larger, smaller) run keys in every (image size, mixing) cell that has both sizes."""
    cells = full[["image_size", "mixing"]].drop_duplicates().itertuples(index=False)
    return [(a, b) for image, mixing in cells
            if (a := _one(full, size=larger, image_size=image, mixing=mixing))
            and (b := _one(full, size=smaller, image_size=image, mixing=mixing))]


def _full_ft(runs: pd.DataFrame) -> pd.Series:
    """Which runs fine-tuned the whole LLM (lmm.tuning: every method that trains no adapters)."""
    return ~runs["method"].map(lambda name: tuning_method(name).adapter).astype(bool)


def size_finding(runs: pd.DataFrame, outcomes: Outcomes) -> Finding:
    """1: largest minus smallest size, full fine-tuning, mean over the (image size, mixing) cells with both."""
    full = runs[_full_ft(runs)]
    sizes = _sizes(full)
    name, claim = CLAIMS["1"]
    if len(sizes) < 2:
        return Finding("1", name, claim, _missing_text("two LLM sizes"), INCONCLUSIVE)
    small, large = sizes[0], sizes[-1]
    pairs = _size_pairs(full, large, small)
    effect = mean_difference(pairs, outcomes)
    steps = []
    for lower, upper in zip(sizes, sizes[1:]):
        step = mean_difference(_size_pairs(full, upper, lower), outcomes)
        if step is not None:
            steps.append(f"{upper} − {lower} {step.format(signed=True)}")
    measured = f"{large} − {small}: {_pts(effect)}, {_mean_of(len(pairs), 'cell')} (full fine-tuning)"
    if len(steps) > 1:
        measured += f"; steps: {'; '.join(steps)}"
    return Finding("1", name, claim, measured, increase_verdict(effect), effect)


def resolution_finding(runs: pd.DataFrame, outcomes: Outcomes) -> Finding:
    """2: highest minus lowest image size at each size (full, no mixing), the mean over sizes; no size below 0."""
    full = runs[(_full_ft(runs)) & (~runs["mixing"].astype(bool))]
    name, claim = CLAIMS["2"]
    images = sorted(full["image_size"].dropna().unique())
    if len(images) < 2:
        return Finding("2", name, claim, _missing_text("two image sizes"), INCONCLUSIVE)
    low, high = images[0], images[-1]
    per_size, pairs = [], []
    for size in _sizes(full):
        a, b = _one(full, size=size, image_size=high), _one(full, size=size, image_size=low)
        if a and b:
            pairs.append((a, b))
            per_size.append((size, mean_difference([(a, b)], outcomes)))
    effect = mean_difference(pairs, outcomes)
    verdict = increase_verdict(effect)
    if any(e is not None and e.below_zero() for _, e in per_size):
        verdict = NOT_REPRODUCED
    detail = "; ".join(f"{s} {e.format(signed=True)}" for s, e in per_size if e is not None)
    measured = (f"{int(high)} px − {int(low)} px: {_pts(effect)}, {_mean_of(len(pairs), 'size')} "
                f"(full, no mixing){'; per size: ' + detail if detail else ''}")
    return Finding("2", name, claim, measured, verdict, effect)


def mixing_finding(runs: pd.DataFrame, outcomes: Outcomes, key: str, benchmark: str) -> Finding:
    """3a/3b: mixed minus not mixed (full fine-tuning), mean over the (size, image size) cells with both."""
    full = runs[_full_ft(runs)]
    name, claim = CLAIMS[key]
    mixed = full[full["mixing"].astype(bool)]
    pairs = [(a, b) for size, image in mixed[["size", "image_size"]].drop_duplicates().itertuples(index=False)
             if (a := _one(mixed, size=size, image_size=image))
             and (b := _one(full[~full["mixing"].astype(bool)], size=size, image_size=image))]
    if not pairs:
        return Finding(key, name, claim, _missing_text(f"mixed and unmixed runs scored on {benchmark}"),
                       INCONCLUSIVE)
    effect = mean_difference(pairs, outcomes)
    measured = f"mixed − not mixed on {benchmark}: {_pts(effect)}, {_mean_of(len(pairs), 'cell')} (full)"
    return Finding(key, name, claim, measured, increase_verdict(effect), effect)


def lora_verdict(largest_gap: Estimate | None, trend: Estimate | None, margin: float = CLOSE_MARGIN) -> str:
    """Finding 4's verdict from the LoRA − full gap at the largest size and its change from the smallest."""
    if largest_gap is None or trend is None:
        return INCONCLUSIVE
    if largest_gap.high < -margin or trend.below_zero():
        return NOT_REPRODUCED
    if largest_gap.low > -margin and trend.above_zero():
        return REPRODUCED
    return INCONCLUSIVE


def lora_finding(runs: pd.DataFrame, outcomes: Outcomes) -> Finding:
    """4: LoRA − full at each size (same image size and mixing); close at the largest, closer as size grows."""
    name, claim = CLAIMS["4"]
    lora = runs[~_full_ft(runs)]
    gaps = []
    for size in _sizes(lora):
        for _, row in lora[lora["size"] == size].iterrows():
            full = _one(runs[_full_ft(runs)], size=size, image_size=row["image_size"], mixing=row["mixing"])
            if full:
                gaps.append((size, row["_key"], full, row["tuning_label"]))
                break
    if not gaps:
        return Finding("4", name, claim, _missing_text("LoRA run with a matching full fine-tuning run"),
                       INCONCLUSIVE)
    per_size = [(size, label, mean_difference([(a, b)], outcomes)) for size, a, b, label in gaps]
    largest = per_size[-1][2]
    trend = difference_of_differences(gaps[-1][1:3], gaps[0][1:3], outcomes) if len(gaps) > 1 else None
    shown = "; ".join(f"{s} {e.format(signed=True)}" for s, _, e in per_size if e is not None)
    measured = (f"{per_size[-1][1]} − full at {gaps[-1][0]}: {_pts(largest)} (close: above −{CLOSE_MARGIN:g}); "
                f"gap change {gaps[-1][0]} vs {gaps[0][0]}: {_pts(trend) if len(gaps) > 1 else 'one size only'}; "
                f"per size: {shown}")
    return Finding("4", name, claim, measured, lora_verdict(largest, trend), largest)


def cost_verdict(ratios: Sequence[float], noise: float = TIMING_NOISE) -> str:
    """Each ratio is claimed < 1 (cheaper/ smaller one divided by the other): all well below → reproduced."""
    clean = [r for r in ratios if not (r is None or math.isnan(r))]
    if not clean:
        return INCONCLUSIVE
    if any(r > 1 + noise for r in clean):
        return NOT_REPRODUCED
    if all(r < 1 - noise for r in clean):
        return REPRODUCED
    return INCONCLUSIVE


TIMING_TEXT = (f"one device-time measurement per run (CPU time on CPU), no interval; differences under "
               f"{TIMING_NOISE:.0%} are not read as one")


def size_cost_finding(runs: pd.DataFrame) -> Finding:
    """5a: each method's stage-2 GPU-hours per node, smallest size over largest (claimed below 1)."""
    name, claim = CLAIMS["5a"]
    cost, sizes = _stage2_cost(runs), _sizes(runs)
    parts, ratios = [], []
    for method in ("full", "lora"):
        present = [s for s in sizes if (s, method) in cost]
        if len(present) > 1:
            ratio = cost[(present[0], method)] / cost[(present[-1], method)]
            ratios.append(ratio)
            parts.append(f"{method} {present[-1]}/{present[0]} {1 / ratio:.2f}×")
    if not ratios:
        return Finding("5a", name, claim, _missing_text("timed runs of two sizes"), INCONCLUSIVE)
    return Finding("5a", name, claim, f"stage-2 GPU-hours per node: {'; '.join(parts)} ({TIMING_TEXT})",
                   cost_verdict(ratios))


def method_cost_finding(runs: pd.DataFrame) -> Finding:
    """5b: LoRA over full stage-2 GPU-hours per node at each size (claimed below 1)."""
    name, claim = CLAIMS["5b"]
    cost, sizes = _stage2_cost(runs), _sizes(runs)
    params = runs.groupby(["size", "method"], sort=False)["params_trainable"].mean()
    parts, ratios = [], []
    for size in sizes:
        if (size, "full") in cost and (size, "lora") in cost:
            ratio = cost[(size, "lora")] / cost[(size, "full")]
            ratios.append(ratio)
            share = params[(size, "lora")] / params[(size, "full")]
            parts.append(f"{size} {ratio:.2f}× (trainable parameters {share:.2f}×)")
    if not ratios:
        return Finding("5b", name, claim, _missing_text("timed LoRA and full runs"), INCONCLUSIVE)
    return Finding("5b", name, claim, f"LoRA/full stage-2 GPU-hours per node: {'; '.join(parts)} ({TIMING_TEXT})",
                   cost_verdict(ratios))


def _stage2_cost(runs: pd.DataFrame) -> pd.Series:
    """Mean stage-2 GPU-hours per node by (size, method)."""
    return runs.groupby(["size", "method"], sort=False)["gpu_hours_per_node"].mean()


def findings(runs: pd.DataFrame, multimodal: Outcomes, language: Outcomes,
             benchmarks: tuple[str, str] = ("synthetic", "synthetic_text")) -> list[Finding]:
    """All seven rows from one row per run (`_key`, size, size_b, model, image_size, mixing, method, …)."""
    return [size_finding(runs, multimodal), resolution_finding(runs, multimodal),
            mixing_finding(runs, multimodal, "3a", benchmarks[0]), mixing_finding(runs, language, "3b", benchmarks[1]),
            lora_finding(runs, multimodal), size_cost_finding(runs), method_cost_finding(runs)]


def as_frame(rows: Sequence[Finding]) -> pd.DataFrame:
    """The findings table's cells (strings), indexed by finding."""
    return pd.DataFrame({"Finding": [f"{r.key}. {r.name}" for r in rows],
                         "Paper's claim": [r.claim for r in rows],
                         "Measured (toy study, 95 % interval)": [r.measured for r in rows],
                         "Verdict": [r.verdict for r in rows]}).set_index("Finding")


def effects(rows: Sequence[Finding]) -> pd.DataFrame:
    """The main effect of each finding as numbers (NaN where not measured)."""
    return pd.DataFrame({"effect": [r.effect.value if r.effect else np.nan for r in rows],
                         "low": [r.effect.low if r.effect else np.nan for r in rows],
                         "high": [r.effect.high if r.effect else np.nan for r in rows]},
                        index=pd.Index([f"{r.key}. {r.name}" for r in rows], name="Finding"))


def findings_table(frame: pd.DataFrame, *, sweep=None, benchmark: str = "synthetic",
                   language_benchmark: str = "synthetic_text", beam: int = 1):
    """The findings table of a study's runs (the tidy frame of analysis.collect), as an analysis Table."""
    from analysis.collect import runs_view
    from analysis.table_layouts import _key, select, trained_here
    from analysis.table_render import Table

    runs = trained_here(runs_view(select(frame, sweep)))
    runs = runs.assign(_key=_key(runs), mixing=runs["mixing"].fillna(False).astype(bool))
    rows = findings(runs, intervals.outcomes(runs, benchmark, beam), intervals.outcomes(runs, language_benchmark, beam),
                    (benchmark, language_benchmark))
    notes = [f"Effects in percentage points of the overall score (beam {beam}), paired over questions; "
             f"95 % bootstrap intervals ({intervals.N_BOOT} replicates, seed {intervals.SEED}). Verdict rules: "
             "analysis/findings.py (an interval that holds 0 is inconclusive; LoRA is 'close' within "
             f"{CLOSE_MARGIN:g} points; timings differing by under {TIMING_NOISE:.0%} count as equal)."]
    return Table("findings", "The paper's findings, measured on this study.", effects(rows), as_frame(rows), notes,
                 heading="Findings", text_cells=True)
