"""Plots of a sweep (matplotlib, PNG): score vs model size, score vs cost with its Pareto front, losses.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot state, so importing this module never
changes a notebook's backend); `save_all` writes them with the Agg canvas.

    python -m analysis.plots --runs runs --out plots [--benchmark llava_bench] [--sweep table4]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.collect import collect, find_records, loss_frame, runs_view
from analysis.reference import reference_frame
from analysis.tables import select, size_column

PREFERRED_BENCHMARKS = ("llava_bench", "mmvet", "mmbench", "synthetic")


def pick_benchmark(frame: pd.DataFrame, benchmark: str | None = None) -> str | None:
    """`benchmark` if given, else the first of llava_bench, mmvet, mmbench, synthetic (then any) scored."""
    if benchmark:
        return benchmark
    present = [b for b in frame["benchmark"].dropna().unique()]
    for name in PREFERRED_BENCHMARKS:
        if name in present:
            return name
    return present[0] if present else None


def overall_scores(frame: pd.DataFrame, benchmark: str | None, beam: int = 1) -> pd.DataFrame:
    """One row per run with its overall score on `benchmark` (runs without one are dropped)."""
    rows = frame[(frame["benchmark"] == benchmark) & (frame["beam"] == beam) & (frame["metric"] == "overall")]
    runs = runs_view(frame)
    scores = rows[["run_id", "sweep", "source", "score"]]
    return runs.merge(scores, on=["run_id", "sweep", "source"], how="inner")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and score (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if math.isnan(cost) or math.isnan(score):
            continue
        if not front or score > front[-1][1]:
            front.append((cost, score))
    return front


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_score_vs_size(frame: pd.DataFrame, benchmark: str | None = None, beam: int = 1,
                       method: str | None = "full"):
    """Overall score vs LLM size (log scale, labelled with the size names), one line per image size ×
    data mixing (Table 3a as a plot)."""
    benchmark = pick_benchmark(frame, benchmark)
    data = overall_scores(select(frame, method=method), benchmark, beam)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if data.empty:
        _empty(ax, f"no run scored on {benchmark}")
    else:
        ticks = {}
        for (image, mixing), group in data.groupby(["image_size", "mixing"], sort=True):
            mean = group.groupby(["size_b", "size"], as_index=False)["score"].mean().sort_values("size_b")
            label = f"{int(image)} px" + (" + mixing" if mixing else "")
            ax.plot(mean["size_b"], mean["score"], marker="o", label=label)
            ticks.update(zip(mean["size_b"], mean["size"]))
        ax.set_xscale("log")
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.minorticks_off()
        ax.set_xlabel("LLM size")
        ax.set_ylabel(f"{benchmark} overall (beam {beam})")
        ax.legend()
        ax.grid(alpha=0.3)
    ax.set_title("Score vs model size")
    fig.tight_layout()
    return fig


def point_label(run: pd.Series) -> str:
    """`33B LoRA r64`, `33B LoRA r64 (α16, lr 2e-05)`, `tiny_s full +mix`."""
    variant = f" ({run['variant']})" if run["variant"] else ""
    return f"{size_column(run)} {run['tuning_label']}{variant}" + (" +mix" if run["mixing"] else "")


def plot_score_vs_cost(frame: pd.DataFrame, benchmark: str | None = None, beam: int = 1):
    """Overall score vs stage-2 GPU-hours per node, one point per size × tuning method, with the Pareto
    front (the Table 4 trade-off)."""
    benchmark = pick_benchmark(frame, benchmark)
    data = overall_scores(frame, benchmark, beam).dropna(subset=["gpu_hours_per_node", "score"])
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if data.empty:
        _empty(ax, f"no run with both a {benchmark} score and a cost")
    else:
        data = data.assign(label=[point_label(r) for _, r in data.iterrows()])
        points = data.groupby("label", as_index=False)[["gpu_hours_per_node", "score"]].mean()
        ax.scatter(points["gpu_hours_per_node"], points["score"])
        for _, p in points.iterrows():
            ax.annotate(p["label"], (p["gpu_hours_per_node"], p["score"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = pareto_front(list(zip(points["gpu_hours_per_node"], points["score"])))
        if front:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="tab:red", alpha=0.6, label="Pareto front")
            ax.legend()
        if points["gpu_hours_per_node"].min() > 0:
            ax.set_xscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
            ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_xlabel("GPU-hours per node (stage 2)")
        ax.set_ylabel(f"{benchmark} overall (beam {beam})")
        ax.grid(alpha=0.3)
    ax.set_title("Score vs compute cost")
    fig.tight_layout()
    return fig


def plot_loss_curves(losses: pd.DataFrame, stage: str | None = "finetune"):
    """Training loss vs optimiser step, one line per run (stage 2 by default; None = both stages)."""
    data = losses if stage is None else losses[losses["stage"] == stage]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if data.empty:
        _empty(ax, "no loss curves")
    else:
        for (run_id, run_stage), group in data.groupby(["run_id", "stage"], sort=True):
            label = run_id if stage is not None else f"{run_id} ({run_stage})"
            ax.plot(group["step"], group["loss"], marker=".", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    ax.set_title("Training loss" + (f" ({stage})" if stage else ""))
    fig.tight_layout()
    return fig


def save_figures(frame: pd.DataFrame, out_dir: str | Path, *, records: Sequence[dict] = (),
                 benchmark: str | None = None, beam: int = 1) -> list[Path]:
    """Every plot of a frame (loss curves from `records`) as PNG files in `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "score_vs_size.png": plot_score_vs_size(frame, benchmark, beam),
        "score_vs_cost.png": plot_score_vs_cost(frame, benchmark, beam),
        "loss_curves.png": plot_loss_curves(loss_frame(records)),
    }
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
    return [out / name for name in figures]


def save_all(runs_dir: str | Path, out_dir: str | Path, *, benchmark: str | None = None, beam: int = 1,
             sweep=None) -> list[Path]:
    """Every plot of a runs folder as PNG files in `out_dir`; returns their paths."""
    sweeps = None if sweep is None else ([sweep] if isinstance(sweep, str) else list(sweep))
    records = [r for r in find_records(runs_dir) if sweeps is None or r.get("sweep") in sweeps]
    return save_figures(select(collect(runs_dir), sweeps), out_dir, records=records, benchmark=benchmark,
                        beam=beam)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--out", default="plots")
    parser.add_argument("--benchmark", help="default: llava_bench, else the first benchmark scored")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--sweep", action="append")
    parser.add_argument("--paper", action="store_true", help="plot the paper's reported numbers (no runs)")
    args = parser.parse_args(argv)
    if args.paper:
        paths = save_figures(select(reference_frame(), args.sweep), args.out, benchmark=args.benchmark,
                             beam=args.beam)
    else:
        paths = save_all(args.runs, args.out, benchmark=args.benchmark, beam=args.beam, sweep=args.sweep)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
