"""The Trainer: modality-grouped sampling, a separate projector learning rate, throughput in the logs."""

from __future__ import annotations

import time

import torch
from transformers import Trainer


class LmmTrainer(Trainer):
    """transformers' Trainer with LLaVA's batching and optimiser groups.

    `train_sampler_factory(seed)` returns the length-grouped, modality-separated sampler (or None for
    random order); `projector_lr` gives the projector its own learning rate.
    """

    def __init__(self, *args, train_sampler_factory=None, projector_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_sampler_factory = train_sampler_factory
        self.projector_lr = projector_lr
        self.tokens_seen = 0
        self.padded_tokens_seen = 0
        self._last_log = (time.perf_counter(), 0)

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

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs.get("attention_mask")
        if mask is not None:
            self.tokens_seen += int(mask.sum())
            self.padded_tokens_seen += int(mask.numel())
        return super().training_step(model, inputs, num_items_in_batch)

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
