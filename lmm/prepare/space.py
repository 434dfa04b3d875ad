"""Free disk space against what a download and its unpacking will take, checked before anything is fetched."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from lmm.prepare.errors import PrepareError


def existing_ancestor(path: Path) -> Path:
    """The path itself or its nearest existing parent (where the files will be written)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the filesystem that holds `path` (or would hold it)."""
    return shutil.disk_usage(existing_ancestor(path)).free


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def require_space(needs: Iterable[tuple[Path, int, str]], what: str) -> None:
    """Raise when a filesystem has less free space than the bytes to be written on it.

    `needs`: (path written, bytes, what it is) triples; paths on the same filesystem are added up.
    """
    by_device: dict[int, list[tuple[Path, int, str]]] = {}
    for path, size, label in needs:
        if size <= 0:
            continue
        anchor = existing_ancestor(path)
        by_device.setdefault(os.stat(anchor).st_dev, []).append((anchor, size, label))
    for items in by_device.values():
        needed = sum(size for _, size, _ in items)
        anchor = items[0][0]
        free = free_bytes(anchor)
        if free < needed:
            parts = " + ".join(f"{label} {human(size)}" for _, size, label in items)
            raise PrepareError(
                f"not enough disk space for {what} in {anchor}: needs {human(needed)} ({parts}), {human(free)} free. "
                "Free some space, or put the data elsewhere with paths.data_dir=/big/disk (or LMM_DATA_DIR); "
                "nothing was downloaded.")
