"""Evaluates a checkpoint trained elsewhere (`python -m lmm.eval +checkpoint=HUB_ID_OR_FOLDER eval=...`).

Two kinds of checkpoint, told apart by their `config.json`:

- a LLaVA in the Hugging Face format (`LlavaForConditionalGeneration` saved with `save_pretrained`, e.g.
  `llava-hf/llava-1.5-13b-hf`): every benchmark;
- a bare LLM (`*ForCausalLM`, e.g. `lmsys/vicuna-13b-v1.3`): the language benchmarks only (Vicuna-80,
  MMLU); image benchmarks asked for are skipped, and said so.

The checkpoint gets a deterministic folder, runs/checkpoints/<slug> (the hub id with `/` as `--`, or a
local folder's name plus a hash of its path), linked into the sweep's view runs/<sweep>/<slug>, with a
run record (`kind: stage2`, `source: checkpoint`, see `lmm.eval.checkpoint_record`) that the analysis reads
as a measured row. Scores land in it as for a trained run (`lmm.eval.runner.evaluate_run`), so a re-run
skips what is scored and a new benchmark is added to the same record.

What the record's hparams say (the tables group by them) comes from the checkpoint's own config (shapes,
image size), named by a `conf/model` preset when one is known: `model=<preset>` on the command line (or
`experiment=...`), else the preset whose `path` is the checkpoint's hub id, else the preset with the same
shape (for the size and family only: `llava-1.5-13b` has LLaMA-2-13B's shape). The conversation template
is the preset's when given or found by path, else `model.template=...`, else vicuna_v1 (LLaVA v1/1.5,
Vicuna) or llama_2 for a tokenizer whose chat template uses `[INST]`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from lmm.eval.runner import LoadedModel, evaluate_run
from lmm.launch.identity import CHECKPOINT_STORE
from lmm.layout import CONFIG_FILE
from lmm.records import RECORD_FILE, mark_done, read_record, write_record
from lmm.towers import image_tokens

log = logging.getLogger(__name__)

KINDS = ("llava", "llm")
# The fields of conf/model presets compared to tell a checkpoint's shape.
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "max_position_embeddings")


class CheckpointError(ValueError):
    """A checkpoint that cannot be evaluated as asked; the message says why and what to do."""


@dataclass
class Checkpoint:
    """A checkpoint to evaluate: where it is, what it is, and its config.json."""

    source: str  # as given on the command line
    location: str  # a resolved local folder, or the hub id
    local: bool
    kind: str  # llava | llm
    config: object = field(repr=False)
    revision: str | None = None  # the hub commit its config came from

    @property
    def text_config(self):
        return self.config.text_config if self.kind == "llava" else self.config

    @property
    def name(self) -> str:
        """A short name: the hub repo's name or the folder's."""
        return self.location.rstrip("/").rsplit("/", 1)[-1]


def inspect_checkpoint(source: str) -> Checkpoint:
    """Read the checkpoint's config.json (a local folder, or a hub id: only config.json is fetched)."""
    from transformers import AutoConfig

    path = Path(source).expanduser()
    local = path.exists()
    if local and not (path / "config.json").exists():
        raise CheckpointError(f"{path} has no config.json: +checkpoint= takes a folder written by save_pretrained "
                              "or a Hugging Face hub id")
    location = str(path.resolve()) if local else source
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the config of checkpoint {source!r}: {err}") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if getattr(config, "model_type", "") == "llava" or any("Llava" in a for a in architectures):
        kind = "llava"
    elif any(a.endswith("ForCausalLM") for a in architectures):
        kind = "llm"
    else:
        raise CheckpointError(f"checkpoint {source!r} is neither a LLaVA (LlavaForConditionalGeneration) nor a "
                              f"causal LM (architectures: {architectures or 'none'}, model_type: "
                              f"{getattr(config, 'model_type', None)})")
    revision = None if local else getattr(config, "_commit_hash", None)
    return Checkpoint(source, location, local, kind, config, revision)


