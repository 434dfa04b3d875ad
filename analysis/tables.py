"""The paper's tables from run records, as Markdown, LaTeX or HTML: the command line and the public names.

The table definitions (one layout function per table, and the registry `TABLES`: id, layout, benchmark,
paper sweep) are in analysis/table_layouts.py; rendering (`Table`, number formats, Markdown/LaTeX/HTML)
in analysis/table_render.py; the paper's reported tables and side-by-side views in
analysis/table_reference.py; the findings table of a study in analysis/findings.py. This module keeps
the names other code imports (`from analysis import tables; tables.table4(...)`) and the CLI.

    python -m analysis.tables --runs runs --table 4 --format md [--reference] [--sweep table4]
    python -m analysis.tables --runs runs --table all --benchmark synthetic   # a toy study on tiny runs
    python -m analysis.tables --runs runs --table findings --sweep toy        # the paper's findings, measured
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from analysis.collect import collect, collect_wandb_csv
from analysis.table_layouts import (  # noqa: F401  (the public names of analysis.tables)
    LLAVA_BENCH_COLUMNS,
    MMBENCH_COLUMNS,
    MMVET_COLUMNS,
    PAPER_SWEEPS,
    QUALIFIERS,
    TABLE4_ROWS,
    TABLE5_BENCHMARKS,
    TABLE_FUNCTIONS,
    TABLES,
    TOY_TABLE5_BENCHMARKS,
    TableSpec,
    base_llm_label,
    cost_table,
    reported_table,
    select,
    size_column,
    sweep_cost_table,
    table1,
    table2,
    table3a,
    table3b,
    table4,
    table4_setting,
    table5,
    trained_here,
)
from analysis.table_reference import (  # noqa: F401
    QUOTED_MARK,
    SOURCE_NOTE,
    _paper_column,
    with_reference,
)
from analysis.table_render import (  # noqa: F401
    CHECK,
    CROSS,
    DASH,
    Table,
    fmt_estimate,
    fmt_params_b,
    fmt_score,
    fmt_score_std,
    fmt_small,
)

# -- all tables and the CLI --------------------------------------------------------------------------

TABLE_CHOICES = ("1", "2", "3", "3a", "3b", "4", "5", "cost", "findings", "all")


def table_keys(which: str) -> list[str]:
    return {"all": ["1", "2", "3a", "3b", "4", "5", "cost"], "3": ["3a", "3b"]}.get(which, [which])


def make_tables(frame: pd.DataFrame, which: str = "all", *, reference: bool = False, sweep=None,
                benchmark: str | None = None, beam: int | None = None) -> list[Table]:
    """The tables asked for (`1`, `2`, `3` = 3a + 3b, `3a`, `3b`, `4`, `5`, `cost` = per run + per sweep,
    `findings` = the paper's findings measured on the runs, `all` = every paper table and cost). `benchmark`/
    `beam` override the score each table shows (e.g. `synthetic` for a toy study: its Table 5 then shows the
    synthetic images' score beside the text-only split's)."""
    tables = []
    for key in table_keys(which):
        if key == "cost":
            tables += [cost_table(frame, sweep=sweep), sweep_cost_table(frame, sweep=sweep)]
            continue
        if key == "findings":
            from analysis.findings import findings_table

            tables.append(findings_table(frame, sweep=sweep, **({"beam": beam} if beam is not None else {})))
            continue
        kwargs: dict = {"sweep": sweep, "reference": reference}
        if benchmark is not None and key != "5":
            kwargs["benchmark"] = benchmark
        if benchmark == "synthetic" and key == "5":
            kwargs["benchmarks"] = TOY_TABLE5_BENCHMARKS
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
        tables = [reported_table(key) for key in table_keys(args.table) if key in TABLES]
    else:
        frame = collect_wandb_csv(args.wandb_csv) if args.wandb_csv else collect(args.runs)
        tables = make_tables(frame, args.table, reference=args.reference, sweep=args.sweep,
                             benchmark=args.benchmark, beam=args.beam)
    sys.stdout.write("\n".join(t.render(args.format) for t in tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
