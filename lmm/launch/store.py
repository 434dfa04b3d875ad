"""The run store and its sweep views: each run lives once in runs/stage2/<id>; runs/<sweep>/<id> links to it.

A configuration is trained once however many sweeps (paper tables) use it. A sweep is a view: a folder
of relative symbolic links into the store, which `lmm.sweep status` and the analysis read as that sweep's
runs. `migrate` moves run folders of the older layout (runs/<sweep>/<id> as real folders) into the store
without retraining anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lmm.launch.identity import STAGE2_STORE, STORES
from lmm.launch.rundir import is_locked
from lmm.layout import CHECKPOINTS_DIR, CONFIG_FILE, DONE_FILE, eval_dir
from lmm.records import RECORD_FILE, is_done, read_record, write_record

log = logging.getLogger(__name__)
# Duplicate trainings found by `migrate` are kept here (never deleted): runs/.migrated/<sweep>-<id>.
MIGRATED = ".migrated"


def link_into_sweep(folder: Path, view: Path) -> None:
    """Make `view` (runs/<sweep>/<run_id>) a relative link to the run's store folder; idempotent.

    A real folder already at `view` (the older layout) is left alone: `python -m lmm.sweep migrate`.
    """
    view.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(folder, view.parent)
    if view.is_symlink():
        if os.readlink(view) == target:
            return
        view.unlink()
    elif view.exists():
        return
    tmp = view.with_name(f".{view.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, view)  # atomic: a reader sees the old link or the new one


def sweep_folders(runs_dir: Path) -> list[Path]:
    """The sweep views under a runs folder (every folder but the stores and hidden ones)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir()
                  if p.is_dir() and not p.is_symlink() and p.name not in STORES and not p.name.startswith("."))


def memberships(runs_dir: Path) -> dict[Path, list[str]]:
    """Resolved run folder → the sweeps whose view links to it."""
    out: dict[Path, list[str]] = {}
    for sweep in sweep_folders(runs_dir):
        for entry in sorted(sweep.iterdir()):
            if entry.is_symlink() and entry.is_dir():
                out.setdefault(entry.resolve(), []).append(sweep.name)
    return out


@dataclass
class MigrationReport:
    moved: list[str] = field(default_factory=list)  # sweep/id moved into the store
    merged: list[str] = field(default_factory=list)  # sweep/id duplicates of a stored run: scores merged
    skipped: list[str] = field(default_factory=list)  # sweep/id left alone, with the reason

    def summary(self) -> str:
        lines = [f"{len(self.moved)} run folder(s) moved into {STAGE2_STORE}/, {len(self.merged)} duplicate "
                 f"training(s) folded into the stored run (kept under {MIGRATED}/), {len(self.skipped)} skipped"]
        lines += [f"  moved   {x}" for x in self.moved]
        lines += [f"  merged  {x}" for x in self.merged]
        lines += [f"  skipped {x}" for x in self.skipped]
        return "\n".join(lines)


def _is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in (RECORD_FILE, CONFIG_FILE, CHECKPOINTS_DIR, DONE_FILE))


def _merge_scores(kept: Path, duplicate: Path) -> None:
    """Scores (and their eval folders) that only the duplicate has are added to the kept run."""
    if not (is_done(kept) and is_done(duplicate)):
        return
    record, other = read_record(kept), read_record(duplicate)
    scores = record.get("eval") or {}
    for benchmark, by_beam in (other.get("eval") or {}).items():
        for beam, score in (by_beam or {}).items():
            if beam not in scores.get(benchmark, {}):
                scores.setdefault(benchmark, {})[beam] = score
                source = eval_dir(duplicate, benchmark, beam)
                if source.is_dir() and not eval_dir(kept, benchmark, beam).exists():
                    shutil.copytree(source, eval_dir(kept, benchmark, beam))
    record["eval"] = scores
    write_record(kept, record)


def migrate(runs_dir: Path) -> MigrationReport:
    """Move runs/<sweep>/<id> folders into runs/stage2/<id> and link them back; nothing is retrained.

    When two sweeps trained the same configuration, the finished one is kept in the store (the first
    one found when both are), the other's scores are merged into it and the folder is kept under
    runs/.migrated/. Running runs (a held lock) are skipped; re-running is a no-op.
    """
    runs_dir = Path(runs_dir).resolve()
    store = runs_dir / STAGE2_STORE
    report = MigrationReport()
    for sweep in sweep_folders(runs_dir):
        for folder in sorted(p for p in sweep.iterdir() if p.is_dir() and not p.is_symlink()):
            name = f"{sweep.name}/{folder.name}"
            if folder.name.startswith(".") or not _is_run_folder(folder):
                continue
            if is_locked(folder):
                report.skipped.append(f"{name}: running (its lock is held); migrate again when it ends")
                continue
            target = store / folder.name
            if not target.exists():
                store.mkdir(parents=True, exist_ok=True)
                folder.rename(target)
                report.moved.append(name)
            else:
                keep_duplicate = is_done(folder) and not is_done(target)
                kept, duplicate = (folder, target) if keep_duplicate else (target, folder)
                _merge_scores(kept, duplicate)
                aside = runs_dir / MIGRATED / f"{sweep.name}-{folder.name}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                duplicate.rename(aside)
                if keep_duplicate:
                    folder.rename(target)
                report.merged.append(name)
            link_into_sweep(target, folder)
    if report.moved or report.merged:
        (runs_dir / MIGRATED).mkdir(exist_ok=True)
        with open(runs_dir / MIGRATED / "log.jsonl", "a") as handle:
            handle.write(json.dumps({"moved": report.moved, "merged": report.merged}) + "\n")
    return report
