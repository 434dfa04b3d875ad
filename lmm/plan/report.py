"""Render plans: the JSON record of a run, the rich tables of runs and grids, and the dry-run's one line."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from lmm.plan.memory import GIB
from lmm.plan.preflight import PlanResult, StagePlan

REQUIRED_KEYS = ("run_id", "params_total", "params_trainable", "mem_per_gpu_gb", "fits", "gpu_hours_per_node", "usd")


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def stage_record(s: StagePlan) -> dict:
    w, m = s.workload, s.memory
    return {
        "stage": s.stage,
        "run_id": s.run_id,
        "reused": s.reused,
        "method": w.method,
        "params_trainable": s.params_trainable,
        "nodes": w.nodes,
        "world": w.world,
        "micro_batch": w.micro_batch,
        "global_batch": w.global_batch,
        "data": w.data_name,
        "samples": w.samples,
        "epochs": w.epochs,
        "optimizer_steps": w.optimizer_steps,
        "seq_mean": round(w.seq_image, 1),
        "seq_peak": w.seq_peak,
        "gradient_checkpointing": w.gradient_checkpointing,
        "mem_gb": {part: round(m.gib(part), 2) for part in
                   ("weights", "gradients", "optimizer", "activations", "buffers", "total")},
        "model_states_deepspeed_gb": _round(None if m.model_states_deepspeed is None
                                            else m.model_states_deepspeed / GIB, 2),
        "fits": m.fits,
        "pflops": _round(None if s.flops is None else s.flops.total / 1e15, 1),
        "wall_hours": _round(s.wall_hours),
        "gpu_hours_per_node": _round(s.gpu_hours_per_node),
        "usd": _round(s.usd, 2),
        "notes": list(w.notes),
    }


def record(result: PlanResult, **extra) -> dict:
    """The JSON-able plan of one run: the required keys first, then the details per stage."""
    return {
        "run_id": result.run_id,
        "params_total": result.params_total,
        "params_trainable": result.params_trainable,
        "mem_per_gpu_gb": round(result.mem_per_gpu_gb, 2),
        "fits": result.fits,
        "gpu_hours_per_node": _round(result.gpu_hours_per_node),
        "usd": _round(result.usd, 2),
        "verdict": result.verdict,
        "gpu_mem_gb": result.gpu_mem_gb,
        "gpu_type": result.gpu_type,
        "wall_hours": _round(result.wall_hours),
        "summary": result.cfg_summary,
        "achieved_tflops_per_gpu": round(result.throughput.tflops_per_gpu, 2),
        "throughput_source": result.throughput.source,
        "stages": [stage_record(s) for s in result.stages],
        **extra,
    }


def count(n: float | None) -> str:
    if n is None:
        return "–"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


VERDICT = {True: "fits", False: "OOM", None: "unknown"}
_STYLE = {True: "green", False: "bold red", None: "yellow"}


def _verdict(fits: bool | None) -> str:
    return f"[{_STYLE[fits]}]{VERDICT[fits]}[/]"


def console() -> Console:
    """stdout; wide when piped so that run ids are not folded."""
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 220)


def runs_table(records: Iterable[dict], totals: dict | None = None, title: str = "pre-flight plan") -> Table:
    """One row per run; with `totals`, a closing row for the grid."""
    table = Table(title=title, show_footer=totals is not None)
    cols = [("run", "grid total", "left"), ("stages", "", "left"), ("params", "", "right"),
            ("trainable", "", "right"), ("mem/GPU GB", "", "right"), ("verdict", "", "left"),
            ("wall h", "", "right"), ("GPU-h/node", "", "right"), ("$", "", "right")]
    if totals is not None:
        cols[1] = ("stages", f"{totals['runs']} runs, {totals['stage_runs']} stage runs", "left")
        cols[5] = ("verdict", f"{totals['fits']} fit, {totals['oom']} OOM"
                   + (f", {totals['unknown']} unknown" if totals["unknown"] else ""), "left")
        cols[7] = ("GPU-h/node", _num(totals["gpu_hours_per_node"]), "right")
        cols[8] = ("$", _num(totals["usd"], "{:,.0f}"), "right")
    for header, footer, justify in cols:
        table.add_column(header, footer=footer, justify=justify)
    for r in records:
        stages = "+".join(s["stage"] + (" (reused)" if s["reused"] else "") for s in r["stages"])
        table.add_row(r["run_id"], stages, count(r["params_total"]), count(r["params_trainable"]),
                      f"{r['mem_per_gpu_gb']:.1f} / {r['gpu_mem_gb']:g}", _verdict(r["fits"]),
                      _num(r["wall_hours"]), _num(r["gpu_hours_per_node"]), _num(r["usd"], "{:,.0f}"))
    return table


def stages_table(r: dict) -> Table:
    """The memory breakdown, time and cost of each stage of one run."""
    table = Table(title=f"{r['run_id']}: {r['summary']}")
    for header in ("stage", "world × micro × seq", "weights", "grads", "optim", "activ", "buffers", "total GB",
                   "DeepSpeed states", "verdict", "samples × epochs", "PFLOP", "wall h", "GPU-h/node", "$"):
        table.add_column(header, justify="left" if header in ("stage", "verdict") else "right")
    for s in r["stages"]:
        mem = s["mem_gb"]
        table.add_row(
            s["stage"] + (" (reused)" if s["reused"] else ""),
            f"{s['world']} × {s['micro_batch']} × {s['seq_peak']}",
            *(f"{mem[p]:.1f}" for p in ("weights", "gradients", "optimizer", "activations", "buffers", "total")),
            _num(s["model_states_deepspeed_gb"], "{:.1f}"), _verdict(s["fits"]),
            f"{s['samples']:,} × {s['epochs']:g}" if s["samples"] is not None else "–",
            _num(s["pflops"], "{:,.0f}"), _num(s["wall_hours"]), _num(s["gpu_hours_per_node"]),
            _num(s["usd"], "{:,.0f}"))
    return table


def constant_line(r: dict) -> str:
    return f"time model: {r['achieved_tflops_per_gpu']:.1f} TFLOP/s achieved per GPU, {r['throughput_source']}"


def print_run(r: dict) -> None:
    out = console()
    out.print(runs_table([r]))
    out.print(stages_table(r))
    out.print(constant_line(r), highlight=False)
    for s in r["stages"]:
        for note in s["notes"]:
            out.print(f"note [{s['stage']}]: {note}", highlight=False)


def progress_line(r: dict, job: str) -> str:
    """What each job of a table-mode grid prints as it is planned (the table comes at the end)."""
    return (f"[plan] #{job} {r['run_id']}: {r['mem_per_gpu_gb']:.1f}/{r['gpu_mem_gb']:g} GB {r['verdict']}, "
            f"{_num(r['gpu_hours_per_node'])} GPU-h/node, ${_num(r['usd'], '{:,.0f}')}")


def summary_line(result: PlanResult) -> str:
    """The dry-run's line: parameters, memory per GPU and verdict per stage, GPU-hours per node, dollars."""
    mems = ", ".join(
        f"{s.stage} {s.memory.total / GIB:.1f} GB/GPU {'(reused)' if s.reused else VERDICT[s.fits]}"
        for s in result.stages if not (s.reused and s.stage == "stage0"))  # a done LLM is not sized in this job
    gpu_mem = f" of {result.gpu_mem_gb:g}" if result.gpu_mem_gb else " (no cluster.gpu_mem_gb to check against)"
    return (f"plan: {count(result.params_total)} params, {count(result.params_trainable)} trainable; {mems}{gpu_mem}; "
            f"{_num(result.gpu_hours_per_node)} GPU-hours per node, ${_num(result.usd, '{:,.2f}')} "
            f"(at {result.throughput.tflops_per_gpu:.0f} TFLOP/s per GPU, {result.throughput.source.split(' (')[0]})")
