"""The run record (`results.json`) and the `DONE` marker: read and written only here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RECORD_FILE = "results.json"
DONE_FILE = "DONE"
SCHEMA_VERSION = 1


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that a reader (or a killed job) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def write_record(folder: Path, record: dict) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(folder) / RECORD_FILE
    write_json_atomic(path, record)
    return path


def read_record(folder: Path) -> dict:
    return json.loads((Path(folder) / RECORD_FILE).read_text())


def update_record(folder: Path, **fields) -> dict:
    """Merge fields into an existing record (e.g. eval scores added after training)."""
    record = read_record(folder)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    write_record(folder, record)
    return record


def is_done(folder: Path) -> bool:
    """A run is finished only when its record and its DONE marker are both there."""
    return (Path(folder) / DONE_FILE).exists() and (Path(folder) / RECORD_FILE).exists()


def mark_done(folder: Path) -> None:
    (Path(folder) / DONE_FILE).write_text("done\n")
