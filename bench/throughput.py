"""Throughput of lmm's training stack: tokens/s, achieved model TFLOP/s and MFU; on CPU vs a bare PyTorch loop.

    python -m bench.throughput [--steps 30] [--model tiny_m] [--data synthetic_mix]        # CPU (default)
    python -m bench.throughput --gpu [--variants full,full-gc,lora,lora-gc] [--json F] [key=value ...]

Default (CPU): both loops train the same stage-2 model (full fine-tuning) on the same length-grouped
batches from the same collator, with AdamW at the same learning rate; both are timed after warm-up steps.
Prints tokens/s (non-padding tokens) and achieved TFLOP/s of each and their ratio (target: lmm ≥ 0.9 ×
bare), and the padding fraction of an epoch's batches with and without length grouping (target: ≤ 10 %
grouped).

--gpu: the ~1B preset (conf/model/bench_1b.yaml + a CLIP-L/14-336-shaped tower, random init, bf16 on a
GPU) trained through lmm's Trainer on fixed-length samples (576 image tokens + text, `--seq` in all), one
variant at a time (bench/gpu_preset.py). Per variant: tokens/s, seconds per step, the planner's model
FLOPs per step (lmm.plan.flops), achieved TFLOP/s and MFU against the GPU's bf16 peak (bench/mfu.py),
peak GPU memory. Trailing `key=value` are Hydra overrides (e.g. smaller widths to try it on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from bench.mfu import FlopCounter, model_flops
from lmm.config import compose
from lmm.data.sampler import ModalityLengthGroupedSampler, batched, padding_fraction
from lmm.data.templates import IMAGE_TOKEN
from lmm.models.assemble import assemble, num_image_tokens
from lmm.models.build import build_model
from lmm.plan.flops import SampleFlops
from lmm.training.data import build_training_data


@dataclass
class Timed:
    """One timed training run: rates over the timed steps (after warm-up)."""

    tokens_per_s: float
    step_s: float
    model_flops_per_step: float  # forward + backward + tower forward (MFU's numerator per step)
    hardware_flops_per_step: float  # + gradient checkpointing's recomputation
    peak_mem_gb: float

    @property
    def model_flops_per_s(self) -> float:
        return self.model_flops_per_step / self.step_s

    @property
    def hardware_flops_per_s(self) -> float:
        return self.hardware_flops_per_step / self.step_s


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _config(args, root: str):
    return compose([f"paths.root={root}", f"model={args.model}", f"data={args.data}", "stage=finetune",
                    "stage.projector_path=none", f"model.recipe.full.micro_batch_size={args.batch}",
                    f"model.recipe.full.global_batch_size={args.batch}", "trainer.gradient_checkpointing=false",
                    f"data.synthetic_num_train={args.samples}", "trainer.warmup_ratio=0",
                    "trainer.lr_scheduler=constant", "trainer.logging_steps=1000000",
                    "trainer.save_steps=1000000"])


def _tokenizer_and_data(cfg):
    from transformers import AutoTokenizer, CLIPImageProcessor

    folder = assemble(cfg)
    tokenizer, processor = AutoTokenizer.from_pretrained(folder), CLIPImageProcessor.from_pretrained(folder)
    return tokenizer, build_training_data(cfg, "finetune", tokenizer, processor, num_image_tokens(cfg.vision))


def flop_counter(cfg, model, tokenizer) -> FlopCounter:
    return FlopCounter(cfg, model.get_output_embeddings().weight.shape[0],
                       tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def bare_loop(cfg, data, counter: FlopCounter, steps: int, warmup: int) -> Timed:
    """A plain loop: forward, backward, AdamW step, on the grouped batches."""
    torch.manual_seed(0)
    model = build_model(cfg, "finetune")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg.tuning.lr), weight_decay=0.0)
    sampler = data.sampler_factory(int(cfg.seed))
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=int(cfg.tuning.micro_batch_size),
                                         sampler=sampler, collate_fn=data.collator)
    tokens, flops, started = 0, SampleFlops(), None
    for step, batch in enumerate(loader):
        if step == warmup:
            tokens, flops, started = 0, SampleFlops(), time.perf_counter()
        if step == warmup + steps:
            break
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        flops = flops + counter.batch(batch)
    elapsed = time.perf_counter() - started
    return Timed(tokens / elapsed, elapsed / steps, model_flops(flops) / steps, flops.total / steps, 0.0)


def trainer_run(cfg, model, dataset, collator, counter: FlopCounter, steps: int, warmup: int, out_dir: str,
                sampler_factory=None) -> Timed:
    """lmm's Trainer (its TrainingArguments, optimiser and loop) on `dataset`, timed after `warmup` steps."""
    from transformers import TrainerCallback

    from lmm.training.arguments import training_arguments
    from lmm.training.trainer import LmmTrainer, peak_memory_gb

    if warmup < 1:
        raise ValueError("--warmup must be at least 1 (the first steps compile, allocate and warm caches)")

    class CountingTrainer(LmmTrainer):
        flops = SampleFlops()

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.flops = self.flops + counter.batch(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    args = training_arguments(cfg, "finetune", out_dir, run_name="bench")
    args.max_steps = warmup + steps
    trainer = CountingTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                              train_sampler_factory=sampler_factory)
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step in (warmup, warmup + steps):
                _sync()  # the GPU runs ahead of Python: time what it has finished
                marks[state.global_step] = (time.perf_counter(), trainer.tokens_seen, trainer.flops)

    trainer.add_callback(Clock())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t0, tokens0, flops0), (t1, tokens1, flops1) = marks[warmup], marks[warmup + steps]
    done = SampleFlops(flops1.forward - flops0.forward, flops1.backward - flops0.backward,
                       flops1.recompute - flops0.recompute, flops1.vision - flops0.vision)
    elapsed = t1 - t0
    return Timed((tokens1 - tokens0) / elapsed, elapsed / steps, model_flops(done) / steps, done.total / steps,
                 peak_memory_gb())


