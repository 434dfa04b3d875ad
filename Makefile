# Set-up, demo, tests and benchmarks. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV ?= .venv
# torch is installed first and pinned: a local CPU build here. On a CUDA cluster, e.g.
#   make setup TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu121"
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: the CPU toy study (sweeps/toy.yaml: 3 tiny sizes × 2 tower resolutions, full fine-tuning,
# plus text-only mixing and LoRA r8 at 48 px: 12 two-stage runs on the synthetic benchmark, evaluated on
# 600 image and 600 text-only questions), then its Table 3/4/5-style tables with 95 % intervals, the
# findings table (the paper's findings, each an effect with its interval and a verdict), cost and plots.
# Measured from a fresh clone on an idle 2-core machine: 13 min 25 s, set-up included; a second `make demo`
# skips every finished run and prints the same tables in 23 s.
# One torch thread per run and one run per core at once (the local submitit launcher: each job in its own
# process, started when its stage 1 is done, each run's evaluation in its training's process;
# hydra.launcher.max_parallel, default the core count): the tiny models gain nothing from a second thread,
# and on a busy 2-core machine two threads contend (measured: a tiny MLP's forward+backward 10× slower with
# 2 threads than with 1).
DEMO_RUNS ?= runs
DEMO_THREADS ?= 1
demo: setup
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) -m lmm.sweep run toy paths.root=. hydra/launcher=submitit
	$(PY) -m analysis.tables --runs $(DEMO_RUNS) --sweep toy --benchmark synthetic --table 3 --format md
	$(PY) -m analysis.tables --runs $(DEMO_RUNS) --sweep toy --benchmark synthetic --table 4 --format md
	$(PY) -m analysis.tables --runs $(DEMO_RUNS) --sweep toy --benchmark synthetic --table 5 --format md
	$(PY) -m analysis.tables --runs $(DEMO_RUNS) --sweep toy --table findings --format md
	$(PY) -m analysis.tables --runs $(DEMO_RUNS) --sweep toy --table cost --format md
	$(PY) -m analysis.plots --runs $(DEMO_RUNS) --sweep toy --benchmark synthetic --out $(DEMO_RUNS)/toy/plots

# The whole test suite (slow end-to-end and SLURM tests included): brings the local SLURM cluster up
# (as root on Debian; it says so where it cannot) and stops it afterwards if it started it.
# TEST_WORKERS pytest-xdist workers (0: one process), each test process on one thread (tests/conftest.py).
# `--dist loadgroup` keeps the `slurm` tests on one worker (tests/conftest.py groups them), one at a time on
# the shared cluster (pytest is pinned below 9 for it: pyproject.toml).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=20
test: setup
	scripts/slurm/with_cluster.sh $(PYTEST)

# The quick developer loop: everything not marked slow.
test-fast: setup
	$(PYTEST) -m "not slow"

bench: setup
	$(PY) -m bench.throughput

lint: setup
	$(PY) -m ruff check lmm analysis tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
