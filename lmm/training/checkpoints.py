"""Checkpoint manifests (sizes, sha256, signed per run) and the choice of the newest checkpoint that loads."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

log = logging.getLogger(__name__)

MANIFEST = "lmm_manifest.json"
# Beside the checkpoints, never inside one: the secret that signs this run's manifests.
KEY_FILE = ".manifest-key"
# Checkpoints refused for damage or tampering are moved here (kept to look at, out of the Trainer's way).
REJECTED = ".rejected"
VERSION = 1
CHUNK = 4 << 20


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)  # hashlib releases the GIL on large blocks: files hash in parallel threads
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _hashes(folder: Path, names: list[str]) -> dict[str, str]:
    with ThreadPoolExecutor(max_workers=min(16, len(names) or 1)) as pool:
        return dict(zip(names, pool.map(lambda n: _sha256(folder / n), names)))


def _shared_hashes(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 of every file, the work split over the ranks (largest files dealt out first) and gathered.

    A paper-scale ZeRO-3 checkpoint is ~1 TB (65B: bf16 weights and fp32 optimizer states): hashed on one
    process it would stall every GPU for minutes at each save and resume; over 32 ranks it takes seconds.
    Every rank must call it (a collective) when torch.distributed is initialised.
    """
    if not _distributed() or dist.get_world_size() == 1:
        return _hashes(folder, names)
    rank, world = dist.get_rank(), dist.get_world_size()
    by_size = sorted(names, key=lambda n: (-(folder / n).stat().st_size, n))
    parts: list = [None] * world
    dist.all_gather_object(parts, _hashes(folder, by_size[rank::world]))
    return {name: digest for part in parts for name, digest in part.items()}