def checkpoint_slug(checkpoint: Checkpoint) -> str:
    """The checkpoint's folder name: `owner--name` for a hub id, `<folder name>-<hash of its path>` else."""
    if checkpoint.local:
        digest = hashlib.sha256(checkpoint.location.encode()).hexdigest()[:8]
        raw = f"{checkpoint.name}-{digest}"
    else:
        raw = checkpoint.location.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).lstrip(".")


def checkpoint_dir(cfg: DictConfig, checkpoint: Checkpoint) -> Path:
    from lmm.launch.identity import runs_dir

    return runs_dir(cfg) / CHECKPOINT_STORE / checkpoint_slug(checkpoint)


# -- what the checkpoint is, in the config's terms ---------------------------------------------------


def _presets(group: str) -> dict[str, dict]:
    from lmm import CONF_DIR

    out = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        raw.pop("defaults", None)
        out[str(raw.get("name", path.stem))] = raw
    return out


def text_shape(text_config) -> dict:
    """The checkpoint's LLM shape in conf/model's field names."""
    heads = int(text_config.num_attention_heads)
    return {
        "hidden_size": int(text_config.hidden_size),
        "intermediate_size": int(text_config.intermediate_size),
        "num_layers": int(text_config.num_hidden_layers),
        "num_heads": heads,
        "num_kv_heads": int(getattr(text_config, "num_key_value_heads", None) or heads),
        "max_position_embeddings": int(getattr(text_config, "max_position_embeddings", 2048)),
        "vocab_size": int(text_config.vocab_size),
        "rms_norm_eps": float(getattr(text_config, "rms_norm_eps", 1e-6)),
    }


def preset_by_path(location: str) -> str | None:
    for name, preset in _presets("model").items():
        if preset.get("path") and str(preset["path"]).rstrip("/") == location.rstrip("/"):
            return name
    return None


def preset_by_shape(shape: dict) -> str | None:
    """The conf/model preset with exactly this shape (LLaMA-1 and LLaMA-2 13B differ in context length)."""
    found = []
    for name, preset in _presets("model").items():
        if preset.get("path") is None:
            continue  # random-init CPU sizes
        expected = {"num_kv_heads": preset.get("num_kv_heads") or preset.get("num_heads"),
                    "max_position_embeddings": preset.get("max_position_embeddings", 2048)}
        if all((expected.get(k) if k in expected else preset.get(k)) == shape[k] for k in SHAPE_FIELDS):
            found.append(name)
    return found[0] if len(found) == 1 else None


def parameter_count_b(shape: dict, tied: bool = False) -> float:
    """LLaMA-style parameter count in billions from the shape (embeddings, attention, MLP, norms, head)."""
    h, inter, layers, vocab = shape["hidden_size"], shape["intermediate_size"], shape["num_layers"], shape["vocab_size"]
    head_dim = h // shape["num_heads"]
    attention = 2 * h * h + 2 * h * shape["num_kv_heads"] * head_dim
    per_layer = attention + 3 * h * inter + 2 * h
    total = vocab * h * (1 if tied else 2) + layers * per_layer + h
    return total / 1e9


def _nominal(value: float) -> float:
    return float(f"{value:.2g}")


def _vision_name(vision_config) -> str:
    for name, preset in _presets("vision").items():
        if preset.get("image_size") == vision_config.image_size and preset.get("patch_size", 14) == \
                vision_config.patch_size and preset.get("hidden_size", 1024) == vision_config.hidden_size:
            return name
    return "checkpoint"


def guess_template(checkpoint: Checkpoint) -> str:
    """vicuna_v1 (LLaVA v1/1.5, Vicuna), or llama_2 when the tokenizer's chat template uses [INST]."""
    if checkpoint.kind == "llm":
        try:
            from transformers import AutoTokenizer

            chat = getattr(AutoTokenizer.from_pretrained(checkpoint.location), "chat_template", None) or ""
        except (OSError, ValueError):
            chat = ""
        if "[INST]" in str(chat):
            return "llama_2"
    return "vicuna_v1"


