"""The pre-flight file check of a run: every data, benchmark and model file its config reads, with the command
that fetches each missing one. Reads only the config and the disk (no network, no compose: safe inside Hydra apps)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from lmm import CONF_DIR
from lmm.prepare import marker
from lmm.prepare.catalog import BENCHMARK_ENTRIES, CATALOG, DATA_ENTRIES
from lmm.prepare.models import NO_65B, Model, hub_cache, local_problems, model_folder, model_of

# The data fields of a LLaVA data section a run reads (sharegpt_path only when mixing).
DATA_FIELDS = ("path", "image_folder", "sharegpt_path")


def _abs(value) -> Path:
    return Path(str(value)).expanduser().absolute()


def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _exists(path: Path, folder: bool) -> bool:
    if folder:
        return path.is_dir() and any(path.iterdir())
    return path.is_file() and path.stat().st_size > 0


def _data_command(entry: str, root: Path, custom: dict[str, Path]) -> str:
    """`python -m lmm.prepare data NAME paths.data_dir=...`, plus the run's own paths that lie elsewhere."""
    extra = "".join(f" {key}={value}" for key, value in custom.items())
    return f"python -m lmm.prepare data {entry} paths.data_dir={root}{extra}"


def _stage_sections(cfg: DictConfig, stage1_exists: Optional[bool]) -> list[str]:
    """The data sections the run reads: stage 0's (when this job trains a missing stage 0), stage 1's (unless its
    run exists already) and stage 2's."""
    from lmm.launch.identity import stage0_dir
    from lmm.records import is_done
    from lmm.stage0 import stage0_in_job

    stage = cfg.stage.name
    out = []
    if stage0_in_job(cfg) and stage1_exists is not True and not is_done(stage0_dir(cfg)):
        out.append("stage0.data")
    if stage == "pretrain" or (stage == "both" and stage1_exists is not True):
        out.append("pretrain_data")
    if stage in ("finetune", "both"):
        out.append("data")
    return out


def _unfinished(root: Path, entries) -> str:
    state = root / ".prepare"
    late = [e for e in entries if marker.was_started(state, e)]
    return f" (an earlier `python -m lmm.prepare data {late[0]}` did not finish: run it again)" if late else ""


def _data_messages(cfg: DictConfig, section: str, root: Path) -> list[str]:
    d = OmegaConf.select(cfg, section)
    if d.kind != "llava":
        return []  # synthetic data is generated on first use
    entries = DATA_ENTRIES.get(str(d.name))
    fields = [f for f in DATA_FIELDS if d.get(f) and (f != "sharegpt_path" or d.sharegpt_ratio > 0)]
    paths = {f: _abs(d[f]) for f in fields}
    state = root / ".prepare"
    unfinished = {f"data.{f}" for e in entries or () if marker.was_started(state, e) for f in DATA_FIELDS
                  if f"data.{f}" in CATALOG[e].dest_keys()}
    missing = [f for f in fields if not _exists(paths[f], folder=f == "image_folder") or f"data.{f}" in unfinished]
    if not missing:
        return []
    if entries is None:
        return [f"{section}.{f} = {paths[f]}: missing ({d.name} is not a data set lmm.prepare knows: put the file "
                f"there or set {section}.{f})" for f in missing]
    out = []
    for f in missing:
        # The entry that writes this field: ShareGPT for sharegpt_path, the LLaVA set otherwise.
        entry = next((e for e in entries if f"data.{f}" in CATALOG[e].dest_keys()), entries[0])
        custom = {f"data.{g}": paths[g] for g in fields if not _under(paths[g], root)
                  and f"data.{g}" in CATALOG[entry].dest_keys()}
        out.append(f"{section}.{f} = {paths[f]}: missing ({CATALOG[entry].title}). Fetch it with: "
                   f"{_data_command(entry, root, custom)}{_unfinished(root, [entry])}")
    return out


def _benchmark_paths(cfg: DictConfig, name: str) -> list[tuple[str, Path, bool]]:
    """(config key, path, is a folder) of every file the benchmark reads, from the catalogue's checks."""
    out = []
    for check in CATALOG[name].checks:
        base = _abs(OmegaConf.select(cfg, check.key))
        if check.file and glob.has_magic(check.file):
            out.append((check.key, base / os.path.dirname(check.file), True))
        else:
            out.append((check.key, base / check.file if check.file else base, False))
        if check.images:
            out.append((check.images, _abs(OmegaConf.select(cfg, check.images)) / check.images_sub, True))
    return list(dict.fromkeys(out))


