"""Concepts defined once: image tokens per tower, the paper's cost unit, the run-folder layout, Table 4's values."""

from __future__ import annotations

import csv

import pytest

from analysis.reference import REFERENCE_CSV, load_reference
from lmm import PAPER_TABLES_CSV, layout, towers, units
from lmm.config import compose
from lmm.eval.checkpoint import num_image_tokens as checkpoint_image_tokens
from lmm.models.assemble import num_image_tokens
from lmm.plan.params import image_tokens
from lmm.plan.table4 import paper_calibration, table4_reported


@pytest.mark.parametrize(("vision", "tokens"), [("clip_l14_224", 256), ("clip_l14_336", 576), ("tiny_48", 36)])
def test_image_tokens_have_one_definition(vision, tokens):
    v = compose([f"vision={vision}"]).vision
    assert towers.image_tokens(v.image_size, v.patch_size, v.feature_select) == tokens
    assert num_image_tokens(v) == image_tokens(v) == tokens  # the model's image_seq_length and the planner's


def test_keeping_cls_adds_one_token_everywhere():
    v = compose(["vision=clip_l14_336", "vision.feature_select=full"]).vision
    assert num_image_tokens(v) == image_tokens(v) == 577

    class Vision:
        image_size, patch_size = 336, 14

    class Llava:
        vision_config, vision_feature_select_strategy = Vision, "full"

    assert checkpoint_image_tokens(Llava) == 577


def test_the_paper_cost_unit():
    assert units.PAPER_GPUS_PER_NODE == 8
    assert units.gpu_hours_per_node(1.5, 32) == 6.0  # 1.5 h on 4 nodes × 8 GPUs = 6 node-hours
    assert units.usd(2.0, 13.63) == pytest.approx(27.26)


def test_table4_values_come_from_the_reference_csv_only():
    assert REFERENCE_CSV == PAPER_TABLES_CSV
    reported = table4_reported()
    assert len(reported) == 9
    assert reported["7b_full"] == (1.3, 7.0) and reported["33b_qlora64"] == (4.68, 0.49)
    with open(PAPER_TABLES_CSV, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    hours = {r["experiment"]: float(r["value"]) for r in rows
             if r["table"] == "4" and r["metric"] == "gpu_hours_per_node" and r["system"] == "LLaVA"}
    assert {f"table4/{k}": v[0] for k, v in reported.items()} == hours
    frame = load_reference()
    assert set(frame[(frame["table"] == "4") & (frame["metric"] == "gpu_hours_per_node")]["value"]) == {
        v[0] for v in reported.values()}
    assert "7B full = 1.3 GPU-hours per node" in paper_calibration().source


def test_run_folder_paths_are_named_by_the_layout(tmp_path):
    assert layout.projector_file(tmp_path) == tmp_path / "projector.safetensors"
    assert layout.model_dir(tmp_path) == tmp_path / "model"
    assert layout.adapter_dir(tmp_path) == tmp_path / "adapter"
    assert layout.checkpoints_dir(tmp_path) == tmp_path / "checkpoints"
    assert layout.eval_dir(tmp_path, "mmvet", "beam1") == tmp_path / "eval" / "mmvet" / "beam1"
    assert {layout.RECORD_FILE, layout.DONE_FILE} <= layout.ENTRIES


def test_benchmarks_are_registered_once_and_rescore_finds_them_there():
    from lmm.eval import rescore
    from lmm.eval.benchmarks import BENCHMARK_NAMES, get_benchmark, registry

    assert tuple(registry()) == BENCHMARK_NAMES
    # Rescoring covers exactly the benchmarks whose module says what saved files it reads.
    assert rescore.BENCHMARKS == ("llava_bench", "llava_bench_coco", "mmvet", "mmbench", "vicuna80")
    assert all(get_benchmark(name).rescore_files for name in rescore.BENCHMARKS)
    with pytest.raises(ValueError, match="mmlu is not rescored from saved files"):
        get_benchmark("mmlu").rescore(["x"])
