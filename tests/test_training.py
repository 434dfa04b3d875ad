"""Two-stage training on tiny models: trainable sets, end-to-end runs per method, artifacts that reload."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lmm.config import compose
from lmm.eval.generate import Question, generate_answers
from lmm.launch.identity import run_dir, stage1_dir
from lmm.models.build import build_model
from lmm.models.checkpoint import load_trained
from lmm.models.trainable import parameter_table, trainable_names
from lmm.pipeline import run_pipeline
from lmm.records import is_done, read_record
from lmm.validate import ConfigError, validate

FAST = ["debug=fast", "tuning.rank=8"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def cfg_for(root, *overrides):
    return compose([f"paths.root={root}", *FAST, *overrides])


LLM_LINEARS = {f"{kind}_proj" for kind in ("q", "k", "v", "o", "gate", "up", "down")}


def lora_names(layers: int) -> set[str]:
    names = set()
    for i in range(layers):
        for linear in LLM_LINEARS:
            block = "self_attn" if linear[0] in "qkvo" else "mlp"
            for part in ("lora_A", "lora_B"):
                names.add(f"base_model.model.model.language_model.layers.{i}.{block}.{linear}.{part}.default.weight")
    return names


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_trainable_parameter_names_per_stage_and_method(root, method):
    cfg = cfg_for(root, f"tuning={method}")
    projector = {"model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.bias"}
    assert trainable_names(build_model(cfg, "pretrain")) == projector

    model = build_model(cfg, "finetune")
    names = trainable_names(model)
    if method == "full":
        llm = {n for n, _ in model.named_parameters() if n.startswith("model.language_model.")}
        assert names == projector | llm | {"lm_head.weight"}
        assert "model.language_model.embed_tokens.weight" in names
    else:
        assert names == {f"base_model.model.{n}" for n in projector} | lora_names(cfg.model.num_layers)
    assert not any("vision_tower" in n for n in names)
    table = parameter_table(model)
    assert table["vision_tower"]["trainable"] == 0 and table["vision_tower"]["frozen"] > 0
    if method == "qlora":
        kinds = {type(m).__name__ for n, m in model.named_modules() if "language_model.layers" in n}
        assert "Linear4bit" in kinds
        in_tower = {type(m).__name__ for n, m in model.named_modules() if "vision_tower" in n}
        assert "Linear4bit" not in in_tower


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bf16_without_deepspeed_trains_fp32_weights_so_small_updates_are_kept(root, method):
    model = build_model(cfg_for(root, f"tuning={method}", "trainer.precision=bf16", "deepspeed=none"), "finetune")
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and {p.dtype for p in trained} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}  # frozen: as loaded
    # Adam's first step moves every weight by lr: at the paper's 2e-5, under bf16's resolution for most weights.
    before = [p.detach().clone() for p in trained]
    for p in trained:
        p.grad = torch.ones_like(p)
    torch.optim.AdamW(trained, lr=2e-5, weight_decay=0.0).step()
    moved = sum(int((p != b).sum()) for p, b in zip(trained, before)) / sum(p.numel() for p in trained)
    assert moved > 0.99

    # Under DeepSpeed the weights stay bf16: its optimizer holds the fp32 master copy.
    zero2 = build_model(cfg_for(root, f"tuning={method}", "trainer.precision=bf16", "deepspeed=zero2"), "finetune")
    assert torch.bfloat16 in {p.dtype for p in zero2.parameters() if p.requires_grad}


def test_image_tokens_match_the_tower(root):
    from lmm.models.assemble import num_image_tokens

    assert num_image_tokens(compose(["vision=clip_l14_224"]).vision) == 256
    assert num_image_tokens(compose(["vision=clip_l14_336"]).vision) == 576
    model = build_model(cfg_for(root, "vision=tiny_48"), "pretrain")
    assert model.config.image_seq_length == 36 and model.config.vision_feature_layer == -2


def test_missing_local_only_checkpoint_fails_clearly(root):
    from lmm.models.assemble import MissingCheckpoint, assemble

    cfg = compose([f"paths.root={root}", "model=65b", "paths.vicuna_65b=null", "model.base=null"])
    with pytest.raises(MissingCheckpoint, match="LMM_VICUNA_65B"):
        assemble(cfg)
    # With a base LLM, the LLM is stage 0's: not assembled before stage 0 has finished.
    cfg = compose([f"paths.root={root}", "model=65b", "paths.vicuna_65b=null"])
    with pytest.raises(MissingCheckpoint, match="stage 0, which has not finished"):
        assemble(cfg)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_two_stages_end_to_end_save_reload_generate(root, method):
    cfg = cfg_for(root, f"tuning={method}", "tuning.merge_on_save=true")
    validate(cfg)
    folder = run_pipeline(cfg)
    assert folder == run_dir(cfg) and is_done(folder) and is_done(stage1_dir(cfg))
    record = read_record(folder)
    stats = record["finetune"]
    assert stats["steps"] == 3 and stats["final_loss"] > 0 and stats["tokens"] > 0
    assert record["stage1"]["run_id"] == stage1_dir(cfg).name
    assert (stage1_dir(cfg) / "projector.safetensors").exists()
    assert not (folder / "checkpoints").exists()
    if method == "full":
        assert (folder / "model" / "model.safetensors").exists()
    else:
        assert (folder / "adapter" / "adapter_config.json").exists() and (folder / "model").is_dir()
    # The stage-2 projector moved away from stage 1's.
    from safetensors.torch import load_file

    before = load_file(str(stage1_dir(cfg) / "projector.safetensors"))
    after = load_file(str(folder / "projector.safetensors"))
    assert not torch.equal(before["linear_1.weight"], after["linear_1.weight"])

    model = load_trained(folder)
    from transformers import AutoTokenizer, CLIPImageProcessor

    tokenizer = AutoTokenizer.from_pretrained(record["assembled"])
    processor = CLIPImageProcessor.from_pretrained(record["assembled"])
    data = json.loads(Path(cfg.data.path).with_name("eval.json").read_text())[:2]
    questions = [Question(d["id"], d["question"], f"{cfg.data.image_folder}/{d['image']}") for d in data]
    answers = generate_answers(model, tokenizer, processor, "vicuna_v1", questions, num_image_tokens=16,
                               max_new_tokens=4, num_beams=1)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_stage1_checkpoints_its_frozen_llm_as_the_planner_assumes_with_the_same_losses(tmp_path):
    """The projector's gradient flows back through the frozen LLM: checkpointing must recompute, not cut it."""
    from safetensors.torch import load_file

    losses, projectors = {}, {}
    for on in (True, False):
        cfg = cfg_for(tmp_path / str(on), "stage=pretrain", f"trainer.gradient_checkpointing={str(on).lower()}")
        assert build_model(cfg, "pretrain").is_gradient_checkpointing is on
        folder = run_pipeline(cfg)
        losses[on] = [e["loss"] for e in read_record(folder)["pretrain"]["losses"]]
        projectors[on] = load_file(str(folder / "projector.safetensors"))
    assert len(losses[True]) == 3 and losses[True] == pytest.approx(losses[False], abs=1e-6)
    # Trained alike: a checkpointed LLM that cut the gradient would leave the projector at its initial weights.
    for name, weight in projectors[False].items():
        assert torch.allclose(projectors[True][name], weight, atol=1e-6), name


def test_stage1_is_shared_and_never_retrained(root):
    full = cfg_for(root, "tuning=full")
    run_pipeline(full)
    s1 = stage1_dir(full) / "projector.safetensors"
    stamp = s1.stat().st_mtime_ns
    lora = cfg_for(root, "tuning=lora")
    assert stage1_dir(lora) == stage1_dir(full)
    run_pipeline(lora)
    assert s1.stat().st_mtime_ns == stamp


def test_finetune_without_stage1_names_the_command(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", *FAST, "stage=finetune"])
    with pytest.raises(ConfigError, match=re.escape("python -m lmm.train stage=pretrain model=tiny_s")):
        validate(cfg, stage1_exists=(stage1_dir(cfg) / "DONE").exists())


def test_mlp2x_checkpoint_loads_with_the_stock_class(root):
    from transformers import LlavaForConditionalGeneration

    cfg = cfg_for(root, "projector=mlp2x_gelu", "tuning=full")
    folder = run_pipeline(cfg)
    model = LlavaForConditionalGeneration.from_pretrained(folder / "model")
    assert type(model) is LlavaForConditionalGeneration
    assert hasattr(model.model.multi_modal_projector, "linear_2")
