"""The run store and its sweep views: each run lives once in runs/stage2/<id>; runs/<sweep>/<id> links to it.

A configuration is trained once however many sweeps (paper tables) use it. A sweep is a view: a folder
of relative symbolic links into the store, which `lmm.sweep status` and the analysis read as that sweep's
runs. `migrate` moves run folders of the older layout (runs/<sweep>/<id> as real folders) into the store,
and renames stored runs whose id the current code computes differently, without retraining anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmm.atomic import write_text_atomic
from lmm.launch.identity import STAGE1_STORE, STAGE2_STORE, STORES, stage1_id, stage2_id
from lmm.launch.identity import runs_dir as runs_folder
from lmm.launch.rundir import is_locked
from lmm.layout import CHECKPOINTS_DIR, CONFIG_FILE, DONE_FILE, JOBS_FILE, WANDB_ID_FILE, eval_dir
from lmm.records import RECORD_FILE, is_done, read_record, write_record
from lmm.tracking import wandb_run_id

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


def sweep_links(runs_dir: Path) -> dict[Path, list[Path]]:
    """Resolved run folder → the links of the sweep views that point to it."""
    out: dict[Path, list[Path]] = {}
    for sweep in sweep_folders(runs_dir):
        for entry in sorted(sweep.iterdir()):
            if entry.is_symlink() and entry.is_dir():
                out.setdefault(entry.resolve(), []).append(entry)
    return out


def memberships(runs_dir: Path) -> dict[Path, list[str]]:
    """Resolved run folder → the sweeps whose view links to it."""
    return {folder: [link.parent.name for link in links] for folder, links in sweep_links(runs_dir).items()}


@dataclass
class MigrationReport:
    moved: list[str] = field(default_factory=list)  # sweep/id moved into the store
    merged: list[str] = field(default_factory=list)  # sweep/id duplicates of a stored run: scores merged
    renamed: list[str] = field(default_factory=list)  # store/old id -> new id: stored under an out-of-date id
    skipped: list[str] = field(default_factory=list)  # sweep/id or store/id left alone, with the reason

    def summary(self) -> str:
        lines = [f"{len(self.moved)} run folder(s) moved into {STAGE2_STORE}/, {len(self.merged)} duplicate "
                 f"training(s) folded into the stored run (kept under {MIGRATED}/), {len(self.renamed)} stored "
                 f"run(s) renamed to their current id, {len(self.skipped)} skipped"]
        lines += [f"  moved   {x}" for x in self.moved]
        lines += [f"  merged  {x}" for x in self.merged]
        lines += [f"  renamed {x}" for x in self.renamed]
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


def _stored_ids(folder: Path, store: str) -> tuple[str, str] | None:
    """(the id that hashed every recipe, the current id) of a stored run, from the resolved config it saved.

    By its store, not the config's stage.name: a stage=both job saves its stage-2 config in stage 1's folder too.
    """
    if not (folder / CONFIG_FILE).is_file():
        return None
    cfg = OmegaConf.load(folder / CONFIG_FILE)
    stage_id = stage1_id if store == STAGE1_STORE else stage2_id
    return stage_id(cfg, recipes=True), stage_id(cfg)


def _repoint_record(folder: Path, renamed: dict[str, str]) -> None:
    """Rewrite the renamed run ids a record holds: its own, its stages' summaries', its stage-1 pointer's."""
    try:
        record = read_record(folder)
    except (OSError, ValueError):  # none, or corrupt (`lmm.sweep status` says so): no id in it to rewrite
        return
    before = json.dumps(record, sort_keys=True)
    summaries = [s for s in (record.get("stages") or {}).values() if isinstance(s, dict)]
    pointer = record.get("stage1") if isinstance(record.get("stage1"), dict) else None
    for entry in [record, *summaries, *([pointer] if pointer else [])]:
        if entry.get("run_id") in renamed:
            entry["run_id"] = renamed[entry["run_id"]]
    if pointer and pointer.get("folder") and Path(pointer["folder"]).name in renamed:
        # The folder as recorded (its runs folder may be mounted elsewhere now): only its name changes.
        pointer["folder"] = str(Path(pointer["folder"]).with_name(renamed[Path(pointer["folder"]).name]))
    if json.dumps(record, sort_keys=True) != before:
        write_record(folder, record)


def _repoint_jobs(old: Path, new: Path) -> None:
    """The job log paths in jobs.jsonl lie inside the run folder (jobs/<job id>/): they follow it."""
    path = new / JOBS_FILE
    if path.is_file():
        path.write_text(path.read_text().replace(f"{old}/", f"{new}/"))


