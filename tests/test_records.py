"""The run record: built in one place (schema, cost in the paper's unit), read, updated, eval scores merged."""

from __future__ import annotations

import json
import time

import pytest

from lmm.config import compose
from lmm.launch.identity import run_id, stage1_id
from lmm.records import (
    SCHEMA_VERSION,
    build_run_record,
    build_stage1_record,
    eval_scores,
    is_done,
    mark_done,
    read_record,
    set_eval_score,
    update_record,
    write_record,
)

RUN_KEYS = {"schema_version", "run_id", "kind", "sweep", "seed", "started_at", "finished_at", "wall_time_s",
            "slurm_job_id", "choices", "hparams", "resources", "stages", "cost", "config", "stage1", "finetune",
            "assembled", "eval"}
SUMMARY_KEYS = {"run_id", "attempts", "steps", "tokens", "epochs", "wall_time_s", "train_runtime_s", "world_size",
                "gpus",
                "nodes", "gpu_hours", "gpu_hours_per_node", "usd", "params_trainable", "params_total",
                "peak_memory_gb", "final_loss"}


def stats(wall_time_s: float, world_size: int, **extra) -> dict:
    """Stats in the shape `lmm.training.stage.train_stage` returns."""
    return {"stage": "finetune", "steps": 156, "epochs": 1.0, "tokens": 30_000_000, "wall_time_s": wall_time_s,
            "train_runtime_s": wall_time_s - 60, "world_size": world_size, "params_trainable": 33_000_000_000,
            "params_total": 33_300_000_000, "peak_memory_gb": 71.5, "final_loss": 0.9,
            "losses": [{"step": 1, "loss": 1.5, "lr": 0.0}, {"step": 156, "loss": 0.9, "lr": 0.0}],
            "assembled": "/cache/assembled/x", **extra}


def test_stage2_record_schema_and_cost_in_the_papers_unit(tmp_path):
    # The paper's Table 4 column "33B full": 4 nodes × 8 A100 (32 GPUs), 5.80 GPU-hours per node
    # = wall hours × 32 / 8, so 1.45 wall hours.
    cfg = compose([f"paths.root={tmp_path}", "experiment=table4/33b_full"])
    stage1_folder = tmp_path / "s1"
    write_record(stage1_folder, build_stage1_record(cfg, stats(3600.0, 8, stage="pretrain",
                                                               params_trainable=6_660_000)))
    record = build_run_record(cfg, None, stats(1.45 * 3600, 32), stage1_folder, time.time() - 5)
    write_record(tmp_path / "run", record)
    record = read_record(tmp_path / "run")

    assert set(record) == RUN_KEYS and record["schema_version"] == SCHEMA_VERSION
    assert record["run_id"] == run_id(cfg) and record["kind"] == "stage2" and record["sweep"] == "table4"
    assert record["choices"] == {"model": "33b", "vision": "clip_l14_336", "projector": "linear",
                                 "tuning": "full", "data": "llava_80k", "pretrain_data": "laion_cc_sbu_558k",
                                 "stage": "both", "deepspeed": "paper", "cluster": "a100_80g",
                                 "logger": "none", "eval": "llava_bench"}
    hp = record["hparams"]
    assert (hp["method"], hp["rank"], hp["lr"], hp["image_size"], hp["mixing_ratio"], hp["nodes"]) == \
        ("full", None, 2e-5, 336, 0.0, 4)
    assert hp["nominal_params_b"] == 33 and hp["deepspeed_stage"] == 3
    assert record["resources"] == {"gpu_type": "A100-80G", "gpus_per_node": 8, "nodes": 4, "world_size": 32,
                                   "usd_per_gpu_hour_per_node": 13.63}

    finetune, pretrain = record["stages"]["finetune"], record["stages"]["pretrain"]
    assert set(finetune) == SUMMARY_KEYS and set(pretrain) == SUMMARY_KEYS
    assert finetune["gpu_hours_per_node"] == pytest.approx(5.80)
    assert finetune["gpu_hours"] == pytest.approx(1.45 * 32)
    assert finetune["usd"] == pytest.approx(5.80 * 13.63)
    assert (finetune["gpus"], finetune["nodes"], finetune["steps"], finetune["final_loss"]) == (32, 4, 156, 0.9)
    assert pretrain["run_id"] == stage1_id(cfg) and pretrain["gpu_hours_per_node"] == pytest.approx(1.0)
    assert pretrain["params_trainable"] == 6_660_000
    cost = record["cost"]
    assert cost["gpu_hours_per_node"] == pytest.approx({"pretrain": 1.0, "finetune": 5.80, "total": 6.80})
    assert cost["usd"]["total"] == pytest.approx(6.80 * 13.63) and cost["usd_per_gpu_hour_per_node"] == 13.63
    assert record["stage1"] == {"run_id": stage1_id(cfg), "folder": str(stage1_folder), "wall_time_s": 3600.0}
    # the raw stats (loss curve included) stay where the pipeline, tests and checkpoint loader read them
    assert record["finetune"]["losses"][-1]["loss"] == 0.9 and record["assembled"] == "/cache/assembled/x"
    assert record["eval"] == {} and record["config"]["model"]["name"] == "33b"


