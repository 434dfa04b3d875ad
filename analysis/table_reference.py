"""The paper's reported tables, and measured tables shown beside them ("<column> (paper)")."""

from __future__ import annotations

import pandas as pd

from analysis.table_render import DASH, Table, fmt_score, fmt_score_std

QUOTED_MARK = "†"
SOURCE_NOTE = "Reported values: the paper (Lu et al., arXiv 2309.09958)."


def add_baselines(table: Table, key: str, baseline: pd.DataFrame, names: dict) -> Table:
    """The rows of other systems (`baseline`: analysis.reference.baseline_rows) added to the paper's table `key`;
    `names` maps their metric or benchmark names to the table's columns."""
    values, display = table.values, table.display
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