def explicit_overrides() -> set[str]:
    """The keys the command line set (`model`, `model.template`, `experiment`, ...), from Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except (ImportError, ValueError):
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def configure(cfg: DictConfig, checkpoint: Checkpoint, explicit: Iterable[str] = ()) -> tuple[DictConfig, dict]:
    """The config to evaluate the checkpoint with (and to record): the model's shape, size, name and template,
    the tower and projector of a LLaVA; plus the record's `checkpoint` section."""
    explicit = set(explicit)
    preset_given = bool({"model", "experiment"} & explicit)
    cfg = copy.deepcopy(cfg)
    shape = text_shape(checkpoint.text_config)
    tied = bool(getattr(checkpoint.text_config, "tie_word_embeddings", False))
    if preset_given:
        preset_name, preset_source, preset = str(cfg.model.name), "given", None
    elif (by_path := preset_by_path(checkpoint.location)) is not None:
        preset_name, preset_source, preset = by_path, "path", _presets("model")[by_path]
    elif (by_shape := preset_by_shape(shape)) is not None:
        preset_name, preset_source, preset = by_shape, "shape", _presets("model")[by_shape]
    else:
        preset_name, preset_source, preset = None, None, None
    model = cfg.model
    with open_dict(cfg):
        for key, value in shape.items():
            model[key] = value
        model.path = checkpoint.location
        model.tokenizer = None
        if not preset_given:
            nominal = float(preset["nominal_params_b"]) if preset else _nominal(parameter_count_b(shape, tied))
            if "model.nominal_params_b" not in explicit:
                model.nominal_params_b = nominal
            if "model.name" not in explicit:
                model.name = preset_name or f"{model.nominal_params_b:g}b"
            if "model.template" not in explicit:
                model.template = preset["template"] if preset_source == "path" else guess_template(checkpoint)
        if checkpoint.kind == "llava":
            v = checkpoint.config.vision_config
            cfg.vision.name = _vision_name(v)
            cfg.vision.path = None
            cfg.vision.image_size, cfg.vision.patch_size = int(v.image_size), int(v.patch_size)
            cfg.vision.hidden_size, cfg.vision.num_layers = int(v.hidden_size), int(v.num_hidden_layers)
            cfg.vision.intermediate_size, cfg.vision.num_heads = int(v.intermediate_size), int(v.num_attention_heads)
            linear = getattr(checkpoint.config, "projector_type", "mlp2x_gelu") == "linear"
            cfg.projector.name = cfg.projector.type = "linear" if linear else "mlp2x_gelu"
        else:
            cfg.eval.benchmarks = [b for b in cfg.eval.benchmarks if _text_only(b)]
    info = {"id": checkpoint.source if not checkpoint.local else checkpoint.location, "kind": checkpoint.kind,
            "name": checkpoint.name, "local": checkpoint.local, "revision": checkpoint.revision,
            "architectures": list(getattr(checkpoint.config, "architectures", None) or []),
            "preset": preset_name, "preset_source": preset_source,
            "params_b": round(parameter_count_b(shape, tied), 4), "slug": checkpoint_slug(checkpoint)}
    return cfg, info


def _text_only(benchmark: str) -> bool:
    from lmm.eval.benchmarks import get_benchmark

    return get_benchmark(benchmark).text_only


def skipped_benchmarks(cfg: DictConfig, checkpoint: Checkpoint) -> list[str]:
    """The benchmarks asked for that this checkpoint cannot take (image benchmarks for a bare LLM)."""
    if checkpoint.kind == "llava":
        return []
    return [b for b in cfg.eval.benchmarks if not _text_only(b)]


