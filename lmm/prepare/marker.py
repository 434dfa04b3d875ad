"""Markers of finished work: a data set counts as prepared only once every file is fetched, unpacked and checked."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MARKER_VERSION = 1


def _done(state: Path, name: str) -> Path:
    return Path(state) / "done" / f"{name}.json"


def _started(state: Path, name: str) -> Path:
    return Path(state) / "started" / name


def count_files(folder: Path) -> int:
    """Files below a folder (names only, no stat: cheap even for 558K images); `.part` files do not count."""
    n = 0
    for _, _, files in os.walk(folder):
        n += sum(1 for f in files if not f.endswith(".part"))
    return n


def mark_started(state: Path, name: str) -> None:
    path = _started(state, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    _done(state, name).unlink(missing_ok=True)


def was_started(state: Path, name: str) -> bool:
    """True while a prepare of `name` has begun and not finished (or was interrupted)."""
    return _started(state, name).exists() and not _done(state, name).exists()


def write_done(state: Path, name: str, files: dict[str, int], folders: dict[str, int], sources: list[str],
               destinations: list[str]) -> Path:
    """Record the prepared files (path -> bytes) and unpacked folders (path -> file count), written last;
    `destinations`: the paths the config named when they were prepared."""
    path = _done(state, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": MARKER_VERSION, "name": name, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "sources": sources, "destinations": destinations, "files": files, "folders": folders}
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    _started(state, name).unlink(missing_ok=True)
    return path


def read_done(state: Path, name: str) -> dict | None:
    path = _done(state, name)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("version") == MARKER_VERSION else None


def done_problems(state: Path, name: str, destinations: list[str]) -> list[str] | None:
    """None when there is no marker; else what no longer matches it (empty: everything is as prepared).

    The config must name the same destinations; files must have their recorded size; unpacked folders at least
    their recorded number of files.
    """
    body = read_done(state, name)
    if body is None:
        return None
    problems = []
    moved = sorted(set(destinations) - set(body.get("destinations", [])))
    if moved:
        problems.append(f"the config now names {', '.join(moved)}")
    for file, size in body.get("files", {}).items():
        try:
            actual = os.path.getsize(file)
        except OSError:
            problems.append(f"{file} is missing")
            continue
        if actual != size:
            problems.append(f"{file} has {actual} bytes, {size} when prepared")
    for folder, count in body.get("folders", {}).items():
        actual = count_files(Path(folder)) if Path(folder).is_dir() else 0
        if actual < count:
            problems.append(f"{folder} holds {actual} files, {count} when prepared")
    return problems
