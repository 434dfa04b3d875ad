"""The run store: one training per configuration whatever the sweep, sweeps as views, and the migration
of the older layout (runs/<sweep>/<id> folders) that retrains nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis.collect import collect, find_records
from lmm.config import compose
from lmm.launch.identity import run_dir, stage0_id, stage1_dir, stage1_id, stage2_id, sweep_link
from lmm.launch.rundir import read_attempts, run_lock
from lmm.launch.store import MIGRATED, former_id_problems, link_into_sweep, migrate
from lmm.layout import CONFIG_FILE, JOBS_FILE, RECORD_FILE, WANDB_ID_FILE
from lmm.pipeline import run_pipeline
from lmm.records import is_done, read_record, update_record
from lmm.sweep import run_states
from lmm.tracking import wandb_run_id
from lmm.validate import ConfigError, validate_files

FAST = ["debug=fast", "trainer.max_steps=2"]


def test_run_ids_are_pinned():
    """Identity is what determines the weights; these ids are those of runs already on disk.

    Stage-1/2 ids changed when they stopped hashing `model.recipe` (`migrate` renames runs stored under the
    previous ones, which `recipes=True` still gives); stage-0 ids did not change. The 65B and 70B ones changed
    again when their stage 1 moved to 2 nodes (one 24-h allocation), before any run of that size was trained."""
    ids = {
        # 65B from the user's own Vicuna-65B folder; from stage 0 (no folder): its id includes stage 0's.
        ("experiment=table4/65b_lora64", "paths.vicuna_65b=/data/vicuna-65b"):
            ("65b-clip_l14_336-linear-lora64-llava_80k-687b94fd", "65b-clip_l14_336-linear-lora64-llava_80k-7fecb90d"),
        ("experiment=table4/65b_lora64", "paths.vicuna_65b=null"):
            ("65b-clip_l14_336-linear-lora64-llava_80k-74e5145d", "65b-clip_l14_336-linear-lora64-llava_80k-907cdc1a"),
        ("experiment=table4/33b_qlora64",): ("33b-clip_l14_336-linear-qlora64-llava_80k-ae020c8c",
                                             "33b-clip_l14_336-linear-qlora64-llava_80k-5bb1b846"),
        ("experiment=table1/33b_beam5",): ("33b-clip_l14_336-linear-full-llava_80k_sharegpt-985ea86a",
                                           "33b-clip_l14_336-linear-full-llava_80k_sharegpt-fc90f448"),
        ("experiment=table2/33b_mix",): ("33b-clip_l14_336-linear-full-llava_80k_sharegpt-985ea86a",
                                         "33b-clip_l14_336-linear-full-llava_80k_sharegpt-fc90f448"),
        (): ("tiny_s-tiny_32-linear-full-synthetic-ab5341fd", "tiny_s-tiny_32-linear-full-synthetic-c21a2a5e"),
    }
    for overrides, (expected, before) in ids.items():
        cfg = compose(list(overrides))
        assert (stage2_id(cfg), stage2_id(cfg, recipes=True)) == (expected, before)
    assert stage0_id(compose(["experiment=table4/65b_lora64", "paths.vicuna_65b=null"])) == "s0-65b-sharegpt-35772f40"


def test_a_stage_id_hashes_its_own_recipe_not_the_other_stages_or_methods():
    """Each stage reads its recipe through its resolved section (stage 1 `pretrain`, stage 2 `tuning`)."""
    def ids(*overrides: str) -> tuple[str, str]:
        cfg = compose(["tuning=lora", *overrides])
        return stage1_id(cfg), stage2_id(cfg)

    s1, s2 = ids()
    assert ids("model.recipe.full.lr=3e-5") == (s1, s2)  # a LoRA run does not use the full recipe
    assert ids("model.recipe.full.nodes=8", "model.recipe.full.epochs=3") == (s1, s2)
    assert ids("model.recipe.lora.lr=3e-5")[0] == s1 and ids("model.recipe.lora.lr=3e-5")[1] != s2
    changed = ids("model.recipe.pretrain.lr=3e-5")
    assert changed[0] != s1 and changed[1] != s2  # stage 2 hashes its stage 1's id
    # Paper scale: editing the 65B LoRA recipe retrains neither the 65B stage 1 nor its full run.
    full = compose(["experiment=table4/65b_full"])
    edited = compose(["experiment=table4/65b_full", "model.recipe.lora.lr=5e-5", "model.recipe.lora.nodes=4"])
    assert (stage1_id(edited), stage2_id(edited)) == (stage1_id(full), stage2_id(full))


def test_the_same_configuration_from_two_sweeps_is_trained_once_and_shown_in_both(tmp_path):
    first = compose([f"paths.root={tmp_path}", "sweep=alpha", *FAST])
    second = compose([f"paths.root={tmp_path}", "sweep=beta", *FAST])
    assert run_dir(first) == run_dir(second) == tmp_path / "runs" / "stage2" / stage2_id(first)
    folder = run_pipeline(first)
    record = read_record(folder)
    assert run_pipeline(second) == folder
    assert read_record(folder)["finetune"]["wall_time_s"] == record["finetune"]["wall_time_s"]  # not retrained
    assert len(read_attempts(folder)) == 1
    for cfg in (first, second):
        link = sweep_link(cfg)
        assert link.is_symlink() and link.resolve() == folder.resolve()
    records = find_records(tmp_path / "runs")
    assert sorted(r["sweep"] for r in records) == ["alpha", "beta"]
    assert {r["run_id"] for r in records} == {folder.name}
    frame = collect(tmp_path / "runs")
    assert set(frame["sweep"]) == {"alpha", "beta"}
    assert [s.state for s in run_states(tmp_path / "runs" / "beta")] == ["done"]
    # One sweep's folder can be read on its own, too.
    assert [r["sweep"] for r in find_records(tmp_path / "runs" / "alpha")] == ["alpha"]


def test_migration_moves_old_folders_into_the_store_and_folds_duplicates(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "sweep=table4", *FAST])
    folder = run_pipeline(cfg)
    runs = tmp_path / "runs"
    # The older layout: the same training in two sweep folders, one with a score the other lacks.
    shutil.rmtree(runs / "table4")
    old_a, old_b = runs / "table4" / folder.name, runs / "table1" / folder.name
    old_a.parent.mkdir(), old_b.parent.mkdir()
    shutil.copytree(folder, old_b, symlinks=True)
    folder.rename(old_a)
    update_record(old_a, eval={"llava_bench": {"beam1": {"overall": 61.0}}})
    update_record(old_b, eval={"llava_bench": {"beam5": {"overall": 63.0}}})
    (old_b / "eval" / "llava_bench" / "beam5").mkdir(parents=True)
    (old_b / "eval" / "llava_bench" / "beam5" / "answers.jsonl").write_text("{}\n")
    (runs / "table1" / "plots").mkdir()  # not a run: left alone
    weights = (old_a / "model" / "model.safetensors").read_bytes()

    out = subprocess.run([sys.executable, "-m", "lmm.sweep", "migrate", str(runs)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 run folder(s) moved into stage2/, 1 duplicate training(s) folded" in out.stdout
    stored = runs / "stage2" / folder.name
    assert is_done(stored) and (stored / "model" / "model.safetensors").read_bytes() == weights
    assert read_record(stored)["eval"] == {"llava_bench": {"beam1": {"overall": 61.0}, "beam5": {"overall": 63.0}}}
    assert (stored / "eval" / "llava_bench" / "beam5" / "answers.jsonl").exists()
    for old in (old_a, old_b):
        assert old.is_symlink() and old.resolve() == stored.resolve()
    assert len(list((runs / MIGRATED).glob(f"table*-{folder.name}"))) == 1  # the duplicate is kept, not deleted
    assert (runs / "table1" / "plots").is_dir() and not (runs / "table1" / "plots").is_symlink()
    # Nothing to retrain: the run is done where the config now looks for it, in both sweeps.
    assert run_pipeline(compose([f"paths.root={tmp_path}", "sweep=table1", *FAST])) == stored
    assert len(read_attempts(stored)) == 1
    assert sorted(r["sweep"] for r in find_records(runs)) == ["table1", "table4"]
    again = migrate(runs)
    assert not again.moved and not again.merged  # a second migration is a no-op


@pytest.mark.parametrize("kind", ["results", "failed"])
def test_status_marks_corrupt_files_and_ignores_non_run_folders(tmp_path, kind):
    cfg = compose([f"paths.root={tmp_path}", "sweep=s", *FAST])
    folder = run_pipeline(cfg)
    (tmp_path / "runs" / "s" / "plots").mkdir()
    if kind == "results":
        (folder / "results.json").write_text('{"run_id": ')
    else:
        (folder / "DONE").unlink()
        (folder / "FAILED").write_text("not json")
    states = run_states(tmp_path / "runs" / "s")
    assert [(s.run_id, s.state) for s in states] == [(folder.name, "corrupt")]
    assert ("results.json" if kind == "results" else "FAILED") in states[0].detail


def _as_before(folder: Path, old_ids: dict[str, str]) -> None:
    """Rename a stored run to the id it had before, with the ids (and paths) its record and job log hold."""
    for path in (folder / RECORD_FILE, folder / JOBS_FILE):
        text = path.read_text() if path.exists() else ""
        for new, old in old_ids.items():
            text = text.replace(new, old)
        if text:
            path.write_text(text)
    folder.rename(folder.with_name(old_ids[folder.name]))


def test_migration_renames_runs_stored_under_the_ids_that_hashed_every_recipe(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "sweep=toy", *FAST])
    folder, stage1 = run_pipeline(cfg), stage1_dir(cfg)
    runs, view = tmp_path / "runs", tmp_path / "runs" / "toy"
    link_into_sweep(stage1, view / stage1.name)  # the launcher lists a stage=pretrain run in its view
    (folder / JOBS_FILE).write_text(json.dumps({"job_id": "7", "stderr": f"{folder}/jobs/7/7_0_log.err"}) + "\n")
    records = {f: read_record(f) for f in (stage1, folder)}
    # The store as the previous ids named it: folders, the ids inside their records, the view's links.
    old = {stage1_id(cfg): stage1_id(cfg, recipes=True), stage2_id(cfg): stage2_id(cfg, recipes=True)}
    assert stage1.name in old and folder.name in old and set(old).isdisjoint(old.values())
    for f in (stage1, folder):
        _as_before(f, old)
        (view / f.name).unlink()
        link_into_sweep(f.with_name(old[f.name]), view / old[f.name])
    assert read_record(folder.with_name(old[folder.name]))["stage1"]["run_id"] == old[stage1.name]
    assert not is_done(run_dir(cfg))  # what an upgrade without `migrate` meets: the run would be trained again
    # ... so a real run (or submission) of it is refused, naming the command, before anything is trained.
    with pytest.raises(ConfigError) as refused:
        validate_files(cfg, stage1_exists=False)
    assert (f"stage1/{old[stage1.name]} is this run's stage 1 under its former id ({stage1.name} now: ids no longer "
            f"hash model.recipe). Run `python -m lmm.sweep migrate {runs.resolve()}` once first, or it is trained "
            "again.") in str(refused.value)
    assert f"stage2/{old[folder.name]} is this run's stage 2 under its former id ({folder.name} now" in str(
        refused.value)

    report = migrate(runs)
    assert report.renamed == [f"stage1/{old[stage1.name]} -> {stage1.name}", f"stage2/{old[folder.name]} -> "
                              f"{folder.name}"]
    assert not report.skipped and "2 stored run(s) renamed to their current id" in report.summary()
    for f in (stage1, folder):
        # W&B: a resumed training and the scores logged from now on go to the W&B run it was first tracked under.
        assert (f / WANDB_ID_FILE).read_text() == wandb_run_id(old[f.name]) + "\n"
        assert read_record(f) == records[f]  # run_id, stages' run ids, the stage-1 pointer: as trained now
        assert (view / f.name).is_symlink() and (view / f.name).resolve() == f.resolve() and is_done(view / f.name)
        assert not os.path.lexists(f.with_name(old[f.name])) and not os.path.lexists(view / old[f.name])
    assert read_record(folder)["stage1"] == {**records[folder]["stage1"], "folder": str(stage1)}
    assert json.loads((folder / JOBS_FILE).read_text())["stderr"] == f"{folder}/jobs/7/7_0_log.err"
    # The launcher finds the run done where the config looks for it: nothing is trained again.
    assert is_done(run_dir(cfg)) and run_pipeline(cfg) == folder and len(read_attempts(folder)) == 1
    assert former_id_problems(cfg) == []
    again = migrate(runs)
    assert not (again.renamed or again.moved or again.merged or again.skipped)


def test_migration_leaves_running_duplicate_and_unexplained_stored_runs_alone(tmp_path):
    runs = tmp_path / "runs"

    def stored(seed: int, name) -> Path:
        """A stored run folder with only its saved resolved config (what `migrate` reads)."""
        cfg = compose([f"paths.root={tmp_path}", f"seed={seed}"])
        folder = runs / "stage2" / name(cfg)
        folder.mkdir(parents=True)
        OmegaConf.save(cfg, folder / CONFIG_FILE, resolve=True)
        return folder

    before = partial(stage2_id, recipes=True)
    running = stored(1, before)
    duplicate, current = stored(2, before), stored(2, stage2_id)
    unexplained = stored(3, lambda cfg: f"{stage2_id(cfg)[:-8]}00000000")  # its config gives neither id
    (unexplained / RECORD_FILE).write_text('{"run_id": ')  # corrupt: left as it is
    with run_lock(running, wait=False):
        report = migrate(runs)
    assert not report.renamed and len(report.skipped) == 3
    assert sorted(x.split(":")[0] for x in report.skipped) == sorted(
        f"stage2/{f.name}" for f in (running, duplicate, unexplained))
    assert all(f.is_dir() for f in (running, duplicate, current, unexplained))
    assert "a duplicate of stage2/" + current.name in report.summary()
    # Once it has ended, the running one is renamed.
    now = stage2_id(compose([f"paths.root={tmp_path}", "seed=1"]))
    assert migrate(runs).renamed == [f"stage2/{running.name} -> {now}"]
    # Unfinished (no record): its resumed training goes on in the W&B run it was first tracked under.
    assert (running.with_name(now) / WANDB_ID_FILE).read_text() == wandb_run_id(running.name) + "\n"
