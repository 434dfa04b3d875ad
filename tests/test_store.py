"""The run store: one training per configuration whatever the sweep, sweeps as views, and the migration
of the older layout (runs/<sweep>/<id> folders) that retrains nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from analysis.collect import collect, find_records
from lmm.config import compose
from lmm.launch.identity import run_dir, stage0_id, stage1_id, stage2_id, sweep_link
from lmm.launch.rundir import read_attempts
from lmm.launch.store import MIGRATED, migrate
from lmm.pipeline import run_pipeline
from lmm.records import is_done, read_record, update_record
from lmm.sweep import run_states

FAST = ["debug=fast", "trainer.max_steps=2"]


def test_run_ids_are_pinned():
    """Identity is what determines the weights; these ids are those of runs already on disk.

    Stage-1/2 ids changed when they stopped hashing `model.recipe` (`migrate` renames runs stored under the
    previous ones, which `recipes=True` still gives); stage-0 ids did not change."""
    ids = {
        # 65B from the user's own Vicuna-65B folder; from stage 0 (no folder): its id includes stage 0's.
        ("experiment=table4/65b_lora64", "paths.vicuna_65b=/data/vicuna-65b"):
            ("65b-clip_l14_336-linear-lora64-llava_80k-bd2e74af", "65b-clip_l14_336-linear-lora64-llava_80k-e2deb6ea"),
        ("experiment=table4/65b_lora64", "paths.vicuna_65b=null"):
            ("65b-clip_l14_336-linear-lora64-llava_80k-7bf6b913", "65b-clip_l14_336-linear-lora64-llava_80k-b2593f12"),
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

