"""Names to catalogue entries, and entries to paths: read from the composed run config (`lmm.config.compose`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmm import CONF_DIR
from lmm.config import compose
from lmm.prepare.catalog import ALIASES, BENCHMARK_ENTRIES, CATALOG
from lmm.prepare.errors import PrepareError
from lmm.prepare.sources import Entry


@functools.lru_cache(maxsize=64)
def _compose(overrides: tuple[str, ...]) -> DictConfig:
    return compose(list(overrides))


def compose_for(entry: Entry, user_overrides: Sequence[str] = ()) -> DictConfig:
    """The run config with the entry's data choice, then the user's overrides (which win: `paths.data_dir=...`)."""
    return _compose(tuple(entry.overrides) + tuple(user_overrides))


def config_path(cfg: DictConfig, key: str) -> Path:
    """The absolute path a config key names (relative paths are relative to the current folder, as for runs)."""
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    if value in (None, ""):
        raise PrepareError(f"{key} is not set in the composed config: set {key}=/path (or paths.data_dir)")
    return Path(str(value)).expanduser().absolute()


def data_dir(user_overrides: Sequence[str] = ()) -> Path:
    return config_path(_compose(tuple(user_overrides)), "paths.data_dir")


def state_dir(data_root: Path) -> Path:
    """Where prepare keeps its markers, staged Hub downloads and `.part` files."""
    return Path(data_root) / ".prepare"


def _eval_option_entries(name: str) -> tuple[str, ...] | None:
    """The entries of a conf/eval option (e.g. `table3`: llava_bench and mmbench), or None if there is none."""
    if not (CONF_DIR / "eval" / f"{name}.yaml").is_file():
        return None
    cfg = _compose((f"eval={name}",))
    return tuple(BENCHMARK_ENTRIES[b] for b in cfg.eval.benchmarks if b in BENCHMARK_ENTRIES)


def resolve_names(names: Sequence[str], catalog: Mapping[str, Entry] = CATALOG) -> list[Entry]:
    """Entries for names: entry names, aliases (`paper`, `train`, `eval`, `llava_80k_sharegpt`) or conf/eval
    options (`table3`); each entry once, in the order asked."""
    out: list[str] = []
    unknown = []
    for name in names:
        if name in catalog:
            found: tuple[str, ...] | None = (name,)
        elif name in ALIASES:
            found = ALIASES[name]
        else:
            found = _eval_option_entries(name)
        if found is None:
            unknown.append(name)
            continue
        out += [n for n in found if n not in out]
    if unknown:
        known = ", ".join(list(catalog) + sorted(ALIASES))
        raise PrepareError(f"unknown data set {', '.join(map(repr, unknown))}; known: {known} (or a conf/eval option)")
    return [catalog[n] for n in out]
