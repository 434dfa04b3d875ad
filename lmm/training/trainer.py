"""The Trainer: modality-grouped sampling, a separate projector learning rate, throughput in the logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import Trainer

from lmm.layout import PROJECTOR_FILE
from lmm.models.build import load_projector, save_projector

# Token counters saved in every checkpoint, so a resumed run's record counts every segment's tokens.
COUNTERS_FILE = "lmm_counters.json"


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


class LmmTrainer(Trainer):
    """transformers' Trainer with LLaVA's batching and optimiser groups.

    `train_sampler_factory(seed)` returns the length-grouped, modality-separated sampler (or None for
    random order); `projector_lr` gives the projector its own learning rate.
    """

    def __init__(self, *args, train_sampler_factory=None, projector_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_sampler_factory = train_sampler_factory
        self.projector_lr = projector_lr
        self._tokens_before = 0  # non-padding tokens of earlier segments (a resumed run) and of read-outs
        self._tokens_pending = None  # this segment's since the last read-out: summed where the batch lies
        self.padded_tokens_seen = 0  # a batch's shape is known on the host: no device sync to count it
        self._last_log = (time.perf_counter(), 0)

    @property
    def tokens_seen(self) -> int:
        """Non-padding tokens trained on by this rank. Reading it waits for the device (once per log line),
        where adding each batch's count as an int would wait at every step."""
        if self._tokens_pending is not None:
            self._tokens_before += int(self._tokens_pending)
            self._tokens_pending = None
        return self._tokens_before

    @tokens_seen.setter
    def tokens_seen(self, value: int) -> None:
        self._tokens_before, self._tokens_pending = int(value), None

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler_factory is None:
            return super()._get_train_sampler(train_dataset)
        return self.train_sampler_factory(self.args.data_seed or self.args.seed)

    def create_optimizer(self, model=None):
        if self.projector_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = []
        for is_projector in (False, True):
            for decays in (True, False):
                params = [p for n, p in opt_model.named_parameters()
                          if p.requires_grad and ("multi_modal_projector" in n) == is_projector
                          and (n in decay) == decays]
                if params:
                    group = {"params": params, "weight_decay": self.args.weight_decay if decays else 0.0}
                    if is_projector:
                        group["lr"] = self.projector_lr
                    groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def count_tokens(self, inputs: dict) -> None:
        """Add a micro-batch's tokens to the counters (the padding ones too), without waiting for the device."""
        mask = inputs.get("attention_mask")
        if mask is not None:
            count = mask.sum()
            self._tokens_pending = count if self._tokens_pending is None else self._tokens_pending + count
            self.padded_tokens_seen += mask.numel()

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.count_tokens(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    # -- checkpoints without DeepSpeed (DeepSpeed's own checkpoints hold every parameter) ----------

    def _save_optimizer_and_scheduler(self, output_dir):
        """Also save the projector: a PEFT checkpoint holds only the adapters, not the trained projector.

        Runs before Trainer writes `trainer_state.json`, the file that marks a checkpoint complete.
        """
        super()._save_optimizer_and_scheduler(output_dir)
        if _is_peft(self.model) and not self.is_deepspeed_enabled and self.args.should_save:
            save_projector(self.model, output_dir)
        if self.args.should_save:
            counters = {"tokens_seen": self.tokens_seen, "padded_tokens_seen": self.padded_tokens_seen}
            (Path(output_dir) / COUNTERS_FILE).write_text(json.dumps(counters) + "\n")

    def restore_counters(self, checkpoint: Path) -> None:
        """Continue the token counts of the run's earlier segments from a checkpoint."""
        path = Path(checkpoint) / COUNTERS_FILE
        if path.exists():
            counters = json.loads(path.read_text())
            self.tokens_seen = int(counters["tokens_seen"])
            self.padded_tokens_seen = int(counters["padded_tokens_seen"])
            self._last_log = (time.perf_counter(), self.tokens_seen)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume every trained weight.

        Trainer's own loader feeds the saved (original-format) keys to `load_state_dict(strict=False)`,
        which silently skips LLaVA's renamed language-model keys; `from_pretrained` converts them.
        """
        model = self.model if model is None else model
        if self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        if _is_peft(model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_projector(model, Path(resume_from_checkpoint) / PROJECTOR_FILE)
            return None
        # At the trained weights' dtype: fp32 where they are kept so without DeepSpeed (`trained_weights_in_fp32`),
        # which `model.dtype` (the first parameter's, a frozen bf16 one) would round; copying into the frozen
        # bf16 ones is exact.
        dtype = next((p.dtype for p in model.parameters() if p.requires_grad), model.dtype)
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=dtype)
        model.load_state_dict(saved.state_dict(), strict=True)
        return None

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Training logs gain tokens/s (all ranks), the padding fraction so far and peak memory."""
        if "loss" in logs:
            now, tokens = time.perf_counter(), self.tokens_seen
            last_time, last_tokens = self._last_log
            world = max(self.args.world_size, 1)
            logs["tokens_per_s"] = round(world * (tokens - last_tokens) / max(now - last_time, 1e-9), 1)
            padded = self.padded_tokens_seen
            logs["padding_fraction"] = round(1 - tokens / padded, 4) if padded else 0.0
            logs["peak_mem_gb"] = round(peak_memory_gb(), 3)
            self._last_log = (now, tokens)
        super().log(logs, *args, **kwargs)


def peak_memory_gb() -> float:
    """Peak GPU memory of this process, or its peak resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
