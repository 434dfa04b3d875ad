"""`bench.throughput --gpu`: the ~1B LLaVA preset, its variants (full, LoRA, QLoRA, checkpointing, compile), MFU."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import torch

from bench.mfu import device_peak, mfu
from bench.throughput import flop_counter, trainer_run
from lmm.config import compose
from lmm.data.collator import LlavaCollator
from lmm.data.tokenize import IGNORE_INDEX
from lmm.models.assemble import assemble, num_image_tokens
from lmm.models.build import build_model
from lmm.training.speed import attn_implementation

# Each variant's overrides on top of the preset. Checkpointing is set explicitly (the bench measures both);
# QLoRA: 4-bit NF4 base through bitsandbytes (on a GPU).
VARIANTS = {
    "full": ["tuning=full", "trainer.gradient_checkpointing=false"],
    "full-gc": ["tuning=full", "trainer.gradient_checkpointing=true"],
    "lora": ["tuning=lora", "trainer.gradient_checkpointing=false"],
    "lora-gc": ["tuning=lora", "trainer.gradient_checkpointing=true"],
    "qlora": ["tuning=qlora", "trainer.gradient_checkpointing=false"],
    "full-compile": ["tuning=full", "trainer.gradient_checkpointing=false", "speed.torch_compile=true"],
}


def preset_overrides(root: str, batch: int, tokenizer: str | None) -> list[str]:
    """The ~1B preset: bench_1b + a CLIP-L/14-336-shaped tower, stage 2 only, one micro-batch per step."""
    out = [f"paths.root={root}", "model=bench_1b", "vision=bench_clip_l14_336", "projector=linear",
           "stage=finetune", "stage.projector_path=none", "trainer.warmup_ratio=0", "trainer.lr_scheduler=constant",
           "trainer.logging_steps=1000000", "trainer.save_steps=1000000"]
    for recipe in ("full", "lora"):
        out += [f"model.recipe.{recipe}.micro_batch_size={batch}", f"model.recipe.{recipe}.global_batch_size={batch}"]
    if tokenizer:
        out.append(f"model.tokenizer={tokenizer}")
    return out


def padded_tokenizer(folder: Path, vocab_size: int, cache_dir: Path) -> Path:
    """The tiny tokenizer grown to `vocab_size` entries with placeholder tokens, so the random-init LLM gets
    LLaMA's embedding and lm_head size (and the loss its softmax width) without any download."""
    from lmm.data.tokenizer import build_tiny_tokenizer

    if not (folder / "tokenizer.json").exists():
        tokenizer = build_tiny_tokenizer(cache_dir)
        tokenizer.add_tokens([f"<bench{i}>" for i in range(max(vocab_size - len(tokenizer), 0))])
        tokenizer.save_pretrained(folder)
    return folder


