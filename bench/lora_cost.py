"""LoRA's cost against full fine-tuning as the LLM widens: seconds per training step of each, and their ratio.

    python -m bench.lora_cost [--widths 256,512,1024] [--steps 5] [--repeats 2] [--json F]

Why: the paper's Table 4 has LoRA cheaper than full fine-tuning, more so as the model grows (GPU-hours per
node, LoRA/full: 0.91× at 13B, 0.83× at 33B, 0.68× at 65B), while the CPU toy study measures LoRA *dearer*
(finding 5b). This bench measures where that turns. At each width it trains the toy's LLM shape (4 blocks,
FFN 3× wide, 32-wide heads, the tiny tokenizer) behind the toy's 48 px tower through lmm's Trainer, once with
full fine-tuning and once with the toy's LoRA (rank 8, alpha 16, dropout 0.05), on identical fixed-length
samples (batch 8 × 100 tokens, the toy's shape). The two alternate and each keeps its best step time, so
other load on the machine hits both alike; full fine-tuning at the same width is the baseline.

What LoRA saves is the weight gradient of every frozen matrix (tokens × width² per matrix) and AdamW's update
of it; what it adds is the adapters' skinny products and the dropout of their inputs (tokens × width): the
saving grows with width faster than the cost, so the ratio falls with width.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from types import SimpleNamespace

import torch

from bench.gpu_preset import run_variant

PAPER_RATIOS = "0.91× at 13B, 0.83× at 33B, 0.68× at 65B"
TOY_TUNING = {"full": ["tuning=full"], "lora": ["tuning=lora", "tuning.rank=8", "tuning.dropout=0.05"]}


def shape_overrides(width: int) -> list[str]:
    """The toy's LLM shape at `width` (tiny_l is 256 wide) behind the toy's 48 px tower."""
    return ["vision=tiny_48", f"model.hidden_size={width}", f"model.intermediate_size={3 * width}",
            "model.num_layers=4", f"model.num_heads={max(width // 32, 1)}", "trainer.gradient_checkpointing=false"]


def measure(width: int, args, root: str) -> dict:
    """Best seconds per step of full fine-tuning and of LoRA at one width, alternating the two."""
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for method, tuning in TOY_TUNING.items():
            run = SimpleNamespace(batch=args.batch, warmup=args.warmup, steps=args.steps, seq=args.seq,
                                  overrides=[*shape_overrides(width), *tuning])
            row = run_variant(method, run, root, None)
            if method not in best or row["step_s"] < best[method]["step_s"]:
                best[method] = row
    full, lora = best["full"], best["lora"]
    return {"width": width, "params": full["params"], "full_step_s": full["step_s"], "lora_step_s": lora["step_s"],
            "lora_over_full": lora["step_s"] / full["step_s"],
            "trainable_fraction": lora["trainable_params"] / full["trainable_params"]}


def widths(text: str) -> list[int]:
    """`--widths`: comma-separated LLM widths, each a positive multiple of 32 (the toy's heads are 32 wide)."""
    try:
        values = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        values = []
    if not values or any(w <= 0 or w % 32 for w in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give widths that are positive multiples of 32, e.g. 256,512")
    return values


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=widths, default="256,512,1024", help="LLM hidden sizes (tiny_l: 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=100, help="tokens per sample (36 of them the image's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", default=os.environ.get("LMM_BENCH_ROOT"))
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="lmm-bench-")
    rows = [measure(width, args, root) for width in args.widths]
    device = "GPU" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"LoRA r8 vs full fine-tuning, seconds per step ({device}; batch {args.batch} × {args.seq} tokens; "
          f"best of {args.repeats} × {args.steps} steps)")
    print(f"{'width':>6} {'params':>11} {'LoRA trains':>12} {'full s/step':>12} {'LoRA s/step':>12} "
          f"{'LoRA/full':>10}")
    for r in rows:
        print(f"{r['width']:>6} {r['params'] / 1e6:>10.1f}M {r['trainable_fraction']:>11.2f}× "
              f"{r['full_step_s']:>12.3f} {r['lora_step_s']:>12.3f} {r['lora_over_full']:>9.2f}×")
    print(f"paper (Table 4, GPU-hours per node, LoRA/full): {PAPER_RATIOS}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return rows


if __name__ == "__main__":
    main()
