"""Every random initialisation comes from the run's seed: identical LoRA runs train identically."""

from __future__ import annotations

import pytest
import torch

from lmm.config import compose
from lmm.launch.identity import stage1_dir
from lmm.models.build import build_model
from lmm.pipeline import run_pipeline
from lmm.records import read_record

FAST = ["debug=fast", "tuning=lora", "tuning.rank=8", "trainer.max_steps=5"]


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_lora_adapters_start_from_the_seed(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", *FAST])
    first = lora_weights(build_model(cfg, "finetune"))
    torch.rand(1000)  # whatever drew random numbers in between must not matter
    second = lora_weights(build_model(cfg, "finetune"))
    assert first and first.keys() == second.keys()
    assert all(torch.equal(first[n], second[n]) for n in first)
    other = lora_weights(build_model(compose([f"paths.root={tmp_path}", *FAST, "seed=7"]), "finetune"))
    assert any(not torch.equal(first[n], other[n]) for n in first if "lora_A" in n)


@pytest.mark.parametrize("dropout", ["0.05", "0"])
def test_two_identical_lora_runs_have_identical_losses(tmp_path, dropout):
    """The first run trains its stage 1 right before stage 2; the second reuses that projector, so its global
    RNG reaches the LoRA initialisation in another state (as for any run whose stage 1 already exists)."""
    common = [f"paths.cache_dir={tmp_path / 'cache'}", *FAST, f"tuning.dropout={dropout}"]
    first_cfg = compose([f"paths.root={tmp_path / 'first'}", *common])
    first = run_pipeline(first_cfg)
    torch.rand(1000)
    second = run_pipeline(compose([f"paths.root={tmp_path / 'second'}", *common, "stage=finetune",
                                   f"stage.projector_path={stage1_dir(first_cfg)}"]))
    losses = [[(e["step"], e["loss"]) for e in read_record(folder)["finetune"]["losses"]] for folder in (first, second)]
    assert [step for step, _ in losses[0]] == [1, 2, 3, 4, 5]
    assert losses[0] == losses[1]