def test_price_is_configurable_and_stage1_stats_win_over_the_folder(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "experiment=table4/33b_lora64",
                   "cluster.usd_per_gpu_hour_per_node=20"])
    record = build_run_record(cfg, stats(7200.0, 4, stage="pretrain"), stats(3600.0, 8), tmp_path / "none",
                              time.time())
    # LoRA 33B: one node of 8 GPUs; 1 wall hour = 1 GPU-hour per node, $20 at this price
    assert record["stages"]["finetune"]["gpu_hours_per_node"] == pytest.approx(1.0)
    assert record["cost"]["usd"]["finetune"] == pytest.approx(20.0)
    assert record["stages"]["pretrain"]["gpu_hours_per_node"] == pytest.approx(1.0)  # 2 h × 4 / 8
    assert record["hparams"]["rank"] == 64 and record["hparams"]["alpha"] == 128


def test_an_explicit_projector_file_leaves_stage1_cost_unknown(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "debug=fast"])
    record = build_run_record(cfg, None, stats(36.0, 1), tmp_path / "projector.safetensors", time.time())
    assert record["stages"]["pretrain"] is None and record["stage1"]["wall_time_s"] is None
    assert record["cost"]["gpu_hours_per_node"]["pretrain"] is None
    assert record["cost"]["gpu_hours_per_node"]["total"] == record["stages"]["finetune"]["gpu_hours_per_node"]
    # the tiny CPU run: 36 s on 1 "GPU" = 0.00125 GPU-hours per node, at the default $13.63
    assert record["stages"]["finetune"]["gpu_hours_per_node"] == pytest.approx(36 / 3600 / 8)
    assert record["resources"]["gpu_type"] == "cpu" and record["choices"]["model"] == "tiny_s"


def test_a_schema1_stage1_record_is_priced_from_its_raw_stats(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "debug=fast"])
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "results.json").write_text(json.dumps(
        {"schema_version": 1, "run_id": "s1-old", "kind": "stage1", "pretrain": stats(288.0, 1)}))
    record = build_run_record(cfg, None, stats(36.0, 1), tmp_path / "s1", time.time())
    assert record["stages"]["pretrain"]["run_id"] == "s1-old"
    assert record["stages"]["pretrain"]["gpu_hours_per_node"] == pytest.approx(0.01)


def test_eval_scores_merge_per_benchmark_and_beam(tmp_path):
    write_record(tmp_path, {"run_id": "r", "kind": "stage2", "eval": {}})
    lb1 = {"overall": 70.1, "categories": {"conv": 64.3, "detail": 55.9, "complex": 81.7},
           "judge_model": "gpt-4-0314", "runs": [70.0, 70.2], "std": 0.1}
    set_eval_score(tmp_path, "llava_bench", 1, lb1)
    set_eval_score(tmp_path, "llava_bench", 5, {**lb1, "overall": 73.5})
    update_record(tmp_path, eval={**read_record(tmp_path)["eval"], "mmlu": {"beam1": {"overall": 55.0}}})
    got = {(b, k): s["overall"] for b, k, s in eval_scores(read_record(tmp_path))}
    assert got == {("llava_bench", 1): 70.1, ("llava_bench", 5): 73.5, ("mmlu", 1): 55.0}


def test_update_record_merges_one_level_and_done_needs_both_files(tmp_path):
    write_record(tmp_path, {"run_id": "r", "finetune": {"steps": 3}, "eval": {"a": {"beam1": {}}}})
    record = update_record(tmp_path, finetune={"tokens": 10}, note="x")
    assert record["finetune"] == {"steps": 3, "tokens": 10} and record["note"] == "x"
    assert not is_done(tmp_path)
    mark_done(tmp_path)
    assert is_done(tmp_path)


def test_device_time_is_wall_time_on_accelerators_and_cpu_time_on_cpu():
    from lmm.training.attempts import device_seconds

    gpu = {"device": "cuda", "wall_time_s": 100.0, "cpu_time_s": 30.0, "world_size": 8}
    cpu = {"device": "cpu", "wall_time_s": 100.0, "cpu_time_s": 30.0, "world_size": 2}
    assert device_seconds(gpu) == 800.0  # the GPUs are held for the wall time, busy or not
    assert device_seconds(cpu) == 60.0  # a core shared with other processes: its busy time
    # Attempts written before devices were recorded count wall time, as they did.
    assert device_seconds({"wall_time_s": 100.0, "world_size": 2}) == 200.0
    assert device_seconds({"device": None, "wall_time_s": 100.0, "cpu_time_s": 30.0, "world_size": 1}) == 100.0
    assert device_seconds({"device": "cpu", "wall_time_s": 5.0, "cpu_time_s": 0.0, "world_size": 1}) == 0.0
    assert device_seconds({"wall_time_s": None}) == 0.0
