"""`prepare models`: the LLM, its tokenizer and the CLIP towers of model presets, into the Hugging Face cache the runs
read (HF_HOME / HF_HUB_CACHE), so that offline compute nodes (HF_HUB_OFFLINE=1) load them; and their checks."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from lmm import CONF_DIR
from lmm.prepare import hub
from lmm.prepare.errors import PrepareError
from lmm.prepare.space import human, require_space

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
PROCESSOR_FILES = ("preprocessor_config.json",)
# transformers' order of preference for weights: the first of these present in a snapshot is the one it loads.
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# The towers the paper's runs use, fetched when `prepare models` names no vision preset.
PAPER_TOWERS = ("clip_l14_224", "clip_l14_336")

NO_65B = (
    "65b: no public weights exist. The paper's authors trained their own Vicuna-65B (LLaMA-65B fine-tuned on "
    "ShareGPT, 159M tokens) and never released it, so there is nothing to download. Put a Hugging Face folder of "
    "a Vicuna-style 65B LLaMA (config.json, tokenizer, safetensors) on shared disk and point the runs at it with "
    "LMM_VICUNA_65B=/path/to/vicuna-65b (or paths.vicuna_65b=/path); `python -m lmm.prepare verify 65b` then "
    "checks it. Or let stage 0 train it from LLaMA-65B on ShareGPT first: model.base=huggyllama/llama-65b (the "
    "preset's default; `python -m lmm.prepare models 65b` then fetches that base).")


@dataclass
class Model:
    """A preset to fetch or check: the LLM of conf/model/<name> or the tower of conf/vision/<name>."""

    name: str
    kind: str  # "llm" | "vision"
    path: Optional[str]  # hub id or local folder
    local_only: bool
    expected: dict = field(default_factory=dict)  # config.json field -> value the preset states

    @property
    def is_hub(self) -> bool:
        return bool(self.path) and not Path(self.path).expanduser().exists() and "/" in self.path \
            and not str(self.path).startswith(("/", ".", "~"))


def _preset_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _compose(overrides: Sequence[str]) -> DictConfig:
    from lmm.prepare.layout import _compose as compose

    return compose(tuple(overrides))


def model_of(cfg: DictConfig, kind: str) -> Model:
    """The Model a composed config names (its `model` or its `vision` section)."""
    if kind == "llm":
        m = cfg.model
        expected = {"hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
                    "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
                    "num_key_value_heads": m.num_kv_heads or m.num_heads, "vocab_size": m.vocab_size}
        if not m.path and m.get("base"):  # stage 0 trains the LLM from its base: that is what is fetched and read
            return Model(str(m.name), "llm", str(m.base), False, expected)
        return Model(str(m.name), "llm", m.path, bool(m.local_only), expected)
    v = cfg.vision
    expected = {"hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_layers, "num_attention_heads": v.num_heads, "image_size": v.image_size,
                "patch_size": v.patch_size}
    return Model(str(v.name), "vision", v.path, False, expected)


def resolve(names: Sequence[str], overrides: Sequence[str] = ()) -> list[Model]:
    """Models for preset names (conf/model or conf/vision); the paper's towers join when no tower is named."""
    llms, towers = _preset_names("model"), _preset_names("vision")
    unknown = [n for n in names if n not in llms and n not in towers]
    if unknown:
        raise PrepareError(f"unknown model preset {', '.join(map(repr, unknown))}; conf/model: {', '.join(llms)}; "
                           f"conf/vision: {', '.join(towers)}")
    wanted_towers = [n for n in names if n in towers] or [t for t in PAPER_TOWERS if t in towers]
    out = [model_of(_compose([f"model={n}", *overrides]), "llm") for n in names if n in llms]
    out += [model_of(_compose([f"vision={n}", *overrides]), "vision") for n in wanted_towers]
    return out


# ----------------------------------------------------------------------------------------------- the local cache
def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, revision: str = "main") -> Optional[Path]:
    """The cached snapshot folder a `from_pretrained(repo_id)` reads offline, or None."""
    folder = hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _index_shards(index: Path) -> list[str]:
    try:
        return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise PrepareError(f"{index} is not a readable weight index ({err})") from err


