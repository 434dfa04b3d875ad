"""DoRA, the fourth tuning method, added through the registry: config, trainability, a tiny two-stage run with
its magnitude vectors, its own run-id slug, the planner's accounting and its Table 4 label."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from analysis import tables
from analysis.collect import collect, runs_view
from lmm import layout
from lmm.config import compose
from lmm.launch.identity import run_dir, stage1_dir, stage2_id
from lmm.models.build import build_model
from lmm.models.checkpoint import load_trained
from lmm.models.trainable import trainable_names
from lmm.pipeline import run_pipeline
from lmm.plan.flops import sample_flops
from lmm.plan.memory import estimate_memory
from lmm.plan.params import count_params, llm_block_linears
from lmm.plan.preflight import fixes, preflight
from lmm.plan.workload import workload
from lmm.records import is_done, read_record
from lmm.tuning import METHOD_NAMES, tuning_method
from lmm.validate import validate

FAST = ["debug=fast", "tuning.rank=8"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def test_dora_is_a_registered_method_with_its_own_preset():
    cfg = compose(["tuning=dora"])
    assert cfg.tuning.method == "dora" and cfg.tuning.rank == 64 and cfg.tuning.alpha == 128
    assert METHOD_NAMES == ("full", "lora", "qlora", "dora")
    dora = tuning_method("dora")
    assert dora.adapter and dora.magnitude and not dora.quantized and dora.paper_zero_stage == 3
    config = dora.peft_config(cfg.tuning)
    assert config.use_dora is True and config.r == 64 and config.lora_alpha == 128
    assert tuning_method("lora").peft_config(cfg.tuning).use_dora is False
    with pytest.raises(ValueError, match=r"tuning.method = 'vera' is not a tuning method: the methods are "
                                         r"full, lora, qlora, dora \(lmm/tuning.py\)."):
        tuning_method("vera")


def test_dora_has_its_own_run_id_slug():
    base = ["model=33b", "vision=clip_l14_336"]
    dora, lora = stage2_id(compose([*base, "tuning=dora"])), stage2_id(compose([*base, "tuning=lora"]))
    assert "-dora64-" in dora and "-lora64-" in lora and dora != lora


def test_dora_trains_lora_matrices_and_magnitudes(root):
    cfg = compose([f"paths.root={root}", *FAST, "tuning=dora"])
    names = trainable_names(build_model(cfg, "finetune"))
    magnitudes = {n for n in names if "lora_magnitude_vector" in n}
    # One magnitude per wrapped linear: the 7 linears of every LLM block, none in CLIP.
    assert len(magnitudes) == 7 * cfg.model.num_layers
    assert all("language_model.layers." in n for n in magnitudes)
    assert sum("lora_A" in n for n in names) == sum("lora_B" in n for n in names) == 7 * cfg.model.num_layers
    assert not any("vision_tower" in n for n in names)


def test_two_stage_dora_run_saves_magnitudes_and_reloads(root):
    cfg = compose([f"paths.root={root}", *FAST, "tuning=dora"])
    validate(cfg)
    folder = run_pipeline(cfg)
    assert folder == run_dir(cfg) and is_done(folder) and is_done(stage1_dir(cfg))
    assert "-dora8-" in folder.name
    # Every entry of both run folders is one lmm.layout names.
    assert {p.name for p in folder.iterdir()} <= layout.ENTRIES
    assert {p.name for p in stage1_dir(cfg).iterdir()} <= layout.ENTRIES
    record = read_record(folder)
    assert record["hparams"]["method"] == "dora" and record["hparams"]["rank"] == 8
    assert record["finetune"]["steps"] == 3 and record["finetune"]["final_loss"] > 0

    adapter = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    magnitudes = {k: v for k, v in adapter.items() if "lora_magnitude_vector" in k}
    assert len(magnitudes) == 7 * cfg.model.num_layers
    # The magnitude of q_proj has one entry per output feature; the reloaded model carries the saved one.
    q = next(v for k, v in magnitudes.items() if "layers.0.self_attn.q_proj" in k)
    assert q.shape == (cfg.model.hidden_size,)

    model = load_trained(folder)
    loaded = dict(model.named_parameters())
    key = next(k for k in loaded if "layers.0.self_attn.q_proj.lora_magnitude_vector" in k)
    assert torch.equal(loaded[key].detach(), q)


def test_planner_counts_dora_magnitudes_and_its_extra_work():
    base = ["model=33b", "vision=clip_l14_336", "cluster=a100_80g"]
    dora_cfg, lora_cfg = compose([*base, "tuning=dora"]), compose([*base, "tuning=lora"])
    dora, lora = count_params(dora_cfg), count_params(lora_cfg)
    outputs = sum(lin.d_out for lin in llm_block_linears(dora_cfg.model))
    assert dora.lora == lora.lora + outputs * int(dora_cfg.model.num_layers)
    assert dora.lora_wrapped_linear == dora.llm_linear

    w_dora, w_lora = workload(dora_cfg, "finetune"), workload(lora_cfg, "finetune")
    f_dora = sample_flops(dora_cfg, dora, w_dora, 1000.0, 1)
    f_lora = sample_flops(lora_cfg, lora, w_lora, 1000.0, 1)
    # PEFT reruns every wrapped base linear on the dropped-out input: 2N forward and 2N activation gradient more.
    rerun = 2 * dora.llm_linear * 1000.0
    extra_adapter = 2 * (dora.lora - lora.lora) * 1000.0
    assert math.isclose(f_dora.forward - f_lora.forward, rerun + extra_adapter)
    assert estimate_memory(dora_cfg, dora, w_dora).activations > estimate_memory(lora_cfg, lora, w_lora).activations

    plan = preflight(dora_cfg, stage1_present=True)
    assert plan.cfg_summary.startswith("33b DoRA r64 336px")
    assert any(text.startswith("tuning=lora") for text, _, _ in fixes(dora_cfg, "finetune"))


def test_table4_labels_dora(root):
    cfg = compose([f"paths.root={root}", *FAST, "tuning=dora"])
    run_pipeline(cfg)  # done by the end-to-end test when it ran first: then skipped as finished
    frame = collect(root)
    view = runs_view(frame)
    assert view.loc[view["method"] == "dora", "tuning_label"].tolist() == ["DoRA r8"]
    t4 = tables.table4(frame)
    assert ("tiny_s", "DoRA r8") in list(t4.values.columns)
