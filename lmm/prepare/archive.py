"""Unpacking zip and tar archives into a folder, with a progress bar, safe member paths and a space check."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lmm.prepare.errors import PrepareError
from lmm.prepare.space import require_space

CHUNK = 1 << 20
# Resource-fork entries macOS adds to zips; never data.
_JUNK = ("__MACOSX/",)


def _safe_relative(name: str) -> str | None:
    """The member's path relative to the destination, or None when it is absolute or climbs out of it."""
    name = name.replace("\\", "/")
    if name.startswith("/") or "\x00" in name:
        return None
    normal = posixpath.normpath(name)
    if normal in (".", "") or normal == ".." or normal.startswith("../"):
        return None
    return normal


def _members(archive: Path) -> tuple[str, list[tuple[str, int]]]:
    """("zip" | "tar", [(member name, bytes)]) for the regular files of the archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return "zip", [(i.filename, i.file_size) for i in zf.infolist() if not i.is_dir()]
    try:
        with tarfile.open(archive, "r:*") as tf:
            return "tar", [(m.name, m.size) for m in tf.getmembers() if m.isfile()]
    except tarfile.TarError as err:
        raise PrepareError(f"{archive} is neither a zip nor a tar archive ({err}); delete it and run again") from err


def plan(archive: Path, strip: str = "", include: Sequence[str] = ()) -> list[tuple[str, str, int]]:
    """[(member name, path relative to the destination, bytes)] of what unpacking will write.

    `strip` (e.g. "train2017/") is dropped when every member starts with it; members matching `include` (after
    the strip) are kept, all when it is empty. Unsafe names (absolute, `..`) are refused.
    """
    _, members = _members(archive)
    members = [(n, s) for n, s in members if not n.startswith(_JUNK)]
    prefix = strip if strip and members and all(n.startswith(strip) for n, _ in members) else ""
    out = []
    for name, size in members:
        rel = _safe_relative(name[len(prefix):])
        if rel is None:
            raise PrepareError(f"{archive}: member {name!r} would be written outside the destination; refusing it")
        if include and not any(fnmatch.fnmatch(rel, pattern) for pattern in include):
            continue
        out.append((name, rel, size))
    return out


@contextmanager
def _opener(archive: Path) -> Iterator[Callable[[str], IO[bytes]]]:
    kind, _ = _members(archive)
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            yield zf.open
    else:
        with tarfile.open(archive, "r:*") as tf:
            def open_member(name: str) -> IO[bytes]:
                handle = tf.extractfile(name)
                if handle is None:
                    raise PrepareError(f"{archive}: {name} is not a regular file")
                return handle
            yield open_member


def unpack(archive: Path, dest: Path, strip: str = "", include: Sequence[str] = (), progress: bool = True) -> int:
    """Unpack `archive` into `dest`; returns the number of files written.

    Each file is written as `<name>.part` and renamed when complete, so an interrupted unpack leaves no
    truncated file under its real name (the data set's marker is written only after the whole unpack).
    """
    from tqdm import tqdm

    archive, dest = Path(archive), Path(dest)
    members = plan(archive, strip, include)
    if not members:
        raise PrepareError(f"{archive} holds no files to unpack (strip={strip!r}, include={list(include)})")
    total = sum(size for _, _, size in members)
    require_space([(dest, total, f"unpacked {archive.name}")], f"unpacking {archive.name}")
    dest.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"unpacking {archive.name}", disable=not progress)
    try:
        with _opener(archive) as open_member:
            for name, rel, _ in members:
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with open_member(name) as src, open(part, "wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                os.replace(part, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, OSError) and err.errno == 28:  # ENOSPC
            raise PrepareError(f"disk full while unpacking {archive.name} into {dest}: free space and run again "
                               "(the unpack starts over; nothing half-written counts)") from err
        raise PrepareError(f"{archive} is damaged ({type(err).__name__}: {err}): delete it and run again") from err
    finally:
        bar.close()
    return len(members)


def remove(path: Path) -> None:
    """Delete a file or folder if present."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
