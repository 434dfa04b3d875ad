"""Throughput of lmm's training stack vs a bare PyTorch loop on the same model and batches; padding.

    python -m bench.throughput [--steps 30] [--model tiny_m] [--data synthetic_mix]

Both loops train the same stage-2 model (full fine-tuning) on the same length-grouped batches
from the same collator, with AdamW at the same learning rate; both are timed after warm-up steps.
Prints tokens/s (non-padding tokens) of each and their ratio (target: lmm ≥ 0.9 × bare), and the
padding fraction of an epoch's batches with and without length grouping (target: ≤ 10 % grouped).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch

from lmm.config import compose
from lmm.data.sampler import ModalityLengthGroupedSampler, batched, padding_fraction
from lmm.models.assemble import assemble, num_image_tokens
from lmm.models.build import build_model
from lmm.training.data import build_training_data


def _config(args, root: str):
    return compose([f"paths.root={root}", f"model={args.model}", f"data={args.data}", "stage=finetune",
                    "stage.projector_path=none", f"model.recipe.full.micro_batch_size={args.batch}",
                    f"model.recipe.full.global_batch_size={args.batch}", "trainer.gradient_checkpointing=false",
                    f"data.synthetic_num_train={args.samples}", "trainer.warmup_ratio=0",
                    "trainer.lr_scheduler=constant", "trainer.logging_steps=1000000",
                    "trainer.save_steps=1000000"])


def _data(cfg):
    from transformers import AutoTokenizer, CLIPImageProcessor

    folder = assemble(cfg)
    tokenizer, processor = AutoTokenizer.from_pretrained(folder), CLIPImageProcessor.from_pretrained(folder)
    return build_training_data(cfg, "finetune", tokenizer, processor, num_image_tokens(cfg.vision))


def bare_loop(cfg, data, steps: int, warmup: int) -> float:
    """Tokens/s of a plain loop: forward, backward, AdamW step, on the grouped batches."""
    torch.manual_seed(0)
    model = build_model(cfg, "finetune")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg.tuning.lr), weight_decay=0.0)
    sampler = data.sampler_factory(int(cfg.seed))
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=int(cfg.tuning.micro_batch_size),
                                         sampler=sampler, collate_fn=data.collator)
    tokens, started = 0, None
    for step, batch in enumerate(loader):
        if step == warmup:
            tokens, started = 0, time.perf_counter()
        if step == warmup + steps:
            break
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - started)


def lmm_loop(cfg, data, steps: int, warmup: int, out_dir: str) -> float:
    """Tokens/s of lmm's Trainer (same model, sampler and collator), timed after warm-up."""
    from transformers import TrainerCallback

    from lmm.training.arguments import training_arguments
    from lmm.training.trainer import LmmTrainer

    torch.manual_seed(0)
    model = build_model(cfg, "finetune")
    args = training_arguments(cfg, "finetune", out_dir, run_name="bench")
    args.max_steps = warmup + steps
    trainer = LmmTrainer(model=model, args=args, train_dataset=data.dataset, data_collator=data.collator,
                         train_sampler_factory=data.sampler_factory)
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step == warmup:
                marks["start"], marks["tokens"] = time.perf_counter(), trainer.tokens_seen

    trainer.add_callback(Clock())
    trainer.train()
    return (trainer.tokens_seen - marks["tokens"]) / (time.perf_counter() - marks["start"])


def padding_report(data, batch: int, seed: int = 0) -> tuple[float, float]:
    lengths = data.dataset.lengths
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    grouped = ModalityLengthGroupedSampler(lengths, data.dataset.has_image, batch, 1, seed).order(0)
    return padding_fraction(lengths, batched(order, batch)), padding_fraction(lengths, batched(grouped, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_m")
    parser.add_argument("--data", default="synthetic_mix", help="a data option (mixing gives varied lengths)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", default=os.environ.get("LMM_BENCH_ROOT"))
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="lmm-bench-")
    cfg = _config(args, root)
    data = _data(cfg)
    # Alternate the two and keep each one's best: other load on the machine hits both alike.
    bares, ours_all = [], []
    for repeat in range(args.repeats):
        bares.append(bare_loop(cfg, data, args.steps, args.warmup))
        ours_all.append(lmm_loop(cfg, data, args.steps, args.warmup, os.path.join(root, f"bench-{repeat}")))
    bare, ours = max(bares), max(ours_all)
    random_pad, grouped_pad = padding_report(data, args.batch)
    device = "GPU" if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model {args.model}, data {args.data}, micro-batch {args.batch}, {args.steps} timed steps, "
          f"best of {args.repeats}, {device}")
    print(f"bare PyTorch loop : {bare:10.1f} tokens/s")
    print(f"lmm (Trainer)     : {ours:10.1f} tokens/s")
    print(f"ratio lmm / bare  : {ours / bare:10.3f}   (target >= 0.9)")
    print(f"padding, random order : {100 * random_pad:5.1f} %")
    print(f"padding, length-grouped: {100 * grouped_pad:5.1f} %   (target <= 10 %)")


if __name__ == "__main__":
    main()
