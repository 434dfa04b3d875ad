"""The GPU checks of scripts/gpu_check.sh besides the bench: a ZeRO-3 step over NCCL, sharded generation, the table.

    python -m bench.gpu_check env --json F
    torchrun --nproc_per_node N -m bench.gpu_check zero3 --root R --json F
    python -m bench.gpu_check eval --root R --json F
    python -m bench.gpu_check summary --status S [--out table.txt]

Each check writes a JSON with `key` (the number the summary shows) and its details; the summary reads the
status file the script writes (one `name<TAB>exit code<TAB>json<TAB>seconds` line per check), prints one row
per check (ok / FAILED, the key number) and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


def _write(path: str, result: dict) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")


def environment(out: str) -> dict:
    """Versions of what the checks use (the machine's own and the carried wheels), the GPUs, and that the
    project's modules import on them."""
    import importlib
    import importlib.metadata as metadata

    import torch

    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "hydra-core",
                 "omegaconf", "safetensors", "tokenizers", "huggingface-hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    failed = {}
    for module in ("lmm.config", "lmm.pipeline", "lmm.eval.runner", "bench.gpu_preset", "deepspeed", "bitsandbytes"):
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 -- reported, the check fails
            failed[module] = f"{type(error).__name__}: {error}"
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    result = {"ok": not failed and bool(gpus), "versions": versions, "cuda": torch.version.cuda, "gpus": gpus,
              "import_errors": failed, "python": sys.version.split()[0],
              "key": f"{len(gpus)} x {gpus[0] if gpus else 'no GPU'}, torch {versions['torch']} (CUDA "
                     f"{torch.version.cuda}), transformers {versions['transformers']}, deepspeed "
                     f"{versions['deepspeed']}, bitsandbytes {versions['bitsandbytes']}"
                     + (f"; import failed: {', '.join(failed)}" if failed else "")}
    _write(out, result)
    print(json.dumps(result, indent=2))
    return result


def zero3(root: str, out: str) -> None:
    """Stages 1 and 2 of the tiny LLaVA for a few steps under DeepSpeed ZeRO-3 on every GPU (one rank each)."""
    import torch
    import torch.distributed as dist

    from lmm.config import compose
    from lmm.launch.distributed import setup_distributed_env
    from lmm.pipeline import run_pipeline
    from lmm.records import read_record
    from lmm.training.speed import compute_dtype

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = compose([f"paths.root={root}", "model=tiny_m", "vision=tiny_48", "debug=fast", "deepspeed=zero3",
                   f"cluster.gpus_per_node={world}", "model.recipe.pretrain.micro_batch_size=4",
                   "model.recipe.pretrain.global_batch_size=" + str(4 * world),
                   "model.recipe.full.micro_batch_size=4", "model.recipe.full.global_batch_size=" + str(4 * world)])
    setup_distributed_env(need_process_group=True)
    started = time.perf_counter()
    folder = run_pipeline(cfg)
    backend = dist.get_backend() if dist.is_initialized() else None
    if int(os.environ.get("RANK", "0")) == 0:
        record = read_record(folder)
        stage2 = record.get("finetune", record)
        losses = [e["loss"] for e in stage2.get("losses", [])]
        ok = backend == "nccl" and len(losses) > 0 and all(loss == loss for loss in losses)  # NaN != NaN
        zero = int(cfg.deepspeed.stage)
        key = (f"ZeRO-{zero} over {backend}, world {world}, {len(losses)} steps, loss "
               f"{losses[0]:.3f}->{losses[-1]:.3f}" if losses else f"{backend}: no losses")
        _write(out, {"ok": ok, "key": key, "backend": backend, "world_size": world, "losses": losses,
                     "dtype": str(compute_dtype(cfg)), "zero_stage": zero,
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                     "seconds": round(time.perf_counter() - started, 1),
                     "peak_memory_gb": stage2.get("peak_memory_gb"), "run": str(folder)})


def _questions(count: int):
    from PIL import Image, ImageDraw

    from lmm.eval.generate import Question

    texts = ["What colour is the shape?", "How many circles are there?", "Describe the image.",
             "Where is the square?", "Is there a star in the picture?", "What is written in the image?"]
    out = []
    for i in range(count):
        image = Image.new("RGB", (64, 64), ((37 * i) % 256, (91 * i) % 256, (151 * i) % 256))
        ImageDraw.Draw(image).ellipse((8 + i, 8, 40 + i, 40), fill=(255 - 20 * i % 256, 200, 30))
        out.append(Question(str(i), texts[i % len(texts)], image))
    return out


def _device_memory_split(model_bytes: int) -> tuple[dict, str | None]:
    """max_memory that forces a split: the GPUs (or, CPU-only, the CPU) get half the weights between them,
    the rest spills to the next tier (CPU, or disk)."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        share = model_bytes // (2 * gpus)
        return {**{i: share for i in range(gpus)}, "cpu": 4 * model_bytes}, None
    return {"cpu": model_bytes // 2}, "disk"


def sharded_eval(root: str, out: str, questions: int = 8, max_new_tokens: int = 16) -> dict:
    """Generate (greedy and 5 beams, batches of 4, left-padded) with a tiny LLaVA loaded whole on one device
    and loaded by accelerate with device_map="auto" under a memory limit that splits it; compare the tokens."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor

    from lmm.config import compose
    from lmm.eval.generate import generate_answers
    from lmm.models.assemble import assemble, num_image_tokens
    from lmm.models.checkpoint import load_trained

    cfg = compose([f"paths.root={root}", "model=tiny_m", "vision=tiny_48"])
    folder = assemble(cfg)
    run = Path(root) / "eval-run"
    if not (run / "model").exists():
        shutil.copytree(folder, run / "model")  # a trained run's layout: a full Hugging Face folder in model/
    tokenizer, processor = AutoTokenizer.from_pretrained(folder), CLIPImageProcessor.from_pretrained(folder)
    asked = _questions(questions)
    whole_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    whole = load_trained(run, dtype=torch.float32, device_map={"": whole_device})
    model_bytes = sum(p.numel() * p.element_size() for p in whole.parameters())
    max_memory, spill = _device_memory_split(model_bytes)
    sharded = load_trained(run, dtype=torch.float32, device_map="auto", max_memory=max_memory,
                           offload_folder=str(Path(root) / "offload") if spill else None)
    devices = sorted({str(d) for d in sharded.hf_device_map.values()})
    result: dict = {"devices": devices, "device_map": sharded.hf_device_map, "whole_on": whole_device}
    same, total, seconds = 0, 0, {}
    for beams in (1, 5):
        kwargs = dict(num_image_tokens=num_image_tokens(cfg.vision), num_beams=beams,
                      max_new_tokens=max_new_tokens, batch_size=4)
        started = time.perf_counter()
        ref = generate_answers(whole, tokenizer, processor, cfg.model.template, asked, **kwargs)
        mid = time.perf_counter()
        got = generate_answers(sharded, tokenizer, processor, cfg.model.template, asked, **kwargs)
        seconds[f"beam{beams}"] = {"whole": round(mid - started, 2), "sharded": round(time.perf_counter() - mid, 2)}
        same += sum(a == b for a, b in zip(ref, got))
        total += len(ref)
        result[f"beam{beams}"] = {"whole": ref, "sharded": got}
    result.update(seconds=seconds, identical=same, answers=total,
                  ok=same == total and len(devices) > 1,
                  key=f"{same}/{total} answers identical (greedy + 5 beams) sharded over {'+'.join(devices)}")
    if out:
        _write(out, result)
    return result


def summary(status_file: str, out: str | None) -> int:
    """One row per check from the status file and the checks' JSON; 1 if any failed, else 0."""
    rows = []
    for line in Path(status_file).read_text().splitlines():
        if not line.strip():
            continue
        name, code, path, seconds = (line.split("\t") + ["", "", ""])[:4]
        detail: dict = {}
        if path and Path(path).exists():
            try:
                detail = json.loads(Path(path).read_text())
            except ValueError:
                detail = {}
        key = detail.get("key", "")
        ok = code == "0" and detail.get("ok", True) is not False and (bool(detail) or not path)
        if code == "125":
            key = "skipped: the script's time budget was spent"
        elif code == "124":
            key = f"timed out after {seconds} s" + (f"; {key}" if key else "")
        elif code != "0" and not key:
            key = f"exit code {code} (see the log)"
        rows.append((name, "ok" if ok else "FAILED", seconds, key))
    width = max([len(r[0]) for r in rows] + [5])
    lines = [f"{'check':<{width}}  result  {'s':>5}  key number", "-" * (width + 40)]
    lines += [f"{n:<{width}}  {s:<6}  {t:>5}  {k}" for n, s, t, k in rows]
    failed = [r[0] for r in rows if r[1] != "ok"]
    lines.append(f"{len(rows) - len(failed)}/{len(rows)} checks ok"
                 + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 1 if failed or not rows else 0


def bench_row(bench_json: str, out: str) -> int:
    """The key numbers of a one-variant bench run (`bench.throughput --gpu --json`) as a check's JSON."""
    row = json.loads(Path(bench_json).read_text())["rows"][0]
    mfu = "" if row.get("mfu") is None else f", MFU {row['mfu']:.3f} (spec {row['mfu_spec']:.3f})"
    key = f"{row['tokens_per_s']:.0f} tok/s, {row['achieved_tflops']:.4g} TFLOP/s{mfu}, {row['peak_mem_gb']:.1f} GB"
    ok = row["tokens_per_s"] > 0
    _write(out, {"ok": ok, "key": key, **row})
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("zero3", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--json", required=True)
    p = sub.add_parser("env")
    p.add_argument("--json", required=True)
    p = sub.add_parser("bench-row")
    p.add_argument("--bench-json", required=True)
    p.add_argument("--json", required=True)
    p = sub.add_parser("summary")
    p.add_argument("--status", required=True)
    p.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "env":
        return 0 if environment(args.json)["ok"] else 1
    if args.command == "zero3":
        zero3(args.root, args.json)
    elif args.command == "eval":
        result = sharded_eval(args.root, args.json)
        print(result["key"])
        return 0 if result["ok"] else 1
    elif args.command == "bench-row":
        return bench_row(args.bench_json, args.json)
    else:
        return summary(args.status, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
