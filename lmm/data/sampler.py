"""Length-grouped, modality-separated sample order, so each optimizer step pads little and sees one modality."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class ModalityLengthGroupedSampler(Sampler[int]):
    """Yields dataset indices in steps of `batch_size × world_size`, each step of one modality.

    Per epoch, and per modality (with image / text-only): shuffle with a generator seeded by
    (seed, epoch), cut into megabatches of `megabatch_steps` steps, sort each megabatch by length
    (longest first) and cut it into steps, so a step holds samples of similar length. Then the
    steps of both modalities are shuffled together and the step holding the longest sample moves
    to the front (an out-of-memory error shows at once, not hours in).

    Accelerate (under `Trainer`) hands consecutive batches of `batch_size` to ranks 0, 1, …, so one
    step is the same modality on every rank. A modality whose count is not a multiple of the step
    is topped up with repeats of its own first samples of the epoch, so no step ever mixes
    modalities: an epoch is sum over modalities of ceil(n / step) steps.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        has_image: Sequence[bool],
        batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        megabatch_steps: int = 50,
    ):
        if len(lengths) != len(has_image):
            raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags")
        if batch_size < 1 or world_size < 1 or megabatch_steps < 1:
            raise ValueError("batch_size, world_size and megabatch_steps must be >= 1")
        self.lengths = list(lengths)
        self.has_image = [bool(x) for x in has_image]
        self.step = batch_size * world_size
        self.seed = seed
        self.megabatch_steps = megabatch_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Trainer/accelerate at each epoch start: a new, reproducible order."""
        self.epoch = epoch

    def __len__(self) -> int:
        counts = (sum(self.has_image), len(self.has_image) - sum(self.has_image))
        return sum(-(-n // self.step) * self.step for n in counts)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def order(self, epoch: int) -> list[int]:
        rng = random.Random(f"lmm-sampler-{self.seed}-{epoch}")
        steps: list[list[int]] = []
        for modality in (True, False):
            members = [i for i, flag in enumerate(self.has_image) if flag is modality]
            steps += self._steps(members, rng)
        rng.shuffle(steps)
        if steps:
            longest = max(range(len(steps)), key=lambda s: max(self.lengths[i] for i in steps[s]))
            steps.insert(0, steps.pop(longest))
        return [i for step in steps for i in step]

    def _steps(self, members: list[int], rng: random.Random) -> list[list[int]]:
        if not members:
            return []
        rng.shuffle(members)
        short = -len(members) % self.step
        members += (members * (short // len(members) + 1))[:short]
        mega = self.step * self.megabatch_steps
        steps = []
        for start in range(0, len(members), mega):
            group = sorted(members[start : start + mega], key=lambda i: -self.lengths[i])
            steps += [group[k : k + self.step] for k in range(0, len(group), self.step)]
        return steps


def batched(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of an index order (the last may be short)."""
    return [list(indices[k : k + batch_size]) for k in range(0, len(indices), batch_size)]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded token grid that is padding, over all batches (0 = none wasted)."""
    grid = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 1 - real / grid if grid else 0.0
