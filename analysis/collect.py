"""Run records → one tidy pandas DataFrame; also from a W&B runs export (CSV).

`collect(runs_dir)` returns the *tidy* frame: one row per run × benchmark × beam × metric, where metric is
`overall` or one category of the benchmark (`score` holds the value, `std` the spread of the overall over
repeated judge runs). Every row repeats the run's attributes (RUN_COLUMNS: choices, resolved
hyper-parameters, resources, steps, tokens, GPU-hours per node and $ per stage, parameters, loss). A run
without any eval score appears once, with benchmark/beam/metric/score empty, so that its cost still counts.
`runs_view(frame)` gives one row per run.

A checkpoint evaluated without training here (`python -m lmm.eval +checkpoint=...`, record `source:
checkpoint`) is a row like any run, with `checkpoint` (its hub id or folder), `checkpoint_kind` (`llava` or
`llm`: a bare LLM, a base-LLM row of Table 5), `checkpoint_name` (the repo's or folder's name) and
`checkpoint_preset` (the conf/model preset named on the command line or matching its hub id); these are
empty for trained runs. It has no cost.

Cost columns (the paper's unit): `gpu_hours_per_node` = stage 2 device hours × GPUs / 8 (Table 4 "Time"),
`stage1_gpu_hours_per_node` the same for the run's stage 1 (shared by the runs with the same stage-1 id),
`total_gpu_hours_per_node` both; `usd`, `stage1_usd`, `total_usd` = GPU-hours per node ×
`usd_per_gpu_hour_per_node` ($13.63 by default, Azure ND A100 v4). A run whose LLM stage 0 made (65B without
Vicuna weights) has `stage0_run_id`, `stage0_gpu_hours_per_node` and `stage0_usd` from that stage-0 run's own
record (shared by every run on that LLM; not in the totals, which are the run's own stages, as in its record).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lmm.launch.store import memberships
from lmm.layout import CHECKPOINTS_DIR
from lmm.records import DONE_FILE, RECORD_FILE, eval_scores
from lmm.tuning import tuning_method
from lmm.units import gpu_hours_per_node

RUN_COLUMNS = [
    "run_id", "sweep", "source", "folder", "model", "size", "size_b", "llm", "vision", "image_size",
    "projector", "tuning", "method", "rank", "alpha", "lr", "variant", "tuning_label", "data", "mixing",
    "mixing_ratio", "seed", "requested", "gpu_type", "gpus", "nodes", "steps", "tokens", "wall_time_s",
    "stage0_run_id", "stage0_gpu_hours_per_node", "stage0_usd",
    "stage1_run_id", "stage1_gpu_hours_per_node", "gpu_hours_per_node", "total_gpu_hours_per_node",
    "stage1_usd", "usd", "total_usd", "usd_per_gpu_hour_per_node", "params_trainable", "params_total",
    "peak_memory_gb", "final_loss", "checkpoint", "checkpoint_kind", "checkpoint_name", "checkpoint_preset",
]
SCORE_COLUMNS = ["benchmark", "beam", "metric", "score", "std", "judge_model", "n_eval_runs"]
COLUMNS = RUN_COLUMNS + SCORE_COLUMNS
LLM_SUFFIXES = {"llama2": "LLaMA-2"}


# -- labels -----------------------------------------------------------------------------------------


def size_label(model: str) -> str:
    """`33b` → `33B`, `13b_llama2` → `13B`; other names (the tiny CPU sizes) are kept: `tiny_s`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)b(?:_.+)?", str(model))
    return f"{match[1]}B" if match else str(model)


def llm_label(model: str) -> str:
    """The LLM family when the size alone does not say it: `13b_llama2` → `LLaMA-2`."""
    match = re.fullmatch(r"\d+(?:\.\d+)?b_(.+)", str(model))
    return LLM_SUFFIXES.get(match[1], match[1]) if match else ""