def weight_problems(folder: Path) -> list[str]:
    """What keeps transformers from loading the weights of a folder, in its own order of preference: the first
    weight file present is the one used, and every shard its index names must be there."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.exists():
            continue
        if not name.endswith(".index.json"):
            return []
        missing = [s for s in _index_shards(path) if not (folder / s).exists()]
        if missing:
            return [f"{name} names {len(missing)} shard(s) that are missing ({missing[0]}, ...); transformers reads "
                    f"this index first: delete {path} if the other weights are complete"]
        return []
    return [f"no weights ({' / '.join(WEIGHT_FILES)})"]


def local_problems(model: Model, folder: Optional[Path]) -> list[str]:
    """What is missing from a model's folder (cached snapshot or local checkpoint) for a run to load it."""
    if folder is None or not folder.is_dir():
        return ["not in the Hugging Face cache" if model.is_hub else f"{model.path} is not a folder"]
    out = [] if (folder / "config.json").is_file() else ["no config.json"]
    out += weight_problems(folder)
    if model.kind == "llm" and not any((folder / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        out.append("no tokenizer (tokenizer.model / tokenizer.json)")
    if model.kind == "vision" and not (folder / "preprocessor_config.json").is_file():
        out.append("no preprocessor_config.json")
    return out


def model_folder(model: Model) -> Optional[Path]:
    if not model.path:
        return None
    return cached_snapshot(model.path) if model.is_hub else Path(model.path).expanduser()


# ------------------------------------------------------------------------------------------------- fetching
def _choose_weights(model: Model, commit: str, listing: dict[str, hub.HubFileInfo]) -> tuple[list[str], str]:
    """The weight files to fetch and a note: safetensors when the repo holds a complete set, else the PyTorch .bin
    files (transformers reads them with torch.load(weights_only=True)). An incomplete safetensors index is never
    fetched: in the cache it would shadow the .bin files."""
    if "model.safetensors" in listing:
        return ["model.safetensors"], ""
    notes = []
    choices = (("model.safetensors.index.json", None), ("pytorch_model.bin.index.json", "pytorch_model.bin"))
    for index, single in choices:
        if single and single in listing:
            return [single], notes[0] if notes else ""
        if index not in listing:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            shards = _index_shards(hub.snapshot(model.path, "model", commit, [index], local_dir=Path(tmp)) / index)
        missing = [s for s in shards if s not in listing]
        if not missing:
            return [index, *shards], notes[0] if notes else ""
        notes.append(f"{model.path}@main lists {index}, but {len(missing)} of the {len(shards)} shards it names are "
                     f"not in the repo ({missing[0]}, ...)")
    if notes:
        raise PrepareError("; ".join(notes) + ": no complete set of weights to fetch.")
    raise PrepareError(f"{model.path} has no weights transformers can load ({' / '.join(WEIGHT_FILES)})")


def fetch(model: Model, force: bool = False) -> str:
    """Fetch one preset into the HF cache; returns what happened (one line)."""
    if model.kind == "llm" and model.local_only and not model.path:
        raise PrepareError(NO_65B)
    if not model.path:
        return f"{model.name}: random-init preset (no checkpoint to fetch)"
    if not model.is_hub:
        problems = local_problems(model, Path(model.path).expanduser())
        if problems:
            raise PrepareError(f"{model.name}: local folder {model.path}: {'; '.join(problems)}")
        return f"{model.name}: local folder {model.path} (nothing to fetch)"
    snapshot = cached_snapshot(model.path)
    if not force and snapshot is not None and not local_problems(model, snapshot):
        return f"{model.name}: {model.path} already in the cache ({snapshot})"
    hub.require_online()
    commit, listing = hub.list_files(model.path, "model", "main")
    if hub.is_gated(model.path) and not hub.token_present():
        raise PrepareError(hub.gated_message(model.path, "model", token_sent=False, status=401))
    weights, note = _choose_weights(model, commit, listing)
    extra = (CONFIG_FILES + TOKENIZER_FILES) if model.kind == "llm" else (CONFIG_FILES + PROCESSOR_FILES)
    files = [f for f in extra if f in listing] + weights
    if note:
        print(f"{model.name}: {note}; fetching the PyTorch .bin weights instead (loaded with weights_only=True)")
    cached = cached_snapshot(model.path, commit)
    todo = [f for f in files if not (cached and (cached / f).exists())]
    need = sum(listing[f].size or 0 for f in todo)
    require_space([(hub_cache(), need, model.path)], f"{model.name} ({model.path})")
    print(f"{model.name}: fetching {len(todo)} file(s), {human(need)}, of {model.path} into {hub_cache()}")
    # revision "main": snapshot_download records refs/main, which from_pretrained(repo_id) reads offline.
    folder = hub.snapshot(model.path, "model", "main", files)
    for name in files:
        size, actual = listing[name].size, (folder / name).stat().st_size
        if size is not None and actual != size:
            raise PrepareError(f"{model.path}/{name} has {actual} bytes, the Hub lists {size}: delete it from "
                               f"{folder} and run again")
    problems = local_problems(model, cached_snapshot(model.path))
    if problems:
        raise PrepareError(f"{model.name}: {model.path} is incomplete after the download: {'; '.join(problems)}")
    return f"{model.name}: {model.path} fetched into {folder}"


# ------------------------------------------------------------------------------------------------- checking
def _config_values(folder: Path, kind: str) -> dict:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if kind == "vision" and isinstance(config.get("vision_config"), dict):
        config = config["vision_config"]
    return config


def check(model: Model) -> tuple[list[tuple[str, str, str, bool]], list[str]]:
    """(rows of (check, found, expected, ok), problems) for one preset's files."""
    if model.kind == "llm" and model.local_only and not model.path:
        return [("weights", "none (LMM_VICUNA_65B unset)", "a local folder", False)], [NO_65B]
    if not model.path:
        return [("weights", "random init", "-", True)], []
    folder = model_folder(model)
    problems = local_problems(model, folder)
    rows = [("files", "complete" if not problems else "; ".join(problems), "config, weights, tokenizer/processor",
             not problems)]
    if folder is not None and (folder / "config.json").is_file():
        values = _config_values(folder, model.kind)
        defaults = {"num_key_value_heads": values.get("num_attention_heads")}
        for key, want in model.expected.items():
            got = values.get(key, defaults.get(key))
            ok = got == want
            rows.append((key, str(got), str(want), ok))
            if not ok:
                problems.append(f"config.json {key} = {got}, the preset says {want}")
    fix = f"python -m lmm.prepare models {model.name}" if model.is_hub else f"the folder {model.path}"
    return rows, [f"{model.name} ({model.path}): {p} (fix: {fix})" for p in problems]
