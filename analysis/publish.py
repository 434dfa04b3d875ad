"""A sweep's regenerated tables and plots, logged into one W&B run of job type `analysis` in the sweep's group.

The run's id is derived from the sweep name (`analysis-<sweep>`) and it is opened with `resume="allow"`, so
publishing again updates that run instead of adding one. It holds one `wandb.Table` per paper table that
has data plus the cost tables (the cells are the strings `python -m analysis.tables` prints; the paper's
values beside the measured ones for the paper's sweeps, or with `--reference`), the PNGs of
`analysis.plots` as `wandb.Image`, and native W&B charts: score vs model size (line) and score vs
GPU-hours per node (scatter). Local copies (`tables.md`, `plots/*.png`) and the W&B files go to
`<runs>/<sweep>/analysis/` (or `--out`). Offline (`WANDB_MODE=offline` or `--mode offline`), upload with
`wandb sync <out>/wandb/latest-run`.

    python -m analysis.publish --runs runs --sweep toy [--benchmark synthetic] [--mode offline]
    python -m analysis.publish --wandb-csv export.csv --sweep table4 --reference
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.collect import find_records, frame_from_records, records_from_wandb
from analysis.plots import overall_scores, pick_benchmark, point_label, save_figures
from analysis.tables import PAPER_SWEEPS, TABLE_FUNCTIONS, Table, make_tables
from lmm.tracking import configure_environment, wandb_run_id

JOB_TYPE = "analysis"
PAPER_SWEEP_NAMES = {*PAPER_SWEEPS.values(), "paper"}


def analysis_run_id(sweep: str) -> str:
    """The W&B id of a sweep's analysis run: the same for every publish of that sweep."""
    return wandb_run_id(f"analysis-{sweep}")


def table_name(table: Table) -> str:
    """The W&B key of a table: `tables/table_1`, `tables/table_3a`, `tables/cost`, `tables/sweep_cost`."""
    key = table.key.replace("-", "_")
    return f"tables/{key}" if key in ("cost", "sweep_cost") else f"tables/table_{key}"


def default_out(sweep: str, runs: str | Path | None = None, wandb_csv: str | Path | None = None) -> Path:
    """Where a sweep's analysis files go: `<runs>/<sweep>/analysis`, or beside the W&B export."""
    if runs is not None:
        return Path(runs) / sweep / "analysis"
    return Path(wandb_csv).resolve().parent / f"{sweep}-analysis"


# -- the sweep's data ---------------------------------------------------------------------------------


def load_sweep(sweep: str, *, runs: str | Path | None = None, wandb_csv: str | Path | None = None,
               include_unfinished: bool = False) -> tuple[pd.DataFrame, list[dict]]:
    """The tidy frame and the run records of one sweep, from a runs folder or a W&B runs export (CSV)."""
    if (runs is None) == (wandb_csv is None):
        raise ValueError("give exactly one of a runs folder and a W&B export CSV")
    if wandb_csv is not None:
        records = [r for r in records_from_wandb(pd.read_csv(wandb_csv)) if r.get("sweep") == sweep]
    else:
        records = [r for r in find_records(runs, include_unfinished=include_unfinished) if r.get("sweep") == sweep]
    return frame_from_records(records, source="wandb" if wandb_csv is not None else "runs"), records


def wandb_target(records: Sequence[dict], project: str | None = None, entity: str | None = None
                 ) -> tuple[str, str | None]:
    """The W&B project and entity: as given, else those the sweep's runs were tracked in (logger config),
    else $WANDB_PROJECT / $WANDB_ENTITY, else project `lmm`."""
    for record in records:
        logger = ((record.get("config") or {}).get("logger") or {})
        if logger.get("name") == "wandb" or logger.get("project"):
            project, entity = project or logger.get("project"), entity or logger.get("entity")
            break
    return project or os.environ.get("WANDB_PROJECT") or "lmm", entity or os.environ.get("WANDB_ENTITY") or None


def has_data(table: Table) -> bool:
    return bool(table.values.notna().to_numpy().any())


