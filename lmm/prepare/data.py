"""`prepare data`: fetch, check, unpack and lay out one catalogue entry where the composed config reads it."""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from lmm.prepare import hub, marker, urls
from lmm.prepare.archive import _safe_relative, unpack
from lmm.prepare.errors import PrepareError
from lmm.prepare.layout import compose_for, config_path, state_dir
from lmm.prepare.sources import Dest, Entry, HubSource, UrlListSource, UrlSource
from lmm.prepare.space import human, require_space


@dataclass
class Step:
    """One file to put in place: where it comes from, where it goes, and whether it is already there."""

    source: object
    dest: Dest
    target: Path
    name: str  # path in the repo, file name of the URL, or the listed value
    size: Optional[int] = None
    info: Optional[hub.HubFileInfo] = None
    commit: str = ""
    present: bool = False


@dataclass
class Result:
    name: str
    status: str  # "present" | "prepared" | "planned"
    fetched_bytes: int = 0
    steps: list[Step] = field(default_factory=list)


def target_path(cfg: DictConfig, dest: Dest, name: str) -> Path:
    """Where a fetched file lands: the config key's path, or a path below the folder it names."""
    base = config_path(cfg, dest.key)
    if dest.kind in ("file", "unpack"):
        return base
    rel = _safe_relative(dest.subpath.format(value=name) if dest.subpath else name)
    if rel is None:
        raise PrepareError(f"refusing to write {name!r} outside {base}")
    return base / rel


def python_string(path: Path, name: str) -> str:
    """The string literal assigned to the module-level `name` of a Python file (parsed, never executed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise PrepareError(f"{path}: no string is assigned to {name!r} (the upstream file changed)")


def _write_text(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with open(part, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(part, target)


def _place(src: Path, target: Path) -> None:
    """Move a finished download into place (a copy through `.part` when it crosses filesystems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, target)
    except OSError:
        part = target.with_name(target.name + ".part")
        shutil.copyfile(src, part)
        os.replace(part, target)
        src.unlink()


def _download_name(url: str) -> str:
    return f"{hashlib.sha1(url.encode()).hexdigest()[:10]}-{url.rstrip('/').rsplit('/', 1)[-1]}"


def _is_present(step: Step) -> bool:
    """A plain file already in place with the right size and checksum (shared files such as rule.json, re-runs)."""
    if step.dest.kind == "unpack" or not step.target.is_file():
        return False
    if step.info is not None:
        return hub.check_file(step.target, step.info) is None
    source = step.source
    if isinstance(source, UrlSource):
        if source.python_string or not (source.size or source.sha256 or source.md5):
            return False  # nothing to check it against: fetch again (these files are small)
        return urls.check_file(step.target, source.size, source.sha256, source.md5) is None
    return step.target.stat().st_size > 0  # a listed image: present and not empty


def destination_roots(entry: Entry, cfg: DictConfig) -> list[str]:
    """The paths the entry's destination keys name in this config (a marker is valid only for these)."""
    return [str(config_path(cfg, key)) for key in entry.dest_keys()]


def plan(entry: Entry, cfg: DictConfig) -> list[Step]:
    """The files of an entry with their sizes and destinations (Hub listings and HEAD requests; no download)."""
    steps: list[Step] = []
    for source in entry.sources:
        if isinstance(source, HubSource):
            commit, listing = hub.list_files(source.repo_id, source.repo_type, source.revision)
            for hub_file in source.files:
                paths = hub.matching(sorted(listing), hub_file.pattern)
                if not paths:
                    raise PrepareError(f"{source.label}: no file matches {hub_file.pattern!r} (the repo changed?); "
                                       f"see {hub.web_url(source.repo_id, source.repo_type)}")
                for path in paths:
                    info = listing[path]
                    steps.append(Step(source, hub_file.dest, target_path(cfg, hub_file.dest, path), path,
                                      info.size, info, commit))
        elif isinstance(source, UrlSource):
            size = source.size if source.size is not None else urls.remote_size(source.url)
            steps.append(Step(source, source.dest, target_path(cfg, source.dest, source.filename), source.filename,
                              size))
    for step in steps:
        step.present = _is_present(step)
    return steps


def _space_needs(entry: Entry, steps: Sequence[Step], state: Path) -> list[tuple[Path, int, str]]:
    needs = []
    for step in steps:
        if step.present or not step.size:
            continue
        needs.append((state, step.size, step.name))
        if step.dest.kind == "unpack":
            needs.append((step.target, entry.unpacked_bytes or step.size, f"unpacked {step.name}"))
    return needs


def _finish(step: Step, downloaded: Path, keep_archives: bool, progress: bool) -> None:
    """Put a checked download in place: move it, unpack it, or extract the string it holds."""
    source = step.source
    if step.dest.kind == "unpack":
        n = unpack(downloaded, step.target, step.dest.strip, step.dest.include, progress=progress)
        print(f"  unpacked {n} files into {step.target}")
        if not keep_archives:
            downloaded.unlink(missing_ok=True)
    elif isinstance(source, UrlSource) and source.python_string:
        _write_text(step.target, python_string(downloaded, source.python_string))
    else:
        _place(downloaded, step.target)


