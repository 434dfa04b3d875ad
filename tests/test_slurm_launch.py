"""What the SLURM launcher submits: each job's own preset, --requeue, no duplicate of a queued job,
failures that fail, and dry runs that show the jobs (and fail on a predicted OOM).

The tests marked `slurm` need the local cluster (scripts/slurm/start.sh); the dry runs need nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmm.config import compose
from lmm.launch.identity import run_dir, stage1_dir
from lmm.launch.jobs import read_jobs
from lmm.launch.resources import job_resources
from lmm.launch.rundir import read_failure
from lmm.records import read_record
from lmm.sweep import run_states

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}

# Two presets of the local cluster that differ in every resource a job asks for.
PRESETS = {
    "slurm_small": {"timeout_min": 31, "mem_gb_per_node": 3, "cpus_per_task": 1},
    "slurm_big": {"timeout_min": 47, "mem_gb_per_node": 5, "cpus_per_task": 2},
}


def _train(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmm.train", *args, f"paths.root={root}"], cwd=root, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _conf_dir(tmp_path: Path) -> Path:
    """Two cluster presets and two experiments (tiny_s on one preset, tiny_m on the other)."""
    conf = tmp_path / "conf"
    (conf / "cluster").mkdir(parents=True)
    (conf / "experiment").mkdir()
    for name, values in PRESETS.items():
        body = "\n".join(f"{k}: {v}" for k, v in values.items())
        preset = f"defaults:\n  - localhost_slurm\n  - _self_\nname: {name}\n{body}\n"
        (conf / "cluster" / f"{name}.yaml").write_text(preset)
    for experiment, (model, preset) in {"small": ("tiny_s", "slurm_small"), "big": ("tiny_m", "slurm_big")}.items():
        (conf / "experiment" / f"{experiment}.yaml").write_text(textwrap.dedent(f"""\
            # @package _global_
            defaults:
              - override /model: {model}
              - override /cluster: {preset}
            """))
    return conf


def _scripts(folder: Path) -> list[str]:
    return [Path(j["stderr"]).parent.joinpath(f"{j['job_id']}_submission.sh").read_text() for j in read_jobs(folder)]


def _squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30, check=True)
    return set(out.stdout.split())


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_each_job_carries_its_own_preset_and_a_queued_run_is_never_submitted_twice(tmp_path):
    conf = _conf_dir(tmp_path)
    # Held jobs stay pending (reason JobHeldUser) for as long as the test needs.
    args = ["-m", "--config-dir", str(conf), "experiment=small,big", "debug=fast", "hydra/launcher=slurm",
            "hydra.launcher.wait=false", "+hydra.launcher.additional_parameters.hold=true"]
    before = _squeue_ids()
    out = _train(tmp_path, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    new_jobs = _squeue_ids() - before
    try:
        assert len(new_jobs) == 4  # a stage-1 job and a training job per experiment
        for experiment, preset in (("small", "slurm_small"), ("big", "slurm_big")):
            model = "tiny_s" if experiment == "small" else "tiny_m"
            cfg = compose([f"paths.root={tmp_path}", "debug=fast", f"model={model}"])
            values = PRESETS[preset]
            folder = run_dir(cfg)
            scripts = _scripts(folder) + _scripts(stage1_dir(cfg))
            assert len(scripts) == 2
            for script in scripts:
                assert f"#SBATCH --time={values['timeout_min']}\n" in script
                assert f"#SBATCH --mem={values['mem_gb_per_node']}GB\n" in script
                assert f"#SBATCH --cpus-per-task={values['cpus_per_task']}\n" in script
                assert "#SBATCH --requeue\n" in script and "#SBATCH --partition=lmm\n" in script
            train = [j for j in read_jobs(folder) if j["kind"] == "train"]
            assert len(train) == 1 and train[0]["dependency"].startswith("afterok:")

        # Submitted again while everything is pending: nothing new is queued, the log says why.
        again = _train(tmp_path, *args)
        assert again.returncode == 0, again.stderr[-3000:]
        log = again.stdout + again.stderr
        assert "0 job(s) submitted" in log and log.count("(PENDING: JobHeldUser), not resubmitted") == 2, log[-3000:]
        assert _squeue_ids() - before == new_jobs
        states = {s.run_id.split("-")[0]: s for s in run_states(tmp_path / "runs" / "default")}
        assert {s.state for s in states.values()} == {"pending"}
        assert all("(Dependency)" in s.detail or "JobHeldUser" in s.detail for s in states.values()), states
    finally:
        subprocess.run(["scancel", *new_jobs], timeout=30, check=False)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_run_that_raises_fails_its_job_with_the_traceback_in_the_log_its_note_names(tmp_path):
    # A LoRA target that matches no module: PEFT raises when stage 2 builds its model.
    overrides = ["debug=fast", "tuning=lora", "tuning.rank=8", "tuning.target_modules=no_such_module",
                 "cluster=localhost_slurm"]
    out = _train(tmp_path, "-m", "hydra/launcher=slurm", *overrides)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "1 job(s) failed" in log, log[-3000:]
    folder = run_dir(compose([f"paths.root={tmp_path}", *overrides]))
    job = [j for j in read_jobs(folder) if j["kind"] == "train"][-1]
    deadline = time.time() + 60  # the result file comes back before the job's process has exited
    while True:
        state, code = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job["job_id"], "-o", "State,ExitCode"],
                                     capture_output=True, text=True, timeout=30, check=True).stdout.split("|")
        if state not in ("RUNNING", "COMPLETING") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert state == "FAILED" and code.strip() != "0:0", (state, code)
    note = read_failure(folder)
    assert note["log"] == job["stderr"] and note["slurm_job_id"] == job["job_id"]
    job_log = Path(note["log"]).read_text()
    assert "Traceback" in job_log and "no_such_module" in job_log


def _dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return _train(tmp_path, "-m", "hydra/launcher=slurm", "dry_run=true", *args, timeout=300)


def test_dry_run_shows_each_job_its_request_and_dependency_and_the_qlora_65b_fits(tmp_path):
    out = _dry_run(tmp_path, "experiment=table4/65b_lora64", "tuning=qlora", "deepspeed=zero2")
    text = out.stdout
    assert out.returncode == 0, out.stderr[-3000:]
    # No LMM_VICUNA_65B: the LLM is trained first, by its own stage-0 job (4 nodes, ZeRO-3).
    assert "1 grid point(s) → 4 job(s): 1 stage0, 1 stage1, 1 train, 1 eval" in text
    stage0, stage1, train, evaluation = ("[" + part for part in text.split("\n[")[1:5])
    assert stage0.startswith("[stage0] s0-65b-sharegpt-") and "--nodes=4 --ntasks-per-node=8" in stage0
    # Stage 1 on 2 nodes: about 20 h, within one 24-h allocation (41 h on one node).
    assert stage1.startswith("[stage1] s1-65b") and "--nodes=2 --ntasks-per-node=8" in stage1
    assert "time:" not in stage1
    assert f"after: stage0 job of {stage0.split()[1]}" in stage1
    # Stage 1 under ZeRO-2 would hold the bf16 65B LLM on every GPU: it gets ZeRO-3 on its own.
    assert "[pretrain] trainable: projector (CLIP and LLM frozen); DeepSpeed ZeRO-3" in stage1
    assert "--time=1440" in train and "--mem=900GB" in train and "--requeue" in train
    assert "--nodes=2 --ntasks-per-node=8" in train and "after: stage1 job of s1-65b" in train
    assert ("[finetune] trainable: projector + LoRA adapters on a 4-bit NF4 LLM base (CLIP frozen); "
            "DeepSpeed ZeRO-2") in train
    assert "[pretrain]" not in train  # the training job trains stage 2 only
    assert evaluation.startswith("[eval]") and "--nodes=1 --ntasks-per-node=1" in evaluation
    assert "after: train job of 65b" in evaluation and "evaluates: llava_bench (beams 1)" in evaluation
    assert not list(tmp_path.rglob("jobs.jsonl"))  # nothing submitted


def test_dry_run_fails_on_a_predicted_oom(tmp_path):
    out = _dry_run(tmp_path, "experiment=table4/65b_lora64", "deepspeed=zero2", "tuning.nodes=1")
    assert out.returncode != 0
    assert "[train] 65b-clip_l14_336-linear-lora64" in out.stdout  # the jobs are printed first
    assert "Dry run: predicted out of memory" in out.stderr and "[train] 65b" in out.stderr


def test_grid_points_that_do_not_compose_are_all_listed_and_nothing_is_submitted(tmp_path):
    out = _dry_run(tmp_path, "model=tiny_s,nope", "tuning.rank=8,x")
    assert out.returncode != 0 and "[train]" not in out.stdout
    assert out.stderr.startswith(
        "Dry run: these grid points could not be submitted; invalid grid points:\n"
        f"#1 dry_run=True model=tiny_s tuning.rank=x paths.root={tmp_path}:\n"
        "Error merging override tuning.rank=x\nValue 'x' of type 'str' could not be converted to Integer\n"), \
        out.stderr[-3000:]
    for num, rank in ((2, 8), (3, "x")):
        assert (f"#{num} dry_run=True model=nope tuning.rank={rank} paths.root={tmp_path}:\n"
                "In 'train': Could not find 'model/nope'\n\nAvailable options in 'model':\n\t13b\n") in out.stderr
    assert "Config search path" not in out.stderr and not list(tmp_path.rglob("jobs.jsonl"))


def test_the_sweeper_leaves_composing_each_grid_point_to_lmms_launchers():
    """Hydra's sweeper composes every point once before launching it; lmm's launchers compose each one themselves."""
    from hydra_plugins.lmm_launcher.launcher import LmmLocalLauncher, LmmSlurmLauncher, LmmSweeper

    composed = []

    class Loader:
        def load_sweep_config(self, master_config, sweep_overrides):
            composed.append(sweep_overrides)

    batch = [["model=tiny_s"], ["model=tiny_m"]]
    for launcher, times in ((LmmLocalLauncher, 0), (LmmSlurmLauncher, 0), (object, 2)):
        sweeper = LmmSweeper(max_batch_size=None)
        sweeper.hydra_context, sweeper.config = type("Context", (), {"config_loader": Loader()})(), {}
        sweeper.launcher = object.__new__(launcher)
        composed.clear()
        sweeper.validate_batch_is_legal(batch)
        assert composed == batch[:times], launcher  # Hydra's own launcher: checked first, as before


def test_time_limit_notes_and_problems():
    from lmm.plan.timelimit import allocations, time_note, time_problem

    assert [allocations(h, 60) for h in (0.01, 1.0, 1.01, 40.9)] == [1, 1, 2, 41]
    assert time_note(0.9, 1, 60, 20) is None and time_note(None, 1, 60, 20) is None
    assert time_note(40.9, 1, 1440, 20) == ("time: 40.9 h predicted on 1 node(s), over the 1440-min limit: 2 "
                                             "allocations (1 requeue(s) of the 20 allowed, each resuming from its "
                                             "last checkpoint)")
    assert time_problem("stage1", "s1", 21.0, 1, 60, 20) is None  # 21 allocations: 20 requeues, all allowed
    assert time_problem("stage1", "s1", 21.01, 1, 60, 20) == (
        "[stage1] s1 is predicted to take 21.0 h on 1 node(s): 22 allocations of 60 min, but "
        "hydra.launcher.max_num_timeout=20 allows 21, and it would be abandoned unfinished. Fixes: more nodes "
        "(pretrain.nodes=2), cluster.timeout_min=61, hydra.launcher.max_num_timeout=21, or plan.force=true.")
    assert "(tuning.nodes=3)" in time_problem("train", "r", 50.0, 1, 60, 20)


def test_dry_run_refuses_a_job_that_would_outlast_its_requeues_and_names_the_fixes(tmp_path):
    """The 65B stage 1 takes about 41 h on one node: 41 one-hour allocations, 20 requeues allowed."""
    args = ["model=65b", "tuning=lora", "cluster.timeout_min=60", "pretrain.nodes=1"]
    out = _dry_run(tmp_path, *args)
    assert out.returncode == 2, out.stderr[-3000:]
    stage0, stage1, train = ("[" + part for part in out.stdout.split("\n[")[1:4])
    assert "time: 14.8 h predicted on 4 node(s), over the 60-min limit: 15 allocations (14 requeue(s)" in stage0
    assert "time: 40.9 h predicted on 1 node(s), over the 60-min limit: 41 allocations (40 requeue(s)" in stage1
    assert "time: 4.8 h predicted on 2 node(s)" in train
    assert out.stderr == (
        "Dry run: these jobs would not end within their time limits (the real submit refuses them):\n"
        f"  {stage1.split()[0]} {stage1.split()[1]} is predicted to take 40.9 h on 1 node(s): 41 allocations of 60 "
        "min, but hydra.launcher.max_num_timeout=20 allows 21, and it would be abandoned unfinished. Fixes: more "
        "nodes (pretrain.nodes=2), cluster.timeout_min=117, hydra.launcher.max_num_timeout=40, or "
        "plan.force=true.\n")
    assert _dry_run(tmp_path, *args[:-1]).returncode == 0  # the 65B preset's 2 nodes: 21 allocations, 20 requeues


@pytest.mark.parametrize("bad, message", [
    ("hydra.launcher.max_num_timeout=-1",
     "hydra.launcher.max_num_timeout = -1 must be >= 0 (the requeues a timed-out job is allowed).\n"),
    ("hydra.launcher.signal_delay_s=0", "hydra.launcher.signal_delay_s = 0 must be >= 1 (seconds from SLURM's warning "
                                        "to the time limit, to finish a step and save).\n"),
    ("cluster.timeout_min=2", "Dry run: these jobs would not end within their time limits (the real submit refuses "
                              "them):\n  [stage1] s1-tiny_s-"),
])
def test_bad_time_limit_settings_are_refused_before_anything_is_submitted(tmp_path, bad, message):
    out = _dry_run(tmp_path, bad, "plan.force=true")  # the warning's delay is certain, not predicted: not forced
    assert out.returncode == 2 and out.stderr.startswith(message), out.stderr[-3000:]
    if bad.startswith("cluster"):
        assert out.stderr.count("hydra.launcher.signal_delay_s=120 is not under its 2-min time limit: SLURM would "
                                "warn every allocation as it starts, and the job would requeue without training. "
                                "Fixes: a smaller hydra.launcher.signal_delay_s, or a longer cluster.timeout_min.") == 2
    assert not list(tmp_path.rglob("jobs.jsonl"))


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_job_that_would_outlast_its_requeues_is_not_submitted(tmp_path):
    # A tiny run made slow on paper: one achieved GFLOP/s per "GPU" stretches it over many one-minute allocations.
    overrides = ["debug=fast", "cluster=localhost_slurm", "cluster.timeout_min=1", "plan.achieved_tflops_per_gpu=1e-6",
                 "hydra.launcher.max_num_timeout=2", "hydra.launcher.signal_delay_s=30"]
    out = _train(tmp_path, "-m", "hydra/launcher=slurm", *overrides)
    assert out.returncode == 2 and out.stderr.startswith("Not submitting; invalid grid points:\n[stage1] s1-tiny_s"), \
        out.stderr[-3000:]
    assert "hydra.launcher.max_num_timeout=2 allows 3, and it would be abandoned unfinished" in out.stderr
    # Only Hydra's record of the command: no job, no run folder, no sweep link.
    assert [p.name for p in (tmp_path / "runs").rglob("*") if p.is_file()] == ["multirun.yaml"]


def test_job_resources_come_from_the_jobs_own_preset(monkeypatch):
    monkeypatch.setenv("LMM_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("LMM_SLURM_ACCOUNT", "proj")
    full = compose(["experiment=table4/65b_full"])
    r = job_resources(full, "train")
    assert (r.nodes, r.tasks_per_node, r.gpus_per_node, r.cpus_per_task, r.mem_gb, r.time_min) == \
        (4, 8, 8, 10, 900, 1440)
    assert r.flags() == ("--nodes=4 --ntasks-per-node=8 --cpus-per-task=10 --time=1440 --requeue --gpus-per-node=8 "
                         "--mem=900GB --partition=gpu --account=proj")
    stage1 = job_resources(compose(["experiment=table4/65b_full", "stage=pretrain"]), "stage1")
    assert (stage1.nodes, stage1.tasks_per_node) == (2, 8)  # the 65B preset's stage 1: one 24-h allocation
    assert job_resources(compose(["experiment=table4/33b_full", "stage=pretrain"]), "stage1").nodes == 1
    evaluation = job_resources(full, "eval")
    e = evaluation
    assert (e.nodes, e.tasks_per_node, e.gpus_per_node, e.cpus_per_task) == (1, 1, 8, 80)
    gres = job_resources(compose(["experiment=table4/65b_full", "cluster.gres=gpu:a100:8"]), "train")
    assert "--gres=gpu:a100:8" in gres.flags() and "--gpus-per-node" not in gres.flags()
    # The local test cluster never reads the real cluster's variable.
    assert job_resources(compose(["cluster=localhost_slurm"]), "train").partition == "lmm"


def test_paper_sweep_trains_each_configuration_once(tmp_path):
    """39 experiment files, 20 distinct trainings (35 when each table trained its own)."""
    out = subprocess.run([sys.executable, "-m", "lmm.sweep", "run", "paper", "hydra/launcher=slurm", "dry_run=true",
                          f"paths.root={tmp_path}"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    # One stage 0 (the 65B LLM, trained from LLaMA-65B without LMM_VICUNA_65B) for every 65B run of every table.
    assert lines[0] == "39 grid point(s) → 51 job(s): 1 stage0, 10 stage1, 20 train, 20 eval"
    assert next(line for line in lines if line.startswith("stage-0 trainings:")).startswith("stage-0 trainings: 1,")
    stage2 = next(line for line in lines if line.startswith("stage-2 trainings:"))
    count, hours = stage2.split(": ")[1].split(", GPU-hours per node")[0], float(stage2.rsplit(": ", 1)[1])
    assert count == "20" and hours == pytest.approx(147.7, abs=0.1)
    assert sum("evaluates:" in line for line in lines) == 20  # each run evaluated once, all its benchmarks


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_evaluation_is_a_job_after_training_and_new_benchmarks_are_added_to_the_trained_run(tmp_path):
    base = ["-m", "hydra/launcher=slurm", "cluster=localhost_slurm", "debug=fast", "eval=synthetic"]
    out = _train(tmp_path, *base)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = run_dir(compose([f"paths.root={tmp_path}", "cluster=localhost_slurm", "debug=fast", "eval=synthetic"]))
    jobs = read_jobs(folder)
    assert [j["kind"] for j in jobs] == ["train", "eval"]
    assert jobs[1]["dependency"] == f"afterok:{jobs[0]['job_id']}"
    assert "--ntasks-per-node=1" in jobs[1]["sbatch"]
    trained = read_record(folder)
    assert list(trained["eval"]["synthetic"]) == ["beam1"]

    # Beam 2 asked for later (as Table 1 asks beam 5 of Table 4's run): one evaluation job, no training.
    out = _train(tmp_path, *base, "eval.num_beams=1,2")
    log = out.stdout + out.stderr
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 job(s) submitted (0 stage0, 0 stage1, 0 train, 1 eval)" in log
    record = read_record(folder)
    assert sorted(record["eval"]["synthetic"]) == ["beam1", "beam2"]
    assert record["eval"]["synthetic"]["beam1"] == trained["eval"]["synthetic"]["beam1"]  # scored once
    assert record["finetune"]["wall_time_s"] == trained["finetune"]["wall_time_s"]