def _rename_run(folder: Path, new_id: str, links: list[Path]) -> Path:
    """Rename a stored run to its new id and make each sweep view's link follow it under the new name.

    The W&B id it was tracked under is kept in the folder (unless an earlier rename kept one): a resumed
    training and the scores logged later go on in that W&B run, finished or not.
    """
    if not (folder / WANDB_ID_FILE).exists():
        write_text_atomic(folder / WANDB_ID_FILE, wandb_run_id(folder.name) + "\n")
    target = folder.with_name(new_id)
    folder.rename(target)
    _repoint_jobs(folder, target)
    for link in links:
        link.unlink()
        link_into_sweep(target, link.with_name(new_id))
    return target


def _stored_runs(runs_dir: Path, store: str) -> list[Path]:
    folder = runs_dir / store
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _rename_out_of_date(runs_dir: Path, report: MigrationReport) -> None:
    """Rename stored stage-1 and stage-2 runs whose saved config gives another id than their folder's name.

    Stage 1 first, so that the stage-2 records met afterwards can be pointed at their stage 1's new name.
    """
    links = sweep_links(runs_dir)
    renamed: dict[str, str] = {}  # old id → new id, over both stores
    for store in (STAGE1_STORE, STAGE2_STORE):
        for folder in _stored_runs(runs_dir, store):
            name = f"{store}/{folder.name}"
            if is_locked(folder):
                report.skipped.append(f"{name}: running (its lock is held); migrate again when it ends")
                continue
            try:
                old_id, new_id = _stored_ids(folder, store) or (folder.name, folder.name)
            except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as error:
                report.skipped.append(f"{name}: its {CONFIG_FILE} gives no id ({type(error).__name__}: {error})")
                continue
            if folder.name not in (old_id, new_id):
                # Renamed only when its config proves the recipes are all that changed (a config saved by an
                # older schema may hash differently): a wrong guess would hide the run from the launcher.
                report.skipped.append(f"{name}: its {CONFIG_FILE} gives another id ({new_id}); left alone")
            elif folder.name != new_id and folder.with_name(new_id).exists():
                report.skipped.append(f"{name}: a duplicate of {store}/{new_id}, its current id (both kept)")
            elif folder.name != new_id:
                renamed[folder.name] = new_id
                folder = _rename_run(folder, new_id, links.get(folder.resolve(), []))
                report.renamed.append(f"{name} -> {new_id}")
            _repoint_record(folder, renamed)  # also a stage-2 run keeping its name whose stage 1 was renamed


def former_id_problems(cfg) -> list[str]:
    """A run whose stage 1 or stage 2 is stored under its former id (from before ids stopped hashing
    `model.recipe`): a real run would train it again, so it must be migrated first."""
    out = []
    if cfg.stage.name == "stage0":
        return out
    for store, identity in ((STAGE1_STORE, stage1_id), (STAGE2_STORE, stage2_id)):
        if store == STAGE2_STORE and cfg.stage.name == "pretrain":
            continue
        former, current = identity(cfg, recipes=True), identity(cfg)
        folder = runs_folder(cfg) / store
        if former != current and (folder / former).is_dir() and not (folder / current).exists():
            out.append(f"{store}/{former} is this run's {'stage 1' if store == STAGE1_STORE else 'stage 2'} "
                       f"under its former id ({current} now: ids no longer hash model.recipe). Run `python -m "
                       f"lmm.sweep migrate {runs_folder(cfg)}` once first, or it is trained again.")
    return out


def migrate(runs_dir: Path) -> MigrationReport:
    """Bring a runs folder to the current store and ids; nothing is retrained.

    Moves runs/<sweep>/<id> folders (the older layout) into runs/stage2/<id> and links them back. When two
    sweeps trained the same configuration, the finished one is kept in the store (the first one found when
    both are), the other's scores are merged into it and the folder is kept under runs/.migrated/. Then
    renames stored runs whose id changed (ids no longer hash other stages' recipes), with their sweep links
    and the ids inside their records. Running runs (a held lock) and stored runs whose current id is taken
    are skipped; re-running is a no-op.
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
    _rename_out_of_date(runs_dir, report)
    if report.moved or report.merged or report.renamed:
        (runs_dir / MIGRATED).mkdir(exist_ok=True)
        with open(runs_dir / MIGRATED / "log.jsonl", "a") as handle:
            handle.write(json.dumps({"moved": report.moved, "merged": report.merged,
                                     "renamed": report.renamed}) + "\n")
    return report