def _fetch_hub(entry: Entry, steps: Sequence[Step], state: Path, keep_archives: bool, progress: bool) -> int:
    fetched = 0
    by_repo: dict[tuple, list[Step]] = {}
    for step in steps:
        if isinstance(step.source, HubSource) and not step.present:
            by_repo.setdefault((step.source.repo_id, step.source.repo_type, step.commit), []).append(step)
    for (repo_id, repo_type, commit), group in by_repo.items():
        staging = state / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
        print(f"{entry.name}: fetching {len(group)} file(s), {human(sum(s.size or 0 for s in group))}, from "
              f"{group[0].source.label}")
        folder = hub.snapshot(repo_id, repo_type, commit, [s.name for s in group], local_dir=staging)
        for step in group:
            downloaded = folder / step.name
            problem = hub.check_file(downloaded, step.info)
            if problem is not None:
                downloaded.unlink(missing_ok=True)
                raise PrepareError(f"{repo_id}/{step.name}: the download {problem}; it was deleted, run the same "
                                   "command again to download it afresh")
            fetched += downloaded.stat().st_size
            _finish(step, downloaded, keep_archives, progress)
    return fetched


def _fetch_url(entry: Entry, step: Step, state: Path, keep_archives: bool, progress: bool) -> int:
    source = step.source
    final = state / "downloads" / _download_name(source.url)
    if final.is_file() and urls.check_file(final, step.size, source.sha256, source.md5) is None:
        print(f"{entry.name}: {source.filename} already downloaded ({final})")
        fetched = 0
    else:
        print(f"{entry.name}: downloading {source.url} ({human(step.size)})")
        urls.download(source.url, final, step.size, source.sha256, source.md5, progress=progress)
        fetched = final.stat().st_size
    _finish(step, final, keep_archives, progress)
    return fetched


def _fetch_listed(entry: Entry, source: UrlListSource, cfg: DictConfig, progress: bool) -> tuple[list[Step], int]:
    """Fetch one URL per distinct value of a field of an already prepared JSON-lines file."""
    import json

    listing = config_path(cfg, source.listing_key) / source.listing_file
    values: list[str] = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        if line.strip():
            value = str(json.loads(line)[source.field])
            if value not in values:
                values.append(value)
    steps, fetched = [], 0
    for value in values:
        step = Step(source, source.dest, target_path(cfg, source.dest, value), value)
        step.present = _is_present(step)
        if not step.present:
            urls.download(source.url.format(value=value), step.target, progress=progress)
            fetched += step.target.stat().st_size
        steps.append(step)
    print(f"{entry.name}: {len(values)} files listed in {listing.name} ({fetched and human(fetched) or 'none'} "
          "downloaded)")
    return steps, fetched


def prepare_entry(entry: Entry, overrides: Sequence[str] = (), *, keep_archives: bool = False, force: bool = False,
                  dry_run: bool = False, progress: bool = True,
                  show_plan: Optional[Callable[[Entry, list[Step]], None]] = None) -> Result:
    """Prepare one entry; a second call finds its marker and does nothing (no network)."""
    cfg = compose_for(entry, overrides)
    state = state_dir(config_path(cfg, "paths.data_dir"))
    destinations = destination_roots(entry, cfg)
    if not force:
        problems = marker.done_problems(state, entry.name, destinations)
        if problems == []:
            print(f"{entry.name}: already prepared (marker {state / 'done' / (entry.name + '.json')}); "
                  "`python -m lmm.prepare verify` checks it in depth")
            return Result(entry.name, "present")
        if problems:
            print(f"{entry.name}: changed since it was prepared ({'; '.join(problems[:3])}); preparing it again")
    hub.require_online()
    steps = plan(entry, cfg)
    if show_plan is not None:
        show_plan(entry, steps)
    if dry_run:
        return Result(entry.name, "planned", steps=steps)
    require_space(_space_needs(entry, steps, state), entry.name)
    marker.mark_started(state, entry.name)
    fetched = _fetch_hub(entry, steps, state, keep_archives, progress)
    for step in steps:
        if isinstance(step.source, UrlSource) and not step.present:
            fetched += _fetch_url(entry, step, state, keep_archives, progress)
        elif step.present:
            print(f"{entry.name}: {step.target} already in place")
    for source in entry.sources:
        if isinstance(source, UrlListSource):
            listed, n = _fetch_listed(entry, source, cfg, progress)
            steps += listed
            fetched += n
    files = {str(s.target): s.target.stat().st_size for s in steps if s.dest.kind != "unpack"}
    for check in entry.checks:  # files inside unpacked folders that the checks read (mm-vet.json)
        path = config_path(cfg, check.key) / check.file if check.file else config_path(cfg, check.key)
        if path.is_file():
            files[str(path)] = path.stat().st_size
    folders = {str(s.target): marker.count_files(s.target) for s in steps if s.dest.kind == "unpack"}
    done = marker.write_done(state, entry.name, files, folders, [s.label for s in entry.sources], destinations)
    print(f"{entry.name}: prepared ({human(fetched)} downloaded; marker {done})")
    return Result(entry.name, "prepared", fetched, steps)
