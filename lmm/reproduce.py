"""Command lines that reproduce part of a config: the stage-1 training that a stage-2 config needs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from lmm.config import compose
from lmm.launch.identity import stage1_id

# Sections whose values decide the stage-1 run's identity (lmm.launch.identity.stage1_id) or where it lives.
STAGE1_SECTIONS = ("model", "vision", "projector", "pretrain_data", "pretrain", "trainer", "paths",
                   "stage0")  # stage 0: when it makes the LLM, its id is part of stage 1's
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./\-]+")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _hydra_node(cfg: DictConfig):
    """The Hydra node of this run: in the config (a launcher's per-job config) or Hydra's own (inside an app)."""
    if "hydra" in cfg:
        return cfg.hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    # Outside a running app HydraConfig may hold a finished app's node: only trust it while Hydra runs.
    if GlobalHydra.instance().is_initialized() and HydraConfig.initialized():
        return HydraConfig.get()
    return None


def _config_source_args(node) -> list[str]:
    """`--config-dir D --config-name N` when the run was not composed from conf/train.yaml (e.g. lmm.sweep)."""
    name = OmegaConf.select(node, "job.config_name", default=None)
    if not name or name == "train":
        return []
    args = []
    for source in OmegaConf.select(node, "runtime.config_sources", default=None) or []:
        if source.get("provider") == "command-line" and str(source.get("path", "")).startswith("file://"):
            args += ["--config-dir", str(source["path"])[len("file://"):]]
    return [*args, "--config-name", str(name)]


def _from_overrides(cfg: DictConfig, overrides: Sequence[str], config_args: Sequence[str]) -> list[str]:
    """The run's own overrides with stage=pretrain in place of its stage settings, plus paths.root; not
    `dry_run` or `task` (the command must train)."""
    kept = [o for o in overrides if not (_key(o) in ("stage", "dry_run", "task") or _key(o).startswith("stage."))]
    if not any(_key(o) in ("paths", "paths.root") for o in kept):
        kept.append(f"paths.root={_value(cfg.paths.root)}")
    return [*config_args, "stage=pretrain", *kept]


def _value(value) -> str:
    """A value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if PLAIN_VALUE.fullmatch(text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _differences(cfg: DictConfig, base: DictConfig, prefix: str, skip_interpolated: bool) -> list[str]:
    """`key=value` for every leaf whose value in `cfg` differs from `base` (resolved values compared)."""
    out = []
    for key in base:
        path = f"{prefix}.{key}"
        if key not in cfg:
            continue
        if skip_interpolated and OmegaConf.is_interpolation(base, key):
            continue  # follows what it points at; a second pass catches a direct override of it
        ours, theirs = cfg[key], base[key]
        if isinstance(theirs, DictConfig) and isinstance(ours, DictConfig):
            out += _differences(ours, theirs, path, skip_interpolated)
            continue
        ours = OmegaConf.to_container(ours, resolve=True) if isinstance(ours, DictConfig) else ours
        theirs = OmegaConf.to_container(theirs, resolve=True) if isinstance(theirs, DictConfig) else theirs
        if ours != theirs:
            out.append(f"{path}={_value(ours)}")
    return out


def _from_values(cfg: DictConfig) -> list[str]:
    """Group choices from the config's names, then every stage-1 field that differs from what they give."""
    base = ["stage=pretrain", f"model={cfg.model.name}", f"vision={cfg.vision.name}",
            f"projector={cfg.projector.name}", f"data@pretrain_data={cfg.pretrain_data.name}", f"seed={cfg.seed}",
            f"paths.root={_value(cfg.paths.root)}"]
    try:
        extra: list[str] = []
        for skip_interpolated in (True, False):
            composed = compose([*base, *extra])
            extra += [d for section in STAGE1_SECTIONS
                      for d in _differences(cfg[section], composed[section], section, skip_interpolated)]
        if stage1_id(compose([*base, *extra])) != stage1_id(cfg):
            raise ValueError("the overrides do not reproduce the stage-1 id")
    except Exception:  # noqa: BLE001 -- a config no preset composes to (renamed options): the group choices
        return base
    return [*base, *extra]


def stage1_command(cfg: DictConfig, overrides: Sequence[str] | None = None) -> str:
    """`python -m lmm.train stage=pretrain ...` that trains exactly the stage-1 run `cfg` needs, where `cfg` looks
    for it: every override that decides its identity and location, so that following it ends the error.

    From the run's Hydra overrides (`overrides`, else those Hydra recorded for this run) with stage=pretrain;
    outside a Hydra app, from the config's values.
    """
    node = _hydra_node(cfg) if overrides is None else None
    if overrides is None and node is not None:
        overrides = list(OmegaConf.select(node, "overrides.task", default=None) or [])
    if overrides is not None:
        args = _from_overrides(cfg, overrides, _config_source_args(node) if node is not None else [])
    else:
        args = _from_values(cfg)
    return " ".join(["python", "-m", "lmm.train", *(shlex.quote(a) for a in args)])
