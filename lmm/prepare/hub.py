"""Hugging Face Hub access through `huggingface_hub`: file listings, `snapshot_download`, checksums, clear errors.

HF_ENDPOINT (a mirror), HF_TOKEN (or a saved `hf auth login`) and HF_HOME / HF_HUB_CACHE are honoured as
huggingface_hub reads them; HF_ENDPOINT is also read at call time, so it works however late it was set.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lmm.prepare.errors import PrepareError

CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFileInfo:
    path: str
    size: Optional[int]
    sha256: Optional[str]  # LFS files
    blob_id: Optional[str]  # git blob sha1 (small files)


def endpoint() -> Optional[str]:
    """HF_ENDPOINT as set now (None: huggingface_hub's default, https://huggingface.co)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def web_url(repo_id: str, repo_type: str = "model") -> str:
    base = endpoint() or "https://huggingface.co"
    return f"{base}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def token_present() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None


def require_online() -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise PrepareError(
            "HF_HUB_OFFLINE is set: prepare downloads, so run it where there is internet (a login node) with "
            "HF_HUB_OFFLINE unset; keep HF_HUB_OFFLINE=1 on the compute nodes that read the prepared files.")


def gated_message(repo_id: str, repo_type: str, token_sent: bool, status: Optional[int]) -> str:
    url = web_url(repo_id, repo_type)
    if not token_sent:
        return (f"{repo_id} is a gated repo and no Hugging Face token was sent (HTTP {status or 401}): accept its "
                f"licence at {url} with your account, then set HF_TOKEN=hf_... (a read token of that account, "
                "https://huggingface.co/settings/tokens) or run `hf auth login`, and run this again.")
    return (f"{repo_id} is a gated repo and your token has not been granted access (HTTP {status or 403} "
            f"GatedRepo): request access at {url} with the account of HF_TOKEN (Meta's LLaMA-2 approval can take "
            "hours or days), or use a token of an account that has it.")


def explain(err: BaseException, repo_id: str, repo_type: str = "model") -> Optional[str]:
    """A user-facing message for a huggingface_hub error about `repo_id`, or None when it is not one."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = web_url(repo_id, repo_type)
    has_token = token_present()
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, GatedRepoError):
        return gated_message(repo_id, repo_type, token_sent=has_token and status != 401, status=status)
    if isinstance(err, RepositoryNotFoundError):
        if status == 401 and not has_token:
            return (f"{repo_id}: HTTP 401 Unauthorized and no Hugging Face token was sent: the repo is private or "
                    f"gated, or does not exist. Set HF_TOKEN=hf_... (or `hf auth login`) and check {url}.")
        return (f"{repo_id} ({repo_type}) was not found on {endpoint() or 'huggingface.co'} (HTTP {status}): check the "
                f"name at {url}" + ("" if has_token else ", and set HF_TOKEN if it is private") + ".")
    if isinstance(err, RevisionNotFoundError):
        return f"{repo_id}: the revision asked for does not exist ({err})."
    if isinstance(err, RemoteEntryNotFoundError):
        return f"{repo_id}: a file asked for is not in the repo ({err}): the repo changed; see {url}/tree/main."
    if isinstance(err, HfHubHTTPError) and status == 401:
        return (f"{repo_id}: HTTP 401 Unauthorized: the token in HF_TOKEN (or your saved login) is invalid or "
                "expired; create a new read token at https://huggingface.co/settings/tokens.")
    if isinstance(err, HfHubHTTPError) and status == 403:
        return f"{repo_id}: HTTP 403 Forbidden ({err}); check that your token may read {url}."
    if isinstance(err, LocalEntryNotFoundError):
        return (f"{repo_id}: the Hub at {endpoint() or 'https://huggingface.co'} could not be reached ({err}). "
                "prepare needs internet: run it on a login node (set HF_ENDPOINT for a mirror).")
    if isinstance(err, HfHubHTTPError):
        return f"{repo_id}: {err}"
    return None


@contextmanager
def hub_errors(repo_id: str, repo_type: str = "model") -> Iterator[None]:
    """Turn huggingface_hub's errors about `repo_id` into PrepareErrors that say what to do."""
    try:
        yield
    except PrepareError:
        raise
    except Exception as err:  # noqa: BLE001 -- only the ones explain() knows are translated
        message = explain(err, repo_id, repo_type)
        if message is None:
            raise
        raise PrepareError(message) from err


def list_files(repo_id: str, repo_type: str, revision: str) -> tuple[str, dict[str, HubFileInfo]]:
    """(commit sha, {path: info}) of a repo revision, from the Hub's repo info API with file metadata."""
    from huggingface_hub import HfApi

    with hub_errors(repo_id, repo_type):
        info = HfApi(endpoint=endpoint()).repo_info(repo_id, repo_type=repo_type, revision=revision,
                                                    files_metadata=True)
    files = {}
    for s in info.siblings or []:
        files[s.rfilename] = HubFileInfo(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None, s.blob_id)
    if not info.sha:
        raise PrepareError(f"{repo_id}: the Hub returned no commit for revision {revision}")
    return info.sha, files


def is_gated(repo_id: str, repo_type: str = "model", revision: str = "main") -> bool:
    from huggingface_hub import HfApi

    with hub_errors(repo_id, repo_type):
        info = HfApi(endpoint=endpoint()).repo_info(repo_id, repo_type=repo_type, revision=revision)
    return bool(getattr(info, "gated", False))


def matching(files: Sequence[str], pattern: str) -> list[str]:
    """Repo paths matching a glob, as `allow_patterns` matches them (fnmatch; `*` crosses `/`)."""
    return [f for f in files if fnmatch.fnmatch(f, pattern)]


def snapshot(repo_id: str, repo_type: str, commit: str, paths: Sequence[str], local_dir: Optional[Path] = None,
             max_workers: int = 8) -> Path:
    """`snapshot_download` of exactly `paths` at `commit` (into the HF cache, or `local_dir`); its own progress bars
    and its resume of interrupted transfers (Range requests) apply."""
    from huggingface_hub import snapshot_download

    with hub_errors(repo_id, repo_type):
        folder = snapshot_download(repo_id, repo_type=repo_type, revision=commit, allow_patterns=list(paths),
                                   local_dir=str(local_dir) if local_dir is not None else None,
                                   endpoint=endpoint(), max_workers=max_workers)
    return Path(folder)


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the Hub lists as the `oid` of a non-LFS file)."""
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, info: HubFileInfo) -> Optional[str]:
    """Why a downloaded file is not the Hub's (size, then LFS sha256 or git blob id), or None when it is."""
    from lmm.prepare.urls import file_digest

    actual = path.stat().st_size
    if info.size is not None and actual != info.size:
        return f"has {actual} bytes, the Hub lists {info.size}"
    if info.sha256:
        digest = file_digest(path, "sha256")
        if digest != info.sha256:
            return f"sha256 {digest} does not match the Hub's {info.sha256}"
    elif info.blob_id:
        digest = git_blob_sha1(path)
        if digest != info.blob_id:
            return f"git blob id {digest} does not match the Hub's {info.blob_id}"
    return None
