"""The GPU path on a CPU: FLOP count and MFU, the --gpu bench preset, speed settings, sharded generation, gpu_check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.mfu import FlopCounter, device_peak, mfu, model_flops
from lmm.config import compose
from lmm.data.collator import LlavaCollator
from lmm.eval.generate import Question, generate_answers
from lmm.models.assemble import assemble, num_image_tokens
from lmm.models.checkpoint import eval_placement, load_for_eval, load_trained
from lmm.models.llava import LmmLlava
from lmm.plan.checkpointing import checkpointing_needed
from lmm.plan.params import count_params
from lmm.training.speed import attn_implementation, training_speed_arguments

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_m", "vision=tiny_48", "tuning=full", "trainer.gradient_checkpointing=false"]
# The --gpu preset shrunk to CPU size: same code path, widths and depths cut.
SHRINK = ["model.hidden_size=64", "model.intermediate_size=128", "model.num_layers=2", "model.num_heads=2",
          "vision.hidden_size=32", "vision.intermediate_size=64", "vision.num_layers=2", "vision.num_heads=2"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu-path")


@pytest.fixture(scope="module")
def tiny(root):
    """The tiny LLaVA (tiny_m + a 48 px tower): config, assembled folder, tokenizer, image processor."""
    from transformers import AutoTokenizer, CLIPImageProcessor

    cfg = compose([f"paths.root={root}", *TINY])
    folder = assemble(cfg)
    return cfg, folder, AutoTokenizer.from_pretrained(folder), CLIPImageProcessor.from_pretrained(folder)


# -- FLOPs and MFU ------------------------------------------------------------------------------------------

def test_flop_count_of_a_tiny_model_matches_a_hand_count(tiny):
    cfg, folder, tokenizer, _ = tiny
    model = LmmLlava.from_pretrained(folder)
    vocab = model.get_output_embeddings().weight.shape[0]
    counter = FlopCounter(cfg, vocab, tokenizer.convert_tokens_to_ids("<image>"))
    # The count uses the built model's vocabulary and matches its real parameter count.
    assert count_params(counter.cfg).total == sum(p.numel() for p in model.parameters())

    seq = 100
    d, i, layers, v = 128, 384, 4, vocab  # tiny_m
    blocks = layers * (4 * d * d + 3 * d * i)  # q, k, v, o + gate, up, down (no GQA)
    image_tokens, projector = 36, 64 * 128 + 128  # 48 px / 8 px patches; linear 64 -> 128 with bias
    dense, attention, head = 2 * blocks * seq, 2 * layers * d * seq**2, 2 * v * d * seq
    forward = dense + attention + head + 2 * projector * image_tokens
    backward = (dense + 2 * attention + head) + (2 * projector * image_tokens + dense + head)  # input + weight grads
    dv, iv, n = 64, 256, 37  # the tower: width, MLP, tokens with CLS
    tower_linear = 3 * (4 * (dv * dv + dv) + (dv * iv + iv) + (iv * dv + dv))
    vision = 2 * tower_linear * n + 4 * 3 * dv * n**2 + 2 * 3 * 8 * 8 * dv * 36
    flops = counter.samples([seq], [1])
    assert flops.forward == pytest.approx(forward)
    assert flops.backward == pytest.approx(backward)
    assert flops.vision == pytest.approx(vision)
    assert flops.recompute == 0
    assert model_flops(flops) == pytest.approx(forward + backward + vision)
    # A text-only sample has no tower and no projector; a collated batch counts each row at its own length.
    text = counter.samples([40], [0])
    assert text.vision == 0 and text.forward == pytest.approx(2 * blocks * 40 + 2 * layers * d * 1600 + 2 * v * d * 40)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    items = [{"input_ids": [1] + [image_id] * 36 + [5] * 63, "labels": [5] * 100},
             {"input_ids": [1] + [7] * 39, "labels": [7] * 40}]
    batch = LlavaCollator(pad_token_id=tokenizer.pad_token_id)(items)
    assert model_flops(counter.batch(batch)) == pytest.approx(model_flops(flops) + model_flops(text))


def test_gradient_checkpointing_recomputation_is_hardware_flops_not_model_flops(root):
    with_gc = FlopCounter(compose([f"paths.root={root}", *TINY[:-1], "trainer.gradient_checkpointing=true"]), 1000, 1)
    without = FlopCounter(compose([f"paths.root={root}", *TINY]), 1000, 1)
    a, b = with_gc.samples([64], [1]), without.samples([64], [1])
    assert model_flops(a) == pytest.approx(model_flops(b))
    assert a.recompute > 0 and a.total > b.total


def test_mfu_against_the_measured_or_the_data_sheet_peak():
    h200 = device_peak("NVIDIA H200")
    assert (h200.spec, h200.measured, h200.denominator) == (989.0, 790.0, 790.0)
    assert mfu(395e12, h200.denominator) == pytest.approx(0.5)
    assert mfu(395e12, h200.spec) == pytest.approx(395 / 989)
    assert device_peak("NVIDIA A100-SXM4-80GB").denominator == 312.0
    assert device_peak("NVIDIA H100 80GB HBM3").denominator == 989.0
    assert device_peak("NVIDIA H100 PCIe").denominator == 756.0
    assert device_peak("Some GPU").denominator is None
    assert device_peak("Some GPU", override_tflops=100.0).denominator == 100.0
    assert device_peak(None) is None and mfu(1e12, None) is None  # CPU: achieved TFLOP/s only


# -- the --gpu bench preset -----------------------------------------------------------------------------------

def test_gpu_preset_is_a_1b_llama_and_a_clip_l_336(root):
    from bench.gpu_preset import VARIANTS, preset_overrides

    for variant in VARIANTS.values():
        cfg = compose([*preset_overrides(str(root), 8, None), *variant, "model.vocab_size=32000"])
        counts = count_params(cfg)
        assert 0.9e9 < counts.llm < 1.0e9 and 0.29e9 < counts.vision < 0.31e9
        assert num_image_tokens(cfg.vision) == 576 and cfg.vision.path is None and cfg.model.path is None
        assert cfg.tuning.micro_batch_size == cfg.tuning.global_batch_size == 8


def test_gpu_preset_builds_and_trains_on_cpu_at_reduced_size(root, tmp_path):
    from bench.throughput import main

    out = tmp_path / "bench.json"
    main(["--gpu", "--variants", "full,lora-gc", "--steps", "1", "--warmup", "1", "--batch", "2", "--seq", "600",
          "--vocab", "1100", "--root", str(root / "bench"), "--json", str(out), *SHRINK, "tuning.rank=4"])
    result = json.loads(out.read_text())
    assert result["gpu"] is None and result["peak"] is None
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"full", "lora-gc"}
    assert rows["full"]["method"] == "full" and rows["lora-gc"]["method"] == "lora"
    assert rows["lora-gc"]["gradient_checkpointing"] is True and rows["full"]["gradient_checkpointing"] is False
    for row in rows.values():
        assert row["seq"] == 600 and row["attention"] == "sdpa"
        assert row["tokens_per_s"] > 0 and row["achieved_tflops"] > 0 and row["mfu"] is None
        # 2 samples of 600 tokens per step: the planner's count for this shape
        assert row["model_tflop_per_step"] > 0
    # LoRA trains no base weights: fewer model FLOPs per step than full fine-tuning of the same model.
    assert rows["lora-gc"]["model_tflop_per_step"] < rows["full"]["model_tflop_per_step"]


# -- speed settings and the automatic gradient checkpointing ----------------------------------------------

def test_speed_settings_on_cpu(root):
    cfg = compose([f"paths.root={root}"])
    assert attn_implementation(cfg) == "sdpa"
    assert attn_implementation(compose([f"paths.root={root}", "speed.attn_implementation=eager"])) == "eager"
    with pytest.raises(ValueError, match="speed.attn_implementation"):
        attn_implementation(compose([f"paths.root={root}", "speed.attn_implementation=fast"]))
    assert training_speed_arguments(cfg) == {"optim": "adamw_torch_fused", "tf32": None, "torch_compile": False,
                                             "dataloader_pin_memory": True}
    from lmm.training.arguments import training_arguments

    args = training_arguments(compose([f"paths.root={root}", "speed.fused_adamw=false"]), "finetune", root / "a", "x")
    assert args.optim == "adamw_torch" and args.torch_compile is False


def test_gradient_checkpointing_follows_the_planner_unless_set(root):
    fits = ["model=7b", "cluster=a100_80g", "deepspeed=zero3", "tuning=lora", "tuning.micro_batch_size=1",
            "tuning.global_batch_size=8"]
    assert checkpointing_needed(compose(fits)) is False
    assert checkpointing_needed(compose([*fits[:-2], "tuning.micro_batch_size=16",
                                         "tuning.global_batch_size=128"])) is True
    unknown = ["cluster.gpu_type=h200", "cluster.gpu_mem_gb=0"]  # no memory to plan against: on
    assert checkpointing_needed(compose([*fits, *unknown])) is True
    # Explicit values stay; paper runs keep LLaVA's setting (on) that the time model is calibrated with.
    assert compose([f"paths.root={root}", "trainer.gradient_checkpointing=true"]).trainer.gradient_checkpointing is True
    off = compose([f"paths.root={root}", "trainer.gradient_checkpointing=false"])
    assert off.trainer.gradient_checkpointing is False
    assert compose(["experiment=table4/7b_full"]).trainer.gradient_checkpointing is True
    assert isinstance(compose([f"paths.root={root}"]).trainer.gradient_checkpointing, bool)


def _losses(folder: Path, batch: dict, kernel: str, autocast: bool) -> float:
    model = LmmLlava.from_pretrained(folder, attn_implementation=kernel).eval()
    assert model.config._attn_implementation == kernel
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return float(model(**batch).loss)


def test_sdpa_and_bf16_autocast_match_eager_fp32(tiny):
    from bench.gpu_preset import FixedLengthSamples

    cfg, folder, tokenizer, _ = tiny
    samples = FixedLengthSamples(2, 80, 36, tokenizer.convert_tokens_to_ids("<image>"), tokenizer.pad_token_id,
                                 len(tokenizer), 48, pool=2)
    items = [samples[0], {k: (v[:60] if isinstance(v, list) else v) for k, v in samples[1].items()}]  # padding
    batch = LlavaCollator(pad_token_id=tokenizer.pad_token_id)(items)
    eager = _losses(folder, batch, "eager", autocast=False)
    assert _losses(folder, batch, "sdpa", autocast=False) == pytest.approx(eager, rel=1e-5)
    assert _losses(folder, batch, "sdpa", autocast=True) == pytest.approx(eager, rel=2e-2)


# -- sharded generation --------------------------------------------------------------------------------------

def test_sharded_model_generates_the_same_tokens(tiny, root):
    cfg, folder, tokenizer, processor = tiny
    run = root / "eval-run"
    if not run.exists():
        shutil.copytree(folder, run / "model")
    colours = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (250, 250, 0), (120, 0, 120)]
    questions = [Question(str(k), text, Image.new("RGB", (48, 48), c)) for k, (text, c) in enumerate(zip(
        ["What colour is the shape?", "How many circles are there?", "Describe the image.", "Where is the star?",
         "What is written in the image?"], colours))]
    whole = load_trained(run, dtype=torch.float32)
    on_cpu = load_trained(run, dtype=torch.float32, device_map={"": "cpu"})
    layers = {f"model.language_model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(4)}
    split = {"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu",
             "model.language_model.embed_tokens": "disk", **layers, "model.language_model.norm": "cpu",
             "model.language_model.rotary_emb": "cpu", "lm_head": "disk"}
    offloaded = load_trained(run, dtype=torch.float32, device_map=split, offload_folder=str(root / "offload"))
    assert set(offloaded.hf_device_map.values()) == {"cpu", "disk"}
    for beams in (1, 5):
        def answers(model, beams=beams):
            return generate_answers(model, tokenizer, processor, cfg.model.template, questions, num_beams=beams,
                                    num_image_tokens=num_image_tokens(cfg.vision), max_new_tokens=6, batch_size=2)
        reference = answers(whole)
        assert answers(on_cpu) == reference
        assert answers(offloaded) == reference
    # On a CPU-only machine evaluation loads as before: whole, on the CPU.
    assert eval_placement(cfg) == {}
    model = load_for_eval(cfg, run)
    assert not model.training and next(model.parameters()).device.type == "cpu"


# -- scripts/gpu_check.sh ------------------------------------------------------------------------------------

def test_gpu_check_says_no_gpu_and_exits_77_on_a_cpu_machine(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": str(REPO / ".venv" / "bin" / "python")}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 77
    assert "no GPU here" in done.stderr and "nothing was checked" in done.stderr
    assert "no GPU here" in (tmp_path / "summary.txt").read_text()


def test_gpu_check_summary_table_and_exit_code(tmp_path):
    from bench.gpu_check import summary

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"ok": True, "key": "1234 tok/s, MFU 0.410"}))
    bad.write_text(json.dumps({"ok": False, "key": "7/8 answers identical"}))
    status = tmp_path / "status.tsv"
    status.write_text(f"bench full\t0\t{good}\t30\ninstall\t0\t\t5\n")
    assert summary(str(status), str(tmp_path / "table.txt")) == 0
    assert "2/2 checks ok" in (tmp_path / "table.txt").read_text()
    status.write_text(f"bench full\t0\t{good}\t30\neval\t1\t{bad}\t9\nzero3\t124\t{tmp_path / 'none.json'}\t150\n"
                      f"compile\t125\t{tmp_path / 'none.json'}\t0\n")
    assert summary(str(status), str(tmp_path / "table.txt")) == 1
    table = (tmp_path / "table.txt").read_text()
    assert "MFU 0.410" in table and "7/8 answers identical" in table and "timed out after 150 s" in table
    assert "skipped: the script's time budget was spent" in table
    assert "1/4 checks ok; FAILED: eval, zero3, compile" in table


def test_evaluation_is_sharded_over_the_gpus_within_the_memory_limit(monkeypatch, root):
    import types

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=80 * 2**30))
    share = int(0.85 * 80 * 2**30)
    assert eval_placement(compose([f"paths.root={root}"])) == {"device_map": "auto", "max_memory": {0: share, 1: share}}
    limited = eval_placement(compose([f"paths.root={root}", "eval.max_memory_per_gpu_gb=40"]))
    assert limited["max_memory"] == {0: 40 * 2**30, 1: 40 * 2**30}  # no CPU entry: too big fails, never crawls
    assert eval_placement(compose([f"paths.root={root}", "eval.device_map=none"])) == {"device_map": {"": 0}}
    with pytest.raises(ValueError, match="eval.device_map"):
        eval_placement(compose([f"paths.root={root}", "eval.device_map=everywhere"]))


def test_lora_cost_bench_times_full_and_lora_at_each_width(root, tmp_path):
    from bench.lora_cost import main

    out = tmp_path / "lora.json"
    rows = main(["--widths", "64", "--steps", "1", "--warmup", "1", "--repeats", "1", "--batch", "2",
                 "--root", str(root / "bench"), "--json", str(out)])
    [row] = rows
    assert row["width"] == 64 and json.loads(out.read_text()) == rows
    assert row["full_step_s"] > 0 and row["lora_step_s"] > 0
    assert row["lora_over_full"] == row["lora_step_s"] / row["full_step_s"]
    assert 0 < row["trainable_fraction"] < 1  # LoRA trains the adapters and the projector only


@pytest.mark.parametrize("bad", ["abc", "256,100", "0", ","])
def test_lora_cost_bench_refuses_a_width_naming_the_option(bad, capsys):
    from bench.lora_cost import main

    with pytest.raises(SystemExit) as refused:
        main(["--widths", bad])
    assert refused.value.code == 2
    assert f"argument --widths: {bad!r}: give widths that are positive multiples of 32, e.g. 256,512" in \
        capsys.readouterr().err