def _eval_messages(cfg: DictConfig, root: Path) -> list[str]:
    out = []
    for bench in cfg.eval.benchmarks:
        entry = BENCHMARK_ENTRIES.get(str(bench))
        if entry is None:
            continue  # synthetic: the run's own generated data
        paths = _benchmark_paths(cfg, entry)
        late = marker.was_started(root / ".prepare", entry)
        missing = [(k, p) for k, p, folder in paths if late or not _exists(p, folder)]
        if not missing:
            continue
        custom = {f"{k}": _abs(OmegaConf.select(cfg, k)) for k, _, _ in paths
                  if k.startswith("eval.paths.") and not _under(_abs(OmegaConf.select(cfg, k)), root)}
        command = _data_command(entry, root, custom) + _unfinished(root, [entry])
        for key, path in missing:
            out.append(f"{key} -> {path}: missing ({bench} is in eval.benchmarks; {CATALOG[entry].title}). "
                       f"Fetch it with: {command}")
    return out


def _preset_path(group: str, name: str, field: str = "path") -> Optional[str]:
    """The `path` (or `base`) a preset file states as written (None when there is no such preset)."""
    file = CONF_DIR / group / f"{name}.yaml"
    if not file.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(file)).get(field)


def _model_message(model: Model, key: str, group: str) -> Optional[str]:
    if model.kind == "llm" and model.local_only and not model.path:
        return f"{key} = null: {NO_65B}"
    if not model.path:
        return None  # random init
    problems = local_problems(model, model_folder(model))
    if not problems:
        return None
    if not model.is_hub:
        return f"{key} = {model.path}: {'; '.join(problems)} (a local checkpoint folder: fix or replace it)"
    command = f"python -m lmm.prepare models {model.name}"
    if _preset_path(group, model.name, key.rpartition(".")[2]) != model.path:
        command += f" {key}={model.path}"
    return (f"{key} = {model.path}: {'; '.join(problems)} ({hub_cache()}). Fetch it with: {command} "
            "(on a machine with internet, with the same HF_HOME / HF_HUB_CACHE)")


def missing_files(cfg: DictConfig, stage1_exists: Optional[bool] = None, models: bool = True) -> list[str]:
    """One message per file the run of `cfg` reads that is not there, each naming the `python -m lmm.prepare ...`
    command that fetches it; empty when everything is in place.

    Covers the data of the stages the run executes (stage 1's unless `stage1_exists` is True), the benchmarks of
    `eval.benchmarks` (unless `task` is `train`), and the LLM, its tokenizer and the vision tower in the Hugging Face
    cache (or their local folders; not with `models=False`). With `task=eval` (a trained run evaluated from its
    own folder) only the
    benchmarks are checked. A file left by an interrupted prepare (`.part`, an unfinished unpack) is
    reported as missing. Random-init and synthetic presets need no files.
    """
    root = _abs(cfg.paths.data_dir)
    task = cfg.get("task", "all")
    out: list[str] = []
    if task != "eval":
        for section in _stage_sections(cfg, stage1_exists):
            out += _data_messages(cfg, section, root)
    if task != "train":
        out += _eval_messages(cfg, root)
    if task == "eval" or not models:  # a trained run is evaluated from its own folders (model/ or base + adapter)
        return out
    from lmm.launch.identity import stage0_active

    llm_key = "model.base" if stage0_active(cfg) else "model.path"  # stage 0 reads the base LLM (model_of)
    for kind, key, group in (("llm", llm_key, "model"), ("vision", "vision.path", "vision")):
        message = _model_message(model_of(cfg, kind), key, group)
        if message:
            out.append(message)
    tokenizer = str(cfg.model.get("tokenizer") or "")
    if tokenizer.startswith(("/", ".", "~")) and not _abs(tokenizer).exists():  # a local tokenizer folder or file
        out.append(f"model.tokenizer = {tokenizer}: missing (a tokenizer folder or tokenizer.json)")
    return out