class FixedLengthSamples(torch.utils.data.Dataset):
    """Training samples of exactly `seq` tokens: `<s>`, the image's tokens, then random text whose second half
    is the answer (labels), each with an image. A few distinct samples are cycled: making them costs nothing
    per step, and the model's cost does not depend on their values."""

    def __init__(self, count: int, seq: int, image_tokens: int, image_token_id: int, pad_token_id: int,
                 vocab_size: int, image_size: int, pool: int = 8, seed: int = 0):
        text = seq - 1 - image_tokens
        if text < 2:
            raise ValueError(f"--seq {seq} leaves no text after {image_tokens} image tokens")
        g = torch.Generator().manual_seed(seed)
        self.count = count
        self.items = []
        for _ in range(pool):
            words = torch.randint(3, vocab_size, (text,), generator=g)
            words[(words == image_token_id) | (words == pad_token_id)] = 3
            ids = [1] + [image_token_id] * image_tokens + words.tolist()
            labels = [IGNORE_INDEX] * (len(ids) - text // 2) + ids[len(ids) - text // 2:]
            pixels = torch.randn(3, image_size, image_size, generator=g)
            self.items.append({"input_ids": ids, "labels": labels, "pixel_values": pixels})

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return self.items[index % len(self.items)]


def run_variant(name: str, args, root: str, tokenizer_folder: str | None) -> dict:
    """Build the variant's model, train warm-up + timed steps through lmm's Trainer, return its row."""
    from transformers import AutoTokenizer

    cfg = compose([*preset_overrides(root, args.batch, tokenizer_folder), *VARIANTS[name], *args.overrides])
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(assemble(cfg))
    torch.manual_seed(0)
    model = build_model(cfg, "finetune")
    kernel = attn_implementation(cfg)
    if model.config._attn_implementation != kernel:  # build_model leaves transformers' default (sdpa)
        model.set_attn_implementation(kernel)
    built_s = time.perf_counter() - started
    vocab = model.get_output_embeddings().weight.shape[0]
    dataset = FixedLengthSamples((args.warmup + args.steps) * args.batch, args.seq, num_image_tokens(cfg.vision),
                                 tokenizer.convert_tokens_to_ids("<image>"), tokenizer.pad_token_id, vocab,
                                 int(cfg.vision.image_size))
    counter = flop_counter(cfg, model, tokenizer)
    timed = trainer_run(cfg, model, dataset, LlavaCollator(pad_token_id=tokenizer.pad_token_id), counter,
                        args.steps, args.warmup, os.path.join(root, f"bench-{name}"))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"variant": name, "method": str(cfg.tuning.method), "gradient_checkpointing": bool(
        cfg.trainer.gradient_checkpointing), "torch_compile": bool(cfg.speed.torch_compile), "attention": kernel,
        "params": params, "trainable_params": trainable, "batch": args.batch, "seq": args.seq,
        "build_s": round(built_s, 1),
        "tokens_per_s": timed.tokens_per_s, "step_s": timed.step_s,
        "model_tflop_per_step": timed.model_flops_per_step / 1e12,
        "achieved_tflops": timed.model_flops_per_s / 1e12, "hardware_tflops": timed.hardware_flops_per_s / 1e12,
        "peak_mem_gb": timed.peak_mem_gb}


def print_rows(rows: list[dict], peak) -> None:
    print(f"{'variant':<13} {'tokens/s':>10} {'s/step':>7} {'TFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'MFU spec':>8} {'peak GB':>8}")
    for r in rows:
        m = "" if r.get("mfu") is None else f"{r['mfu']:.3f}"
        s = "" if r.get("mfu_spec") is None else f"{r['mfu_spec']:.3f}"
        print(f"{r['variant']:<13} {r['tokens_per_s']:>10.0f} {r['step_s']:>7.3f} {r['model_tflop_per_step']:>10.4g} "
              f"{r['achieved_tflops']:>8.3g} {m:>6} {s:>8} {r['peak_mem_gb']:>8.1f}")
    if peak is None:
        print("MFU: no GPU here, achieved TFLOP/s only")
    elif peak.denominator is None:
        print(f"MFU: unknown bf16 peak for {peak.gpu}: pass --peak-tflops")
    else:
        basis = "measured bf16 matmul peak" if peak.measured else "data-sheet dense bf16 peak"
        print(f"MFU = achieved model TFLOP/s / {peak.denominator:g} ({peak.gpu}: {basis}); "
              f"MFU spec = / {peak.spec:g} (data sheet). Model FLOPs leave out checkpointing's recomputation.")


def gpu_main(args, root: str) -> dict:
    """Run the chosen variants one after another; print one row each and return them all."""
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    peak = device_peak(gpu, args.peak_tflops)
    if gpu is None:
        print("no GPU: the --gpu preset runs on the CPU in fp32 (shrink it with overrides)")
    folder = None
    if args.vocab:
        folder = str(padded_tokenizer(Path(root) / f"tokenizer-{args.vocab}", args.vocab, Path(root) / "cache"))
    rows = []
    for name in names:
        row = run_variant(name, args, root, folder)
        row["mfu"] = mfu(row["achieved_tflops"] * 1e12, peak.denominator if peak else None)
        row["mfu_spec"] = mfu(row["achieved_tflops"] * 1e12, peak.spec if peak else None)
        rows.append(row)
        print(f"{name}: {row['tokens_per_s']:.0f} tokens/s, {row['achieved_tflops']:.3g} TFLOP/s"
              + (f", MFU {row['mfu']:.3f}" if row["mfu"] is not None else ""), flush=True)
    print_rows(rows, peak)
    return {"gpu": gpu, "peak": None if peak is None else vars(peak) | {"denominator": peak.denominator},
            "rows": rows}