# -- loading ----------------------------------------------------------------------------------------


def num_image_tokens(config) -> int:
    """Image features per image the LLaVA's projector emits (CLS dropped unless the strategy is `full`)."""
    vision = config.vision_config
    return image_tokens(vision.image_size, vision.patch_size,
                        getattr(config, "vision_feature_select_strategy", "default"))


def load_checkpoint(cfg: DictConfig, checkpoint: Checkpoint) -> LoadedModel:
    """The checkpoint's model (on the GPUs when there are some, sharded by `eval.device_map`), its tokenizer
    (padding with `<unk>` or `</s>` when it has no pad token) and, for a LLaVA, its image processor."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor

    from lmm.data.templates import IMAGE_TOKEN
    from lmm.models.checkpoint import eval_placement
    from lmm.models.llava import LmmLlava
    from lmm.training.speed import compute_dtype

    placement = eval_placement(cfg)
    dtype = compute_dtype(cfg)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if checkpoint.kind == "llava":
        model = LmmLlava.from_pretrained(checkpoint.location, dtype=dtype, **placement)
        image_id = getattr(model.config, "image_token_id", None)
        if image_id is None:
            image_id = getattr(model.config, "image_token_index", None)
        if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != image_id:
            raise CheckpointError(f"{checkpoint.source}: the tokenizer's {IMAGE_TOKEN} id "
                                  f"({tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}) is not the model's "
                                  f"image_token_id ({image_id})")
        processor = CLIPImageProcessor.from_pretrained(checkpoint.location)
        tokens = num_image_tokens(model.config)
    else:
        model = AutoModelForCausalLM.from_pretrained(checkpoint.location, dtype=dtype, **placement)
        processor, tokens = None, 1  # no image: `<image>` is never expanded
    if not placement:
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    return LoadedModel(model.eval(), tokenizer, processor, tokens)


# -- the whole command ------------------------------------------------------------------------------


def prepare_folder(cfg: DictConfig, checkpoint: Checkpoint, info: dict) -> Path:
    """The checkpoint's folder with its record (scores kept from earlier evaluations) and DONE, linked into
    the sweep's view."""
    from lmm.eval.checkpoint_record import build_checkpoint_record
    from lmm.launch.identity import runs_dir
    from lmm.launch.store import link_into_sweep

    folder = checkpoint_dir(cfg, checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_record(folder) if (folder / RECORD_FILE).exists() else {}
    record = build_checkpoint_record(cfg, info, time.time())
    record["eval"] = previous.get("eval") or {}
    record["started_at"] = previous.get("started_at") or record["started_at"]
    write_record(folder, record)
    (folder / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg))
    mark_done(folder)
    link_into_sweep(folder, runs_dir(cfg) / str(cfg.sweep) / folder.name)
    return folder


def evaluate_checkpoint(cfg: DictConfig, source: str, *, explicit: Iterable[str] = (),
                        loader: Callable[[DictConfig, Checkpoint], LoadedModel] = load_checkpoint
                        ) -> tuple[Path, dict[str, dict], list[str]]:
    """Evaluate a checkpoint on `cfg.eval.benchmarks`; returns its folder, the scores by benchmark and the
    benchmarks skipped (image benchmarks for a bare LLM). Raises EvalFailed as `evaluate_run` does."""
    checkpoint = inspect_checkpoint(source)
    skipped = skipped_benchmarks(cfg, checkpoint)
    run_cfg, info = configure(cfg, checkpoint, explicit)
    if skipped:
        log.warning("%s is a bare LLM: skipping the image benchmarks %s", checkpoint.source, ", ".join(skipped))
    folder = prepare_folder(run_cfg, checkpoint, info)
    if not run_cfg.eval.benchmarks:
        return folder, {}, skipped
    results = evaluate_run(run_cfg, folder, loader=lambda c, _: loader(c, checkpoint))
    return folder, results, skipped
