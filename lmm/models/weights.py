"""Are the pretrained weights a run needs on disk, or fetchable? Checked once, in seconds, before anything else.

A model that is neither in a local folder nor in the Hugging Face cache is probed on the Hub once, with a
short timeout and no retries; when it is not there (or HF_HUB_OFFLINE=1), one line names the model, where
it was looked for, and the command that fetches it, instead of minutes of retries and a traceback.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig

from lmm.launch.identity import stage0_active, stage0_dir
from lmm.models.assemble import MARKER, MissingCheckpoint, assembled_dir, llm_source
from lmm.records import is_done

PROBE_TIMEOUT_S = 5.0


class MissingWeights(FileNotFoundError):
    """Pretrained weights the run needs are not here and cannot be fetched now; the message says how to get them."""


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _reachable(repo_id: str) -> str | None:
    """None when the Hub answers for the repo; else why not (one probe, no retry)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    url = f"{constants.ENDPOINT}/{repo_id}/resolve/main/config.json"
    request = urllib.request.Request(url, method="HEAD", headers=build_hf_headers())
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S).close()  # noqa: S310 - the Hub's https URL
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return f"the Hub refuses it (HTTP {error.code}: gated or private; accept its licence and set HF_TOKEN)"
        if error.code == 404:
            return f"no such repository on {constants.ENDPOINT}"
        return None if error.code < 500 else f"the Hub answered HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return f"{constants.ENDPOINT} is unreachable ({getattr(error, 'reason', error)})"
    return None


def missing_weights(cfg: DictConfig) -> list[str]:
    """One line per pretrained checkpoint the run needs that is neither on disk nor fetchable right now."""
    if (assembled_dir(cfg) / MARKER).exists():
        return []  # assembled before: nothing is read from the Hub again
    try:
        llm = (f"model={cfg.model.name}", llm_source(cfg))
    except MissingCheckpoint as error:
        return [str(error)]
    if stage0_active(cfg) and not is_done(stage0_dir(cfg)):
        llm = (f"model.base of model={cfg.model.name} (stage 0 trains from it)", str(cfg.model.base))
    sources = [llm, (f"vision={cfg.vision.name}", cfg.vision.path)]
    fetch = f"python -m lmm.prepare models {cfg.model.name}"
    out = []
    for label, source in sources:
        if not source or Path(source).expanduser().is_dir():
            continue
        if source.startswith(("/", ".", "~")):
            out.append(f"{label}: checkpoint folder {source} does not exist")
        elif not _cached(source):
            why = "HF_HUB_OFFLINE=1" if _offline() else _reachable(source)
            if why:
                out.append(f"{label}: {source} is not in the Hugging Face cache and cannot be fetched now ({why}); "
                           f"fetch it with: {fetch}")
    return out


def check_weights(cfg: DictConfig) -> None:
    """Raise MissingWeights naming every checkpoint that is missing."""
    missing = missing_weights(cfg)
    if missing:
        raise MissingWeights("\n".join(missing))
