"""Rendering of regenerated tables: number formats, and the `Table` object as Markdown, LaTeX or HTML.

A table's cells arrive as numbers (`values`, NaN where no run) and as the strings shown (`display`: "–"
where no run, never a made-up number; `27.0 ± 3.1` where a 95 % interval is known). The layouts that fill
them live in analysis/table_layouts.py.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

DASH = "–"
CHECK, CROSS = "✓", "×"

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



def fmt_estimate(estimate) -> str:
    """An `analysis.intervals.Estimate` as `27.0 ± 3.1` ("–" for None)."""
    return DASH if estimate is None else estimate.format()

# -- the Table object -------------------------------------------------------------------------------


@dataclass
class Table:
    """One regenerated table: numbers, the strings shown, a title and notes."""

    key: str
    title: str
    values: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    # "Table 3a" by default; a table that is not one of the paper's names itself (e.g. "Findings")
    heading: str = ""
    # cells of text (the findings table) read better left-aligned; numbers are right-aligned
    text_cells: bool = False

    @property
    def name(self) -> str:
        return self.heading or f"Table {self.key}"

    def _flat(self) -> pd.DataFrame:
        frame = self.display.copy()
        if isinstance(frame.columns, pd.MultiIndex):
            frame.columns = [" ".join(str(p) for p in c if str(p)) for c in frame.columns]
        return frame.reset_index()

    def to_markdown(self) -> str:
        flat = self._flat()
        cells = "left" if self.text_cells else "right"
        align = ("left",) * self.display.index.nlevels + (cells,) * self.display.shape[1]
        # numbers are already formatted ("72.0", "–"): tabulate must not re-parse them
        empty = not len(flat) or not self.display.shape[1]
        body = "_(no runs)_" if empty else flat.to_markdown(index=False, disable_numparse=True, colalign=align)
        notes = "".join(f"\n\n{n}" for n in self.notes)
        return f"**{self.name}.** {self.title}\n\n{body}{notes}\n"

    def to_latex(self) -> str:
        frame = self.display.copy()
        frame = frame.map(_latex_text)
        frame.index = _latex_index(frame.index)
        frame.columns = _latex_index(frame.columns)
        styler = frame.style
        body = styler.to_latex(hrules=True, caption=_latex_text(f"{self.name}: {self.title}"),
                               multicol_align="c", sparse_index=False,
                               column_format="l" * frame.index.nlevels + ("p{5cm}" if self.text_cells else "r")
                               * frame.shape[1])
        notes = "".join(f"% {n}\n" for n in self.notes)
        return notes + body

    def to_html(self) -> str:
        styler = self.display.style.set_caption(html.escape(f"{self.name}: {self.title}"))
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