def _from_rank0(value):
    """Rank 0's value on every rank (the value itself outside torch.distributed)."""
    if not _distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_key(ckpt_dir: Path, create: bool = False) -> bytes | None:
    """This run's signing key (created on first use when `create`)."""
    path = Path(ckpt_dir) / KEY_FILE
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _signature(key: bytes, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def write_manifest(folder: Path, key: bytes | None, step: int) -> dict:
    """List every file of a finished checkpoint with its size and sha256, signed; written last, atomically.

    Every rank calls it (the hashing is shared); the main process (the one given the `key`) writes the file.
    """
    folder = Path(folder)
    names = _from_rank0(_files(folder))
    hashes = _shared_hashes(folder, names)
    body = {"version": VERSION, "step": int(step),
            "files": {n: {"size": (folder / n).stat().st_size, "sha256": hashes[n]} for n in names}}
    if key is None:
        return body
    manifest = {**body, "hmac": _signature(key, body)}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return manifest


class ManifestCallback(TrainerCallback):
    """Writes `lmm_manifest.json` into every checkpoint once the Trainer has saved it (all ranks' files).

    Register it on the Trainer (`callbacks=[ManifestCallback()]` or `trainer.add_callback(ManifestCallback())`);
    `latest_checkpoint` resumes only from checkpoints whose manifest this run signed and whose files match it.
    """

    def on_save(self, args, state, control, **kwargs):
        if _distributed():
            dist.barrier()  # every rank's shards are written before the files are listed
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if _from_rank0(folder.is_dir()):
            started = time.time()
            key = run_key(Path(args.output_dir), create=True) if args.should_save else None
            write_manifest(folder, key, state.global_step)  # every rank hashes its share
            if args.should_save:
                log.info("checkpoint %s: manifest written (%.1f s)", folder.name, time.time() - started)
        return control


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file does not parse (header) or is cut short (data offsets past the end), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                return f"{path.name} is truncated (header of {length} bytes in a {size}-byte file)"
            header = json.loads(f.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as err:
        return f"{path.name} has no valid safetensors header ({type(err).__name__})"
    if 8 + length + end > size:
        return f"{path.name} is truncated ({size} of {8 + length + end} bytes)"
    return None


def _structure_problem(folder: Path) -> str | None:
    """Cheap checks first, with clear reasons: trainer state, weights' headers, optimizer state."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        step = int(state["global_step"])
    except FileNotFoundError:
        return "no trainer_state.json (the save did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"trainer_state.json does not parse ({type(err).__name__})"
    if f"checkpoint-{step}" != folder.name:
        return f"trainer_state.json is for step {step}"
    for path in sorted(folder.rglob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return problem
    optimizer = [folder / "optimizer.pt", *folder.glob("global_step*/*optim_states.pt")]  # plain / DeepSpeed
    if not any(p.is_file() and p.stat().st_size > 0 for p in optimizer):
        return "no optimizer state (optimizer.pt or DeepSpeed's *optim_states.pt)"
    return None


def _listing_problem(folder: Path, key: bytes | None) -> tuple[str | None, bool, dict]:
    """Everything but the hashes: (problem or None, merely incomplete, the manifest's file entries)."""
    problem = _structure_problem(folder)
    if problem:
        return problem, problem.startswith("no trainer_state.json"), {}
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST} (the save did not finish, or the folder was not written by this run)", True, {}
    except (OSError, ValueError) as err:
        return f"{MANIFEST} does not parse ({type(err).__name__})", False, {}
    body = {k: manifest.get(k) for k in ("version", "step", "files")}
    if key is None or not isinstance(manifest.get("hmac"), str) \
            or not hmac.compare_digest(manifest["hmac"], _signature(key, body)):
        return f"{MANIFEST} is not signed by this run (a folder copied in or edited?)", False, {}
    if body["step"] != int(folder.name.split("-")[-1]):
        return f"{MANIFEST} is for step {body['step']}", False, {}
    listed, present = body["files"], set(_files(folder))
    unlisted = sorted(present - set(listed))
    if unlisted:
        return f"{unlisted[0]} is not in the manifest (added after the save)", False, {}
    for name, entry in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing", False, {}
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, the manifest {entry['size']} (truncated or replaced)", False, {}
    return None, False, listed


def checkpoint_problem(folder: Path, key: bytes | None) -> tuple[str | None, bool]:
    """(why the checkpoint must not be loaded, or None; whether it is merely incomplete, i.e. a save that was
    cut short, rather than damaged or not written by this run).

    Under torch.distributed every rank calls it: rank 0 reads the manifest and the cheap checks, the ranks
    share the hashing, and all get the same answer.
    """
    folder = Path(folder)
    rank0 = not _distributed() or dist.get_rank() == 0
    problem, incomplete, listed = _from_rank0(_listing_problem(folder, key) if rank0 else None)
    if problem:
        return problem, incomplete
    hashes = _shared_hashes(folder, sorted(listed))
    for name, entry in sorted(listed.items()):
        if hashes[name] != entry["sha256"]:
            return f"{name} does not match its sha256 in the manifest (changed after the save)", False
    return None, False


def _set_aside(ckpt_dir: Path, folder: Path, incomplete: bool) -> None:
    if incomplete:  # a save cut short: nothing to look at, and its step will be saved again
        shutil.rmtree(folder, ignore_errors=True)
        return
    target = ckpt_dir / REJECTED / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(target))
    log.warning("moved %s to %s", folder.name, target)


def _choose(ckpt_dir: Path) -> Path | None:
    """Every rank walks the same candidates (rank 0's listing) in lockstep; rank 0 sets the bad ones aside."""
    rank0 = not _distributed() or dist.get_rank() == 0
    found = _from_rank0(sorted(
        (p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]), reverse=True) if rank0 and ckpt_dir.is_dir() else [])
    key = run_key(ckpt_dir) if rank0 else None
    for candidate in found:
        problem, incomplete = checkpoint_problem(candidate, key)
        if problem is None:
            return candidate
        if rank0:
            log.warning("not resuming from %s: %s; %s", candidate, problem,
                        "removing it" if incomplete else f"moving it to {REJECTED}/")
            _set_aside(ckpt_dir, candidate, incomplete)
        if _distributed():
            dist.barrier()
    return None


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that loads: complete, its files matching the manifest this run signed.

    Newer ones that fail are skipped with a warning naming them and why: a save cut short is removed (its
    step is saved again), a damaged or foreign one is moved to `.rejected/` (DeepSpeed and the Trainer
    unpickle checkpoint files, so a folder this run did not sign is never loaded). Every rank calls it and gets
    the same answer; the ranks share the hashing.
    """
    return _choose(Path(ckpt_dir))
