"""The tuning-method registry: what each stage-2 method is (full, LoRA, QLoRA, DoRA), asked by every module.

A method is a `TuningMethod` in `METHODS`; `conf/tuning/<name>.yaml` selects it by `method: <name>`. Nothing
else compares method names: validation, trainability, the run id, the planner, the dry run and the analysis
tables read the fields below. A new method is one entry here plus its YAML (and, if it changes how the model
trains, the code its new field drives). This module imports nothing of ours, so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TuningMethod:
    """One stage-2 tuning method and everything the other modules need to know about it."""

    name: str  # `tuning.method`, the run id's slug (with the rank for adapters) and the records' `method`
    label: str  # its name in tables and reports: "Full", "LoRA r64", "QLoRA r64", "DoRA r64"
    adapter: bool  # PEFT LoRA-family adapters on a frozen LLM (False: the LLM's own weights train)
    trains: str  # what stage 2 trains, as the dry run prints it
    base_bits: int = 16  # the frozen base's weight bits; 4 = bitsandbytes 4-bit (QLoRA)
    # DoRA: a trained magnitude per output feature of each wrapped linear (PEFT's `use_dora`).
    magnitude: bool = False
    recipe: str = "lora"  # the `model.recipe` block its presets and the analysis read lr/batch from
    fallback: str | None = None  # the method the planner suggests when this one does not fit in memory
    # The planner's factors (lmm.plan.flops and lmm.plan.memory read them; nothing there names a method):
    # - base_reruns: extra forward passes of each wrapped base linear while training with lora dropout > 0
    #   (PEFT's DoRA runs the base again on the dropped-out input: its forward cannot reuse the base output).
    # - kept_outputs: extra activations per wrapped linear and token, in units of its output (DoRA keeps the
    #   base and the adapter outputs for its magnitudes' gradient).
    # - materialised_weights: transient copies of the widest wrapped weight while it runs (QLoRA dequantises
    #   one, forward and backward; DoRA builds W + s·BA and B·A for its weight norm).
    base_reruns: int = 0
    kept_outputs: int = 0
    materialised_weights: int = 0

    @property
    def quantized(self) -> bool:
        return self.base_bits < 16

    @property
    def paper_zero_stage(self) -> int:
        """The paper's ZeRO stage: 3 everywhere except a quantized base, which ZeRO-3 cannot partition."""
        return 2 if self.quantized else 3

    def slug(self, rank: int) -> str:
        """Its part of the run id: `full`, `lora64`, `qlora64`, `dora64` (pinned: ids never change)."""
        return f"{self.name}{int(rank)}" if self.adapter else self.name

    def table_label(self, rank) -> str:
        """Its label in tables: `Full`, or the label with the rank (`LoRA r64`)."""
        return f"{self.label} r{int(rank)}" if self.adapter and rank is not None else self.label

    def peft_config(self, tuning):
        """PEFT's config for the adapters on the LLM's linear layers (a regex keeps CLIP's out); None if none."""
        if not self.adapter:
            return None
        from peft import LoraConfig  # peft imports torch and transformers: only runs that train need it

        return LoraConfig(r=int(tuning.rank), lora_alpha=float(tuning.alpha), lora_dropout=float(tuning.dropout),
                          target_modules=tuning.target_modules, bias="none", task_type="CAUSAL_LM",
                          use_dora=self.magnitude)

    def adapter_params(self, d_in: int, d_out: int, rank: int) -> int:
        """Adapter parameters on one wrapped linear: A (d_in→r) and B (r→d_out), no bias; DoRA adds d_out."""
        if not self.adapter:
            return 0
        return rank * (d_in + d_out) + (d_out if self.magnitude else 0)


METHODS: dict[str, TuningMethod] = {m.name: m for m in (
    TuningMethod("full", "Full", adapter=False, trains="projector + LLM (CLIP frozen)", recipe="full",
                 fallback="lora"),
    TuningMethod("lora", "LoRA", adapter=True, fallback="qlora",
                 trains="projector + LoRA adapters on the LLM (LLM base and CLIP frozen)"),
    TuningMethod("qlora", "QLoRA", adapter=True, base_bits=4, materialised_weights=2,
                 trains="projector + LoRA adapters on a 4-bit NF4 LLM base (CLIP frozen)"),
    TuningMethod("dora", "DoRA", adapter=True, magnitude=True, fallback="lora", base_reruns=1, kept_outputs=2,
                 materialised_weights=2,
                 trains="projector + DoRA adapters (LoRA + a magnitude per output) on the LLM "
                        "(LLM base and CLIP frozen)"),
)}
METHOD_NAMES = tuple(METHODS)
# The order tables list methods in: full first, then the adapters as registered.
METHOD_ORDER = {name: i for i, name in enumerate(METHOD_NAMES)}


def tuning_method(name: str) -> TuningMethod:
    """The registered method called `name`; a ValueError naming the known ones otherwise."""
    try:
        return METHODS[str(name)]
    except KeyError:
        raise ValueError(f"tuning.method = {name!r} is not a tuning method: the methods are "
                         f"{', '.join(METHOD_NAMES)} (lmm/tuning.py).") from None