def tuning_label(method: str, rank) -> str:
    """`full` (any method that trains the LLM itself, by its name), else the method's table label: `LoRA r64`."""
    m = tuning_method(method)
    if not m.adapter or rank is None or _isnan(rank):
        return m.name
    return m.table_label(rank)


def _g(value: float) -> str:
    return f"{value:g}"


def variant_label(method: str, rank, alpha, lr, recipe_lr) -> str:
    """LoRA settings off the paper's recipe (alpha = 2 × rank, the recipe's lr), e.g. `α16, lr 2e-05`."""
    if not tuning_method(method).adapter:
        return ""
    parts = []
    if alpha is not None and rank is not None and not _isnan(alpha) and float(alpha) != 2 * float(rank):
        parts.append(f"α{_g(float(alpha))}")
    if lr is not None and recipe_lr is not None and not _isnan(lr) and float(lr) != float(recipe_lr):
        parts.append(f"lr {_g(float(lr))}")
    return ", ".join(parts)


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


# -- records ----------------------------------------------------------------------------------------


def find_records(runs_dir: str | Path, *, include_unfinished: bool = False) -> list[dict]:
    """The stage-2 run records under a runs folder (finished runs only unless asked), each with `_folder`.

    Runs live once in the run store (runs/stage2/<id>); a sweep is a folder of links to them. A run
    appears once per sweep that links to it, with `sweep` set to that sweep's name (so each table sees
    the runs its sweep uses); a stored run no sweep links to, or a folder of the older layout
    (runs/<sweep>/<id> as a real folder), keeps the sweep its record names. `runs_dir` may also be
    one sweep's folder: its runs, as that sweep's.
    """
    root = Path(runs_dir).expanduser()
    views = memberships(root)
    for link in (p for p in root.iterdir() if p.is_symlink() and p.is_dir()) if root.is_dir() else ():
        views.setdefault(link.resolve(), []).append(root.name)  # `runs_dir` is itself one sweep's view
    folders = {p.parent.resolve() for p in root.rglob(RECORD_FILE)} | set(views)
    records, stage0_records = [], {}
    base = root.resolve()
    for folder in sorted(folders):
        inside = folder.relative_to(base).parts if folder.is_relative_to(base) else ()
        # Hidden folders (Hydra's logs, duplicates set aside by `lmm.sweep migrate`), W&B's files and training
        # checkpoints inside a run hold no run of a sweep; runs/checkpoints/<slug> (evaluated checkpoints) does.
        if any(part == "wandb" or part.startswith(".") for part in inside) or CHECKPOINTS_DIR in inside[1:]:
            continue
        if not (folder / RECORD_FILE).exists():
            continue
        if not include_unfinished and not (folder / DONE_FILE).exists():
            continue
        try:
            record = json.loads((folder / RECORD_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict) or record.get("kind", "stage2") != "stage2":
            continue
        record = {**record, "_stage0": _stage0_summary(record, stage0_records)}
        for sweep in views.get(folder) or [record.get("sweep")]:
            records.append({**record, "sweep": sweep, "_folder": str(folder)})
    return records


def _stage0_summary(record: dict, read: dict) -> dict:
    """The cost summary of the stage-0 run that made this run's LLM, read from its own record (once per folder:
    `read` keeps what was read, every run on that LLM points at it); {} without one."""
    folder = _get(record, "stage0", "folder")
    if not folder:
        return {}
    if folder not in read:
        try:
            read[folder] = _get(json.loads((Path(folder) / RECORD_FILE).read_text()), "stages", "stage0") or {}
        except (OSError, json.JSONDecodeError):
            read[folder] = {}  # not finished, or unreadable: its cost is unknown
    return {"run_id": _get(record, "stage0", "run_id"), **read[folder]}


def _get(mapping, *keys, default=None):
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping if mapping is not None else default


def _hparams(record: dict) -> dict:
    """The record's resolved hyper-parameters (schema 2), or the same read from its config (schema 1)."""
    if record.get("hparams"):
        return record["hparams"]
    cfg = record.get("config") or {}
    tuning = cfg.get("tuning") or {}
    method = tuning.get("method", "full")
    adapter = tuning_method(method).adapter
    return {
        "nominal_params_b": _get(cfg, "model", "nominal_params_b"),
        "image_size": _get(cfg, "vision", "image_size"),
        "method": method,
        "rank": tuning.get("rank") if adapter else None,
        "alpha": tuning.get("alpha") if adapter else None,
        "lr": tuning.get("lr"),
        "mixing_ratio": _get(cfg, "data", "sharegpt_ratio", default=0.0),
    }


def _stage(record: dict, stage: str) -> dict:
    """A stage's summary; for schema-1 records, derived from the raw stats and the config's price."""
    summary = _get(record, "stages", stage)
    if summary is not None or "stages" in record:
        return summary or {}
    raw = record.get(stage) or {}
    if not raw:
        return {}
    world = max(int(raw.get("world_size") or 1), 1)
    gph = gpu_hours_per_node(float(raw.get("wall_time_s") or 0) / 3600, world)
    price = float(_get(record, "config", "cluster", "usd_per_gpu_hour_per_node", default=13.63))
    return {**raw, "gpu_hours_per_node": gph, "usd": gph * price, "gpus": world}


def _num(value):
    return float("nan") if value is None else value


def run_row(record: dict, source: str = "runs") -> dict:
    """The run-level attributes of one record (RUN_COLUMNS)."""
    hp = _hparams(record)
    choices = record.get("choices") or {}
    cfg = record.get("config") or {}
    model = choices.get("model") or _get(cfg, "model", "name", default="?")
    method = hp.get("method") or "full"
    recipe_lr = _get(cfg, "model", "recipe", tuning_method(method).recipe, "lr")
    finetune, pretrain = _stage(record, "finetune"), _stage(record, "pretrain")
    s1_gph, s2_gph = pretrain.get("gpu_hours_per_node"), finetune.get("gpu_hours_per_node")
    s1_usd, s2_usd = pretrain.get("usd"), finetune.get("usd")

    def total(a, b):
        return None if a is None and b is None else (a or 0.0) + (b or 0.0)

    mixing_ratio = float(hp.get("mixing_ratio") or 0.0)
    requested = _get(cfg, "eval", "benchmarks", default=[]) or []
    checkpoint = record.get("checkpoint") if record.get("source") == "checkpoint" else None
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    named = checkpoint.get("preset_source") in ("given", "path")
    return {
        "run_id": record.get("run_id"),
        "sweep": record.get("sweep"),
        "source": source,
        "folder": record.get("_folder"),
        "model": model,
        "size": size_label(model),
        "size_b": _num(hp.get("nominal_params_b")),
        "llm": llm_label(model),
        "vision": choices.get("vision"),
        "image_size": hp.get("image_size"),
        "projector": choices.get("projector"),
        "tuning": choices.get("tuning"),
        "method": method,
        "rank": hp.get("rank"),
        "alpha": hp.get("alpha"),
        "lr": hp.get("lr"),
        "variant": variant_label(method, hp.get("rank"), hp.get("alpha"), hp.get("lr"), recipe_lr),
        "tuning_label": tuning_label(method, hp.get("rank")),
        "data": choices.get("data"),
        "mixing": mixing_ratio > 0,
        "mixing_ratio": mixing_ratio,
        "seed": record.get("seed"),
        "requested": ",".join(requested),
        "gpu_type": _get(record, "resources", "gpu_type", default=_get(cfg, "cluster", "gpu_type")),
        "gpus": finetune.get("gpus", finetune.get("world_size")),
        "nodes": finetune.get("nodes"),
        "steps": finetune.get("steps"),
        "tokens": finetune.get("tokens"),
        "wall_time_s": finetune.get("wall_time_s"),
        "stage0_run_id": (record.get("_stage0") or {}).get("run_id"),
        "stage0_gpu_hours_per_node": _num((record.get("_stage0") or {}).get("gpu_hours_per_node")),
        "stage0_usd": _num((record.get("_stage0") or {}).get("usd")),
        "stage1_run_id": _get(record, "stage1", "run_id"),
        "stage1_gpu_hours_per_node": _num(s1_gph),
        "gpu_hours_per_node": _num(s2_gph),
        "total_gpu_hours_per_node": _num(total(s1_gph, s2_gph)),
        "stage1_usd": _num(s1_usd),
        "usd": _num(s2_usd),
        "total_usd": _num(total(s1_usd, s2_usd)),
        "usd_per_gpu_hour_per_node": _get(record, "cost", "usd_per_gpu_hour_per_node",
                                          default=_get(cfg, "cluster", "usd_per_gpu_hour_per_node")),
        "params_trainable": _num(finetune.get("params_trainable")),
        "params_total": _num(finetune.get("params_total")),
        "peak_memory_gb": _num(finetune.get("peak_memory_gb")),
        "final_loss": _num(finetune.get("final_loss")),
        "checkpoint": checkpoint.get("id") or "",
        "checkpoint_kind": checkpoint.get("kind") or "",
        "checkpoint_name": checkpoint.get("name") or "",
        "checkpoint_preset": (checkpoint.get("preset") or "") if named else "",
    }


def score_rows(record: dict) -> list[dict]:
    """One row per benchmark × beam × metric (`overall` and each category) of a record's eval scores."""
    rows = []
    for benchmark, beam, score in eval_scores(record):
        judge = score.get("judge_model") or (score.get("judge") or {}).get("model")  # runner: judge.model
        common = {"benchmark": benchmark, "beam": beam, "judge_model": judge,
                  "n_eval_runs": len(score.get("runs") or []) or None}
        if score.get("overall") is not None:
            rows.append({**common, "metric": "overall", "score": float(score["overall"]),
                         "std": _num(score.get("std"))})
        for name, value in (score.get("categories") or {}).items():
            if value is not None:
                rows.append({**common, "metric": name, "score": float(value), "std": float("nan")})
    return rows


def frame_from_records(records: Iterable[dict], source: str = "runs") -> pd.DataFrame:
    """The tidy frame (see the module docstring) of some records."""
    rows = []
    for record in records:
        run = run_row(record, record.get("_source", source))
        scores = score_rows(record)
        rows += [{**run, **s} for s in scores] if scores else [{**run}]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["beam"] = frame["beam"].astype("Int64")
    for column in ("score", "std", "size_b", "gpu_hours_per_node", "stage0_gpu_hours_per_node",
                   "stage1_gpu_hours_per_node", "total_gpu_hours_per_node", "usd", "stage0_usd", "stage1_usd",
                   "total_usd", "params_trainable", "params_total"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def collect(runs_dir: str | Path, *, include_unfinished: bool = False) -> pd.DataFrame:
    """The tidy frame of every finished stage-2 run under `runs_dir` (runs/<sweep>/<run_id>)."""
    return frame_from_records(find_records(runs_dir, include_unfinished=include_unfinished))


def runs_view(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the run-level columns)."""
    key = ["run_id", "sweep", "source"]
    return frame[RUN_COLUMNS].drop_duplicates(subset=key).reset_index(drop=True)


def loss_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Training loss curves: one row per run × stage × logged step (stage 2's curve from each record,
    stage 1's from the stage-1 record beside it when present)."""
    rows = []
    for record in records:
        curves = {"finetune": _get(record, "finetune", "losses", default=[])}
        folder = _get(record, "stage1", "folder")
        s1 = Path(folder) / RECORD_FILE if folder else None
        if s1 is not None and s1.exists():
            curves["pretrain"] = json.loads(s1.read_text()).get("pretrain", {}).get("losses", [])
        for stage, points in curves.items():
            rows += [{"run_id": record.get("run_id"), "sweep": record.get("sweep"), "stage": stage,
                      "step": p.get("step"), "loss": p.get("loss"), "lr": p.get("lr")} for p in points or []]
    return pd.DataFrame(rows, columns=["run_id", "sweep", "stage", "step", "loss", "lr"])


# -- W&B runs export ----------------------------------------------------------------------------------


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _parse_cell(value):
    if isinstance(value, str) and value[:1] in "{[":
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(value)
            except (ValueError, SyntaxError):
                continue
    return value


def _flat_wandb_row(row: dict) -> dict:
    """A W&B export row as flat keys: config keys dotted (`hp.image_size`), summary keys as logged
    (`eval/llava_bench/beam1/overall`). Accepts the UI export (one column per key, optionally prefixed
    `config.`/`summary.`) and the API recipe (`config`, `summary` columns holding dicts)."""
    flat: dict = {}
    for column, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            continue
        value = _parse_cell(value)
        name = str(column)
        if name in ("config", "summary") and isinstance(value, dict):
            _flatten("", value, flat)
            continue
        for prefix in ("config.", "summary.", "config/", "summary/"):
            name = name.removeprefix(prefix)
        _flatten(name, value, flat)
    return flat


def _wandb_stage(flat: dict, stage: str) -> dict:
    prefix = f"{stage}/"
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def records_from_wandb(rows: pd.DataFrame) -> list[dict]:
    """Run records rebuilt from a W&B runs export (what `lmm.tracking` logs: config keys and the
    `finetune/*`, `pretrain/*`, `eval/<benchmark>/beam<k>/<metric>` summary keys)."""
    flats = [_flat_wandb_row(r) for r in rows.to_dict("records")]
    stage1 = {f.get("run_id") or f.get("Name") or f.get("name"): f for f in flats
              if f.get("train_stage") == "pretrain"}
    records = []
    for flat in flats:
        if flat.get("train_stage", "finetune") != "finetune":
            continue
        run_id = flat.get("run_id") or flat.get("Name") or flat.get("name") or flat.get("ID")
        hp = {k[3:]: v for k, v in flat.items() if k.startswith("hp.")}
        cfg: dict = {}
        for key, value in flat.items():
            if key.startswith("cfg."):
                node = cfg
                *parents, leaf = key[4:].split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
        evals: dict = {}
        for key, value in flat.items():
            match = re.fullmatch(r"eval/([^/]+)/beam(\d+)/(.+)", key)
            if not match:
                continue
            score = evals.setdefault(match[1], {}).setdefault(f"beam{match[2]}", {"categories": {}})
            if match[3] in ("overall", "std"):
                score[match[3]] = value
            else:
                score["categories"][match[3]] = value
        s1 = stage1.get(flat.get("stage1_run_id"))
        records.append({
            "run_id": run_id,
            "kind": "stage2",
            "sweep": flat.get("sweep") or flat.get("Group") or flat.get("group"),
            "seed": flat.get("seed"),
            "choices": {g: flat.get(g) for g in ("model", "vision", "projector", "tuning", "data")},
            "hparams": hp,
            "config": cfg,
            "resources": {"gpu_type": _get(cfg, "cluster", "gpu_type")},
            "stages": {"finetune": _wandb_stage(flat, "finetune"),
                       "pretrain": _wandb_stage(s1, "pretrain") if s1 else None},
            "stage1": {"run_id": flat.get("stage1_run_id")},
            "cost": {"usd_per_gpu_hour_per_node": _get(cfg, "cluster", "usd_per_gpu_hour_per_node")},
            "eval": evals,
            "_source": "wandb",
        })
    return records


def collect_wandb_csv(path: str | Path) -> pd.DataFrame:
    """The tidy frame of a W&B runs export (CSV), the alternative to a runs folder."""
    return frame_from_records(records_from_wandb(pd.read_csv(path)), source="wandb")