def sweep_tables(frame: pd.DataFrame, sweep: str, *, reference: bool | None = None, benchmark: str | None = None,
                 beam: int | None = None) -> list[Table]:
    """The paper tables with data (measured beside reported when `reference`; by default for the paper's
    sweeps when no other benchmark is asked for), then the cost tables (per run, per sweep)."""
    if reference is None:
        reference = sweep in PAPER_SWEEP_NAMES and benchmark is None
    kwargs = {"sweep": [sweep], "benchmark": benchmark, "beam": beam}
    out = []
    for table in make_tables(frame, "all", **kwargs):
        if table.key in TABLE_FUNCTIONS:
            if not has_data(table):
                continue
            if reference:
                table = make_tables(frame, table.key, reference=True, **kwargs)[0]
        elif table.values.empty:
            continue
        out.append(table)
    return out


def flat_cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Column names and string cells of a table exactly as its Markdown rendering shows them."""
    frame = table.display.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(p) for p in c if str(p)) for c in frame.columns]
    frame = frame.reset_index()
    return [str(c) for c in frame.columns], [[str(v) for v in row] for row in frame.itertuples(index=False)]


# -- native W&B charts ---------------------------------------------------------------------------------


def score_size_points(frame: pd.DataFrame, benchmark: str | None, beam: int = 1) -> pd.DataFrame:
    """Mean overall score per LLM size and series (tuning method, image size, data mixing)."""
    data = overall_scores(frame, benchmark, beam).dropna(subset=["size_b", "score"])
    if data.empty:
        return pd.DataFrame(columns=["size_b", "score", "series", "size"])
    series = [f"{r['tuning_label']}{' (' + r['variant'] + ')' if r['variant'] else ''}, "
              f"{'' if pd.isna(r['image_size']) else str(int(r['image_size'])) + ' px'}"
              f"{' + mixing' if r['mixing'] else ''}" for _, r in data.iterrows()]
    data = data.assign(series=series)
    points = data.groupby(["series", "size_b", "size"], as_index=False)["score"].mean()
    return points.sort_values(["series", "size_b"]).reset_index(drop=True)[["size_b", "score", "series", "size"]]


def score_cost_points(frame: pd.DataFrame, benchmark: str | None, beam: int = 1) -> pd.DataFrame:
    """Mean overall score and stage-2 GPU-hours per node per configuration label (as in the PNG plot)."""
    data = overall_scores(frame, benchmark, beam).dropna(subset=["gpu_hours_per_node", "score"])
    if data.empty:
        return pd.DataFrame(columns=["gpu_hours_per_node", "score", "label"])
    data = data.assign(label=[point_label(r) for _, r in data.iterrows()])
    return data.groupby("label", as_index=False)[["gpu_hours_per_node", "score"]].mean()[
        ["gpu_hours_per_node", "score", "label"]]


def native_charts(frame: pd.DataFrame, benchmark: str | None, beam: int = 1) -> dict:
    """`charts/score_vs_size` (wandb.plot.line) and `charts/score_vs_cost` (wandb.plot.scatter), when
    some run has both numbers."""
    import wandb

    charts = {}
    label = f"{benchmark} overall (beam {beam})"
    size = score_size_points(frame, benchmark, beam)
    if not size.empty:
        table = wandb.Table(dataframe=size)
        charts["charts/score_vs_size"] = wandb.plot.line(table, "size_b", "score", stroke="series",
                                                         title=f"{label} vs LLM size (B parameters)")
    cost = score_cost_points(frame, benchmark, beam)
    if not cost.empty:
        table = wandb.Table(dataframe=cost)
        charts["charts/score_vs_cost"] = wandb.plot.scatter(table, "gpu_hours_per_node", "score",
                                                            title=f"{label} vs GPU-hours per node (stage 2)")
    return charts


# -- the analysis run -----------------------------------------------------------------------------------


@dataclass
class Published:
    """What one publish wrote: the W&B run id and local folder, the tables by key, the plots, the charts."""

    run_id: str
    mode: str
    run_dir: Path
    out: Path
    tables: dict[str, Table] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)


def _mode(mode: str | None) -> str:
    return mode or os.environ.get("WANDB_MODE") or "online"


def publish(sweep: str, *, runs: str | Path | None = None, wandb_csv: str | Path | None = None,
            out: str | Path | None = None, benchmark: str | None = None, beam: int | None = None,
            reference: bool | None = None, project: str | None = None, entity: str | None = None,
            mode: str | None = None) -> Published:
    """Log a sweep's tables, plots and charts into its analysis run (created, or resumed by id)."""
    import wandb

    frame, records = load_sweep(sweep, runs=runs, wandb_csv=wandb_csv)
    if frame.empty:
        raise LookupError(f"no finished run of sweep {sweep!r} in {runs if runs is not None else wandb_csv}")
    out = Path(out) if out is not None else default_out(sweep, runs, wandb_csv)
    out.mkdir(parents=True, exist_ok=True)
    # the tables as `python -m analysis.tables` makes them; the plots on one benchmark and beam
    tables = sweep_tables(frame, sweep, reference=reference, benchmark=benchmark, beam=beam)
    (out / "tables.md").write_text("\n".join(t.to_markdown() for t in tables))
    benchmark, beam = pick_benchmark(frame, benchmark), beam or 1
    plots = save_figures(frame, out / "plots", records=records, benchmark=benchmark, beam=beam)

    configure_environment(os.environ.get("LMM_CACHE_DIR") or out / ".cache")
    mode = _mode(mode)
    project, entity = wandb_target(records, project, entity)
    run_ids = sorted(frame["run_id"].dropna().unique().tolist())
    shared = wandb.run is not None  # another run of this process is open: leave W&B's service to it
    run = wandb.init(project=project, entity=entity, id=analysis_run_id(sweep), name=f"analysis-{sweep}",
                     resume="allow", group=sweep, job_type=JOB_TYPE, dir=str(out), mode=mode,
                     settings=wandb.Settings(disable_git=True, save_code=False))
    try:
        run.config.update({"sweep": sweep, "source": "wandb-csv" if wandb_csv is not None else "runs",
                           "benchmark": benchmark, "beam": beam, "run_ids": run_ids,
                           "tables": [table_name(t) for t in tables]}, allow_val_change=True)
        payload: dict = {}
        for table in tables:
            columns, rows = flat_cells(table)
            payload[table_name(table)] = wandb.Table(columns=columns, data=rows)
        payload.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        charts = native_charts(frame, benchmark, beam)
        payload.update(charts)
        run.log(payload)
        run.summary.update({"n_runs": len(run_ids), **{f"captions/{table_name(t)[7:]}": f"Table {t.key}. {t.title}"
                                                       for t in tables}})
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
        if not shared:  # the service writes the run's files out before this returns
            wandb.teardown()
    return Published(run_id=run.id, mode=mode, run_dir=run_dir, out=out,
                     tables={table_name(t): t for t in tables}, plots=list(plots), charts=list(charts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.publish", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", help="runs folder (the run store and its sweep views)")
    source.add_argument("--wandb-csv", help="a W&B runs export (CSV) instead of a runs folder")
    parser.add_argument("--sweep", required=True, help="the sweep (= the W&B group of its runs)")
    parser.add_argument("--out", help="local copies and W&B files (default <runs>/<sweep>/analysis)")
    parser.add_argument("--benchmark", help="score shown instead of each table's own (plots: llava_bench, else "
                        "the first scored)")
    parser.add_argument("--beam", type=int, help="beam size of the scores shown (default: each table's own; plots 1)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=None,
                        help="the paper's values beside (default: for the paper's sweeps)")
    parser.add_argument("--project", help="default: the runs' (logger.project), else $WANDB_PROJECT, else lmm")
    parser.add_argument("--entity", help="default: the runs' (logger.entity), else $WANDB_ENTITY")
    parser.add_argument("--mode", choices=("online", "offline"), help="default: $WANDB_MODE, else online")
    args = parser.parse_args(argv)
    try:
        done = publish(args.sweep, runs=args.runs, wandb_csv=args.wandb_csv, out=args.out,
                       benchmark=args.benchmark, beam=args.beam, reference=args.reference, project=args.project,
                       entity=args.entity, mode=args.mode)
    except LookupError as error:
        raise SystemExit(str(error)) from None
    print(f"analysis run {done.run_id} (group {args.sweep}, job type {JOB_TYPE}): {len(done.tables)} tables "
          f"({', '.join(done.tables)}), {len(done.plots)} plots, {len(done.charts)} W&B charts")
    if done.mode == "offline":
        print(f"offline: upload with  wandb sync {done.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
