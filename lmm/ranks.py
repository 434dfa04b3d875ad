"""Which process of a distributed job this is, and the barrier between them (imports nothing of ours).

torch.distributed is imported on first use: `lmm.records` and the analysis read this module and must load
without torch (the CPU tools import in well under a second; torch alone takes ~2 s).
"""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """Rank 0 of an initialised process group, else `RANK` (0 when unset): the process that writes files."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
