"""This machine's memory and GPUs, against which a run that starts here is checked before anything is built."""

from __future__ import annotations

import os

GIB = 2**30


def host_ram_gb() -> float:
    """Physical memory of this machine in GiB (the budget of runs on a CPU "cluster": local or localhost_slurm)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def gpus_here() -> int:
    """CUDA devices this process can use (0 on a CPU-only machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
