"""Getting the data sets, benchmarks and model weights the paper's runs read (`python -m lmm.prepare`)."""

from __future__ import annotations

from typing import Optional

from lmm.prepare.check import missing_files as _missing_files
from lmm.prepare.errors import PrepareError

__all__ = ["PrepareError", "missing_files"]


def missing_files(cfg, stage1_exists: Optional[bool] = None, models: bool = True) -> list[str]:
    """One message per file the run of `cfg` reads that is not there, each naming the command that fetches it
    (see `lmm.prepare.check.missing_files`)."""
    return _missing_files(cfg, stage1_exists, models)
