"""`prepare verify`: record counts against the published ones, images referenced against present and readable."""

from __future__ import annotations

import csv
import glob
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm.prepare import marker
from lmm.prepare.layout import compose_for, config_path, state_dir
from lmm.prepare.sources import Entry, Records


@dataclass
class Row:
    check: str
    found: str
    expected: str
    ok: bool


class Unreadable(ValueError):
    """A prepared file that does not parse (truncated, damaged)."""


def load_records(path: Path) -> list:
    """The records of a prepared file: JSON list items / object values, JSON lines, TSV or CSV rows."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise Unreadable(f"{path} is not UTF-8 text ({err})") from None
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as err:
                    raise Unreadable(f"{path} line {number} is not valid JSON ({err}): truncated or damaged") from None
        return out
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise Unreadable(f"{path} is not valid JSON ({err}): truncated or damaged") from None
        return list(data.values()) if isinstance(data, dict) else data if isinstance(data, list) else [data]
    if path.suffix in (".tsv", ".csv"):
        csv.field_size_limit(sys.maxsize)
        delimiter = "\t" if path.suffix == ".tsv" else ","
        try:
            if path.suffix == ".tsv":  # a header row, then one row per record
                rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
                short = [i for i, r in enumerate(rows, 2) if None in r.values()]
            else:  # Hendrycks' MMLU: no header; question, 4 options, answer
                rows = [r for r in csv.reader(text.splitlines(keepends=True)) if r]
                short = [i for i, r in enumerate(rows, 1) if len(r) < 6]
        except csv.Error as err:
            raise Unreadable(f"{path} is not valid {path.suffix[1:].upper()} ({err})") from None
        if short:
            raise Unreadable(f"{path} row {short[0]} has fewer columns than it should: truncated or damaged")
        return rows
    if not text.strip():
        raise Unreadable(f"{path} is empty")
    return [text]


def _check_file(cfg: DictConfig, check: Records) -> Path:
    base = config_path(cfg, check.key)
    return base / check.file if check.file else base


def _image_paths(folder: Path, names: Sequence[str], prefixes: Sequence[str]) -> tuple[list[Path], list[str]]:
    from lmm.data.images import image_in_folder

    present, missing = [], []
    for name in names:
        found = None
        for prefix in prefixes:
            path = image_in_folder(folder, prefix + name)
            if path is not None and path.is_file():
                found = path
                break
        (present.append(found) if found is not None else missing.append(name))
    return present, missing


def _decode(cfg: DictConfig, folder: Path, paths: list[Path]) -> list[tuple[Path, str]]:
    """(path, reason) of the images that do not decode, through the training start-up check and its cache (so a
    run started after `verify` does not decode them again)."""
    from lmm.data.images import ImageCheckCache, check_images
    from lmm.filelock import exclusive
    from lmm.training.data import image_check_cache

    cache_file = image_check_cache(cfg, OmegaConf.create({"image_folder": str(folder)}))
    with exclusive(Path(f"{cache_file}.lock")):
        reasons = check_images(paths, ImageCheckCache(cache_file))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def run_check(cfg: DictConfig, entry: Entry, check: Records, decode: bool = True,
              overrides: Sequence[str] = ()) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    problems: list[str] = []
    command = " ".join(["python -m lmm.prepare data", entry.name, *overrides])
    fix = f"{command} --force"
    path = _check_file(cfg, check)
    files = sorted(Path(p) for p in glob.glob(str(path))) if glob.has_magic(check.file) else [path]
    label = f"{check.what} ({path.name if not glob.has_magic(check.file) else check.file})"
    if not files or not all(f.is_file() for f in files):
        rows.append(Row(label, "missing", "present", False))
        return rows, [f"{entry.name}: {path} is missing (fetch: {command})"]
    if check.expected_files is not None:
        ok = len(files) == check.expected_files
        rows.append(Row(f"files {check.file}", str(len(files)), str(check.expected_files), ok))
        if not ok:
            problems.append(f"{entry.name}: {len(files)} files match {path}, published {check.expected_files} "
                            f"(fix: {fix})")
    records: list = []
    try:
        for f in files:
            records += load_records(f)
    except Unreadable as err:
        rows.append(Row(label, "unreadable", "valid", False))
        return rows, [f"{entry.name}: {err} (fix: {fix})"]
    if check.required_keys:
        data = json.loads(path.read_text(encoding="utf-8"))
        lacking = [k for k in check.required_keys if not isinstance(data, dict) or k not in data]
        rows.append(Row(label, f"{len(data)} keys", "keys " + ", ".join(check.required_keys), not lacking))
        if lacking:
            problems.append(f"{entry.name}: {path} lacks {', '.join(lacking)} (fix: {fix})")
        return rows, problems
    expected = "n/a (none published)" if check.expected is None else f"{check.expected:,}"
    ok = check.expected is None or len(records) == check.expected
    rows.append(Row(label, f"{len(records):,}", expected, ok))
    if not ok:
        problems.append(f"{entry.name}: {path} has {len(records):,} {check.what}, published {check.expected:,} "
                        f"(truncated or a different version?) (fix: {fix})")
    if check.images is not None:
        folder = config_path(cfg, check.images) / check.images_sub
        names = list(dict.fromkeys(str(r[check.image_field]) for r in records
                                   if isinstance(r, dict) and r.get(check.image_field)))
        want = "n/a" if check.expected_images is None else f"{check.expected_images:,}"
        ok = check.expected_images is None or len(names) == check.expected_images
        rows.append(Row("images referenced", f"{len(names):,}", want, ok))
        if not ok:
            problems.append(f"{entry.name}: {path} names {len(names):,} images, published {check.expected_images:,}")
        present, missing = _image_paths(folder, names, check.image_prefixes)
        rows.append(Row(f"images present in {folder.name}/", f"{len(present):,}", f"{len(names):,}", not missing))
        if missing:
            problems.append(f"{entry.name}: {len(missing):,} of {len(names):,} images referenced by {path.name} are "
                            f"missing from {folder} (e.g. {missing[0]}) (fix: {fix})")
        if decode and present:
            bad = _decode(cfg, folder, present)
            rows.append(Row("images unreadable", f"{len(bad):,}", "0", not bad))
            if bad:
                problems.append(f"{entry.name}: {len(bad):,} images in {folder} do not decode (e.g. {bad[0][0]}: "
                                f"{bad[0][1]}) (fix: {fix})")
    return rows, problems


def verify_entry(entry: Entry, overrides: Sequence[str] = (), decode: bool = True) -> tuple[list[Row], list[str]]:
    """(table rows, problems) for one prepared entry."""
    cfg = compose_for(entry, overrides)
    state = state_dir(config_path(cfg, "paths.data_dir"))
    rows: list[Row] = []
    problems: list[str] = []
    if marker.was_started(state, entry.name):
        rows.append(Row("prepare", "started, not finished", "finished", False))
        command = " ".join(["python -m lmm.prepare data", entry.name, *overrides])
        problems.append(f"{entry.name}: an earlier `{command}` did not finish; run it again")
    for check in entry.checks:
        more_rows, more = run_check(cfg, entry, check, decode, overrides)
        rows += more_rows
        problems += more
    return rows, problems


def is_prepared(entry: Entry, overrides: Sequence[str] = ()) -> bool:
    """Whether anything of the entry is on disk (a marker, or a destination that exists)."""
    cfg = compose_for(entry, overrides)
    state = state_dir(config_path(cfg, "paths.data_dir"))
    if marker.read_done(state, entry.name) is not None or marker.was_started(state, entry.name):
        return True
    return any(config_path(cfg, key).exists() for key in entry.dest_keys())


def render(title: str, rows: Sequence[Row], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("check", "found", "published / expected", ""):
        table.add_column(column)
    for row in rows:
        table.add_row(row.check, row.found, row.expected, "[green]ok[/]" if row.ok else "[red]FAIL[/]")
    (console or Console()).print(table)

