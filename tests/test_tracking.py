"""W&B tracking, offline: our run id/group/config before the Trainer's callback, eval scores later, no $HOME."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from lmm.config import compose
from lmm.tracking import configure_environment, eval_summary_metrics, start_tracking, wandb_run_id

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from lmm.config import compose
from lmm.pipeline import run_pipeline
from lmm.records import update_record
from lmm.tracking import log_eval_scores

cfg = compose([f"paths.root={sys.argv[1]}", "debug=fast", "logger=wandb", "logger.mode=offline", "sweep=wb",
               "tuning=lora", "tuning.rank=8"])
folder = run_pipeline(cfg)
# an eval score as the evaluation runner merges it (no judge here), then logged into the same W&B run
update_record(folder, eval={"llava_bench": {"beam1": {"overall": 61.5, "std": 0.2, "runs": [61.3, 61.7],
               "categories": {"conv": 60.0, "detail": 50.0, "complex": 70.0}, "judge_model": "fake-judge"}}})
assert log_eval_scores(folder)
print(folder)
"""


def read_offline_run(path: Path) -> dict:
    """An offline run's run/config/history/summary records, from its `run-<id>.wandb` file.

    The file is W&B's transaction log: a 7-byte header (":W&B", magic, version), then LevelDB-log blocks of
    32 KiB of CRC/length/type-framed chunks, each record a protobuf `Record` (full, or first..last chunks).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out: dict = {"run": None, "config": {}, "history": [], "summary": {}}
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # 1 = full record, 4 = last chunk; 2/3 = first/middle chunks
            continue
        record = pb.Record()
        record.ParseFromString(chunk)
        chunk = b""
        which = record.WhichOneof("record_type")
        if which == "run":
            out["run"] = record.run
            out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif which == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif which == "history":
            out["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                   for i in record.history.item})
        elif which == "summary":
            out["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                                   for u in record.summary.update})
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    """A tiny two-stage run with logger=wandb (offline) in a process whose $HOME is an empty folder."""
    root = tmp_path_factory.mktemp("tracked")
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "XDG_", "JUPYTER", "IPYTHON", "MPLCONFIG"))}
    # one OpenMP thread: two spinning threads on this shared 2-core machine make tiny runs ~20x slower
    env.update(HOME=str(home), WANDB_MODE="offline", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    return {"root": root, "home": home, "folder": folder, "stage1": next((root / "runs" / "stage1").iterdir())}


def offline_runs(folder: Path) -> list[dict]:
    files = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    return [read_offline_run(f) for f in files]


def test_training_writes_our_offline_run_with_the_choices_in_its_config(tracked):
    folder = tracked["folder"]
    first = offline_runs(folder)[0]
    run = first["run"]
    assert run.run_id == folder.name and run.run_group == "wb" and run.job_type == "finetune"
    assert run.display_name == folder.name and run.project == "lmm"
    config = first["config"]
    # the Hydra choices are top-level keys (deepspeed stays the choice, not TrainingArguments.deepspeed)
    assert {k: config[k] for k in ("model", "vision", "projector", "tuning", "data", "deepspeed", "logger")} == \
        {"model": "tiny_s", "vision": "tiny_32", "projector": "linear", "tuning": "lora", "data": "synthetic",
         "deepspeed": "none", "logger": "wandb"}
    assert config["run_id"] == folder.name and config["sweep"] == "wb" and config["train_stage"] == "finetune"
    assert config["hp"]["rank"] == 8 and config["hp"]["image_size"] == 32
    assert config["cfg"]["cluster"]["usd_per_gpu_hour_per_node"] == 13.63
    assert "learning_rate" in config  # the Trainer's WandbCallback added its arguments to our run
    losses = [h["train/loss"] for h in first["history"] if "train/loss" in h]
    assert len(losses) == 3 and all(h.get("train/tokens_per_s") for h in first["history"] if "train/loss" in h)
    record = json.loads((folder / "results.json").read_text())
    summary = first["summary"]
    assert summary["finetune/gpu_hours_per_node"] == pytest.approx(
        record["stages"]["finetune"]["gpu_hours_per_node"], rel=1e-5)
    assert summary["finetune/params_trainable"] == record["stages"]["finetune"]["params_trainable"]


def test_stage1_has_its_own_run_and_eval_scores_resume_the_stage2_run(tracked):
    stage1 = offline_runs(tracked["stage1"])
    assert len(stage1) == 1 and stage1[0]["run"].run_id == tracked["stage1"].name
    assert stage1[0]["run"].job_type == "pretrain" and stage1[0]["config"]["train_stage"] == "pretrain"
    runs = offline_runs(tracked["folder"])
    assert len(runs) == 2 and {r["run"].run_id for r in runs} == {tracked["folder"].name}  # same W&B run
    scores = runs[1]["summary"]
    assert scores["eval/llava_bench/beam1/overall"] == 61.5 and scores["eval/llava_bench/beam1/complex"] == 70.0
    assert scores["eval/llava_bench/beam1/std"] == 0.2 and scores["cost/gpu_hours_per_node/total"] > 0


def test_a_migrated_run_resumes_and_logs_its_scores_in_the_w_and_b_run_it_was_first_tracked_under(
        tmp_path, monkeypatch):
    from lmm import tracking
    from lmm.launch.identity import stage2_id
    from lmm.layout import WANDB_ID_FILE
    from lmm.records import write_record

    opened = []

    class Run:
        summary: dict = {}

        def finish(self):
            pass

    monkeypatch.setattr(tracking, "_init", lambda logger, **kw: opened.append(kw) or Run())
    cfg = compose([f"paths.root={tmp_path}", "debug=fast", "logger=wandb", f"paths.cache_dir={tmp_path / 'cache'}"])
    record = {"run_id": "new-id", "kind": "stage2", "sweep": "s", "config": {"logger": {"name": "wandb"}},
              "eval": {"synthetic": {"beam1": {"overall": 40.0}}}}
    folder = tmp_path / "run"
    with mock.patch.dict(os.environ):  # configure_environment exports W&B's folders
        for renamed in (False, True):
            if renamed:  # as `lmm.sweep migrate` leaves a run it renamed, finished or not
                (folder / WANDB_ID_FILE).write_text("old-id\n")
            start_tracking(cfg, folder, "finetune")
            write_record(folder, record)
            assert tracking.log_eval_scores(folder, mode="offline")
    trained = stage2_id(cfg)  # the training opens its run under the config's id, the scores under the record's
    assert [(kw["run_id"], kw["wandb_id"]) for kw in opened] == [
        (trained, wandb_run_id(trained)), ("new-id", "new-id"), (trained, "old-id"), ("new-id", "old-id")]


@pytest.mark.parametrize("kept", ["", "\n", "a/b:c", "x" * 300])
def test_an_unusable_kept_w_and_b_id_falls_back_to_the_run_ids_and_says_so(tmp_path, caplog, kept):
    from lmm.layout import WANDB_ID_FILE
    from lmm.tracking import folder_wandb_id

    assert folder_wandb_id(tmp_path, "run-1") == "run-1"  # no file: the run id's
    (tmp_path / WANDB_ID_FILE).write_text("first-id\n")
    assert folder_wandb_id(tmp_path, "run-1") == "first-id"
    (tmp_path / WANDB_ID_FILE).write_text(kept)
    with caplog.at_level("WARNING", logger="lmm.tracking"):
        assert folder_wandb_id(tmp_path, "run-1") == "run-1"
    assert f"{tmp_path / WANDB_ID_FILE} holds no usable W&B id ({kept.strip()[:80]!r}): tracked under the run " \
           "id's instead" in caplog.text


def test_nothing_lands_in_home_and_wandb_folders_stay_under_the_cache(tracked):
    assert sorted(str(p.relative_to(tracked["home"])) for p in tracked["home"].rglob("*")) == []
    cache = tracked["root"] / ".cache" / "wandb"
    assert sorted(p.name for p in cache.iterdir()) == ["artifacts", "cache", "config", "data"]
    assert list((cache / "cache").rglob("core-debug-*.log"))  # wandb-core's own logs, not in ~/.cache


def test_logger_none_opens_no_run_and_ids_are_w_and_b_safe(tmp_path, monkeypatch):
    cfg = compose([f"paths.root={tmp_path}", "debug=fast"])
    assert start_tracking(cfg, tmp_path / "run", "finetune") is None
    run_id = "tiny_s-tiny_32-linear-lora8-synthetic-24e61756"
    assert wandb_run_id(run_id) == run_id
    assert wandb_run_id("a/b:c;d,e#f?g") == "a-b-c-d-e-f-g"
    long = wandb_run_id("x" * 300)
    assert len(long) == 128 and long != wandb_run_id("x" * 301)
    with mock.patch.dict(os.environ, {"WANDB_CACHE_DIR": str(tmp_path / "mine")}):  # the export is undone after
        for var in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            os.environ.pop(var, None)
        dirs = configure_environment(tmp_path / "cache")
    assert dirs["WANDB_CACHE_DIR"] == str(tmp_path / "mine")  # an explicit setting wins
    assert dirs["WANDB_CONFIG_DIR"] == str((tmp_path / "cache" / "wandb" / "config").resolve())


def test_eval_summary_keys():
    record = {"eval": {"mmvet": {"beam1": {"overall": 32.6, "std": 0.1, "categories": {"rec": 38.4}}}},
              "cost": {"gpu_hours_per_node": {"pretrain": None, "finetune": 5.8, "total": 5.8}}}
    assert eval_summary_metrics(record) == {"eval/mmvet/beam1/overall": 32.6, "eval/mmvet/beam1/std": 0.1,
                                            "eval/mmvet/beam1/rec": 38.4, "cost/gpu_hours_per_node/finetune": 5.8,
                                            "cost/gpu_hours_per_node/total": 5.8}