def lmm_loop(cfg, data, counter: FlopCounter, steps: int, warmup: int, out_dir: str) -> Timed:
    """lmm's Trainer on the same model, sampler and collator as the bare loop."""
    torch.manual_seed(0)
    model = build_model(cfg, "finetune")
    return trainer_run(cfg, model, data.dataset, data.collator, counter, steps, warmup, out_dir,
                       sampler_factory=data.sampler_factory)


def padding_report(data, batch: int, seed: int = 0) -> tuple[float, float]:
    lengths = data.dataset.lengths
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    grouped = ModalityLengthGroupedSampler(lengths, data.dataset.has_image, batch, 1, seed).order(0)
    return padding_fraction(lengths, batched(order, batch)), padding_fraction(lengths, batched(grouped, batch))


def cpu_main(args, root: str) -> dict:
    cfg = _config(args, root)
    tokenizer, data = _tokenizer_and_data(cfg)
    probe = build_model(cfg, "finetune")
    counter = flop_counter(cfg, probe, tokenizer)
    del probe
    # Alternate the two and keep each one's best: other load on the machine hits both alike.
    bares, ours_all = [], []
    for repeat in range(args.repeats):
        bares.append(bare_loop(cfg, data, counter, args.steps, args.warmup))
        ours_all.append(lmm_loop(cfg, data, counter, args.steps, args.warmup, os.path.join(root, f"bench-{repeat}")))
    bare = max(bares, key=lambda t: t.tokens_per_s)
    ours = max(ours_all, key=lambda t: t.tokens_per_s)
    random_pad, grouped_pad = padding_report(data, args.batch)
    device = "GPU" if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model {args.model}, data {args.data}, micro-batch {args.batch}, {args.steps} timed steps, "
          f"best of {args.repeats}, {device}")
    print(f"bare PyTorch loop : {bare.tokens_per_s:10.1f} tokens/s  {bare.model_flops_per_s / 1e12:8.4f} TFLOP/s")
    print(f"lmm (Trainer)     : {ours.tokens_per_s:10.1f} tokens/s  {ours.model_flops_per_s / 1e12:8.4f} TFLOP/s")
    print(f"ratio lmm / bare  : {ours.tokens_per_s / bare.tokens_per_s:10.3f}   (target >= 0.9)")
    print(f"model FLOPs/step  : {ours.model_flops_per_step / 1e9:10.3f} GFLOP (planner's count; no MFU on CPU)")
    print(f"padding, random order : {100 * random_pad:5.1f} %")
    print(f"padding, length-grouped: {100 * grouped_pad:5.1f} %   (target <= 10 %)")
    return {"device": device, "model": args.model, "bare": asdict(bare), "lmm": asdict(ours),
            "achieved_tflops": {"bare": bare.model_flops_per_s / 1e12, "lmm": ours.model_flops_per_s / 1e12},
            "padding": {"random": random_pad, "grouped": grouped_pad}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the ~1B preset and its variants (bench/gpu_preset.py)")
    parser.add_argument("--variants", default="full,full-gc,lora,lora-gc",
                        help="--gpu: comma-separated, from bench.gpu_preset.VARIANTS")
    parser.add_argument("--seq", type=int, default=1000, help="--gpu: tokens per sample (576 of them the image's)")
    parser.add_argument("--vocab", type=int, default=32000, help="--gpu: pad the tokenizer to this size (0: as is)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="--gpu: MFU denominator for an unknown GPU")
    parser.add_argument("--model", default="tiny_m")
    parser.add_argument("--data", default="synthetic_mix", help="a data option (mixing gives varied lengths)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30 on CPU, 20 with --gpu)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", default=os.environ.get("LMM_BENCH_ROOT"))
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="--gpu: Hydra overrides (key=value)")
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="lmm-bench-")
    if args.gpu:
        from bench.gpu_preset import gpu_main

        args.steps = args.steps or 20
        result = gpu_main(args, root)
    else:
        if args.overrides:
            parser.error("key=value overrides go with --gpu")
        args.steps = args.steps or 30
        result = cpu_main(args, root)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
