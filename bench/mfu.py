"""Model FLOPs of training batches (the planner's count), achieved TFLOP/s, and MFU against a GPU's bf16 peak."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, open_dict

from lmm.plan.flops import SampleFlops, sample_flops
from lmm.plan.params import ParamCounts, count_params
from lmm.plan.workload import StageWorkload, workload

# Dense (no 2:4 sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s per GPU, matched in
# this order against torch.cuda.get_device_name() ("NVIDIA H100 PCIe" before the SXM "H100").
SPEC_PEAK_TFLOPS = (("A100", 312.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))
# Measured bf16 matmul peaks: the largest rate a plain large bf16 matmul sustains on that GPU. The H200 of
# our device machine does ≈790 TFLOP/s (80 % of its 989 spec: clocks under sustained tensor-core load).
# MFU's denominator is this measured peak where there is one, else the spec: measured, MFU says how much of
# what the chip can actually deliver the training stack uses (1.0 = a perfect matmul); the spec-based MFU,
# printed beside it, is the number to compare with published MFUs.
MEASURED_PEAK_TFLOPS = (("H200", 790.0),)


@dataclass(frozen=True)
class Peak:
    """A GPU's bf16 peaks (TFLOP/s): spec and measured (None when unknown)."""

    gpu: str
    spec: float | None
    measured: float | None

    @property
    def denominator(self) -> float | None:
        return self.measured or self.spec


def _match(table, name: str) -> float | None:
    return next((value for key, value in table if key in name), None)


def device_peak(name: str | None, override_tflops: float | None = None) -> Peak | None:
    """The peaks of the GPU called `name` (torch.cuda.get_device_name()); None on CPU (no name)."""
    if not name:
        return None
    if override_tflops:
        return Peak(name, override_tflops, None)
    return Peak(name, _match(SPEC_PEAK_TFLOPS, name), _match(MEASURED_PEAK_TFLOPS, name))


def mfu(achieved_flops_per_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak; None without a peak (CPU)."""
    return achieved_flops_per_s / (peak_tflops * 1e12) if peak_tflops else None


class FlopCounter:
    """The planner's FLOPs (lmm.plan.flops.sample_flops) of the batches a model trains on.

    Counts each sample at its own length (padding is not useful work) and with its image, if it has one.
    The vocabulary is the built model's: the random-init presets take the tokenizer's size, not
    `model.vocab_size`. Model FLOPs = forward + backward + the frozen tower's forward; recomputation under
    gradient checkpointing is counted apart (hardware FLOPs), as MFU conventionally leaves it out.
    """

    def __init__(self, cfg: DictConfig, vocab_size: int, image_token_id: int, stage: str = "finetune"):
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.model.vocab_size = int(vocab_size)
        self.cfg: DictConfig = cfg
        self.counts: ParamCounts = count_params(cfg)
        self.workload: StageWorkload = workload(cfg, stage)
        self.image_token_id = int(image_token_id)

    def samples(self, lengths: Sequence[int], images: Sequence[int]) -> SampleFlops:
        total = SampleFlops()
        for seq, n in zip(lengths, images, strict=True):
            total = total + sample_flops(self.cfg, self.counts, self.workload, float(seq), int(n))
        return total

    def batch(self, inputs: dict) -> SampleFlops:
        """FLOPs of a collated batch (input_ids, attention_mask): one image per row holding `<image>` tokens."""
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        images = (inputs["input_ids"] == self.image_token_id).any(dim=1).int().tolist()
        return self.samples(lengths, images)


def model_flops(f: SampleFlops) -> float:
    """What MFU counts: the model's forward and backward and the tower's forward, not recomputation."""
    return f.forward + f.backward + f.vision

