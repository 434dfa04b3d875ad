"""Grids through the real launchers: submitit's local executor always, the local SLURM cluster when it is up.

Local executor: the same grid with evaluation, each run's evaluation in its training's process.

SLURM: a 2 × 2 tiny grid runs as 2 stage-1 jobs and 4 training jobs that wait for them (afterok),
completes with four run records, and re-submitting it runs nothing (jobs of 2 tasks and of 2 nodes:
tests/test_multinode.py); a job interrupted by a time-out signal saves at the next step, is requeued, redoes no step
and ends with the losses of an uninterrupted run, its record summing the attempts' wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmm.config import compose
from lmm.launch.identity import run_dir, stage1_dir
from lmm.launch.jobs import ACTIVE_STATES, latest_job, read_jobs, state_name
from lmm.launch.rundir import read_attempts
from lmm.records import is_done, read_record
from lmm.sweep import run_states

REPO = Path(__file__).resolve().parents[1]
GRID = ["model=tiny_s,tiny_m", "tuning=full,lora"]


def _multirun(root: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lmm.sweep", "run", "tiny_grid", f"paths.root={root}", *overrides]
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def _ended(job) -> bool:
    """Whether SLURM has ended the job. Not submitit's `done()`: it takes a state outside its short list of
    incomplete ones (CONFIGURING while a multi-node job's nodes get ready, REQUEUE_HOLD, …) for the end, which
    failed this file's requeue test in CI while its job was starting."""
    state = state_name(job.watcher.get_state(job.job_id, mode="force"))
    return state not in ACTIVE_STATES | {"UNKNOWN", "READY", "PREEMPTED"}


def _grid_dirs(root: Path, *extra: str) -> list[Path]:
    return [run_dir(compose([f"paths.root={root}", "debug=fast", "tuning.rank=8", "sweep=tiny_grid",
                             f"model={m}", f"tuning={t}", *extra]))
            for m in ("tiny_s", "tiny_m") for t in ("full", "lora")]


def _check_grid(root: Path, launcher_args: list[str], extra: list[str]) -> str:
    """Runs the grid, checks it, runs it again (nothing to do); returns the first run's log."""
    out = _multirun(root, *launcher_args, *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    folders = _grid_dirs(root, *extra)
    assert all(is_done(f) for f in folders)
    records = [read_record(f) for f in folders]
    assert len({r["run_id"] for r in records}) == 4
    assert {s.state for s in run_states(root / "runs" / "tiny_grid")} == {"done"}

    # Each tiny size's stage 1 was a job of its own, trained once, that both its runs waited for.
    for folder in folders:
        stage1 = stage1_dir(compose([f"paths.root={root}", "debug=fast", *extra,
                                     f"model={folder.name.split('-')[0]}"]))
        assert [j["kind"] for j in read_jobs(stage1)] == ["stage1"]
        assert len(read_attempts(stage1)) == 1
        train = latest_job(folder, "train")
        assert train["dependency"] == (f"afterok:{read_jobs(stage1)[0]['job_id']}"
                                       if "slurm" in " ".join(launcher_args) else None)
        assert Path(train["stderr"]).is_relative_to(folder)  # the job's log lives in the run folder

    again = _multirun(root, *launcher_args, *extra)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr  # Hydra logs to stdout
    assert log.count(": trained (done)") == 4 and "0 job(s) submitted" in log
    assert [read_record(f)["finetune"]["wall_time_s"] for f in folders] == \
        [r["finetune"]["wall_time_s"] for r in records]  # nothing was trained again
    return out.stdout + out.stderr


@pytest.mark.slow
def test_grid_through_submitit_local_executor(tmp_path):
    log = _check_grid(tmp_path, ["hydra/launcher=submitit"], ["eval=synthetic"])
    # Each evaluation ran in its training's process, after it: 2 stage-1 and 4 training processes in all.
    assert "6 job(s) submitted (0 stage0, 2 stage1, 4 train, 0 eval); 4 evaluation(s) in their training job's " \
           "process" in log, log[-3000:]
    for folder in _grid_dirs(tmp_path, "eval=synthetic"):
        [train] = read_jobs(folder)
        tasks = [[o for o in overrides if o.startswith("task=")] for overrides in train["overrides"]]
        assert train["kind"] == "train" and tasks == [["task=train"], ["task=eval"]]
        assert read_record(folder)["eval"]["synthetic"]["beam1"]["count"] == 16


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_grid_on_slurm_then_resubmit_runs_nothing(tmp_path):
    _check_grid(tmp_path, ["hydra/launcher=slurm", "cluster=localhost_slurm"], ["cluster=localhost_slurm"])
    # No training job started before the stage-1 job it depends on had ended: none waited on a lock.
    jobs = [j for f in _grid_dirs(tmp_path, "cluster=localhost_slurm") for j in read_jobs(f)]
    jobs += [j for f in {stage1_dir(compose([f"paths.root={tmp_path}", "debug=fast", f"model={m}"]))
                         for m in ("tiny_s", "tiny_m")} for j in read_jobs(f)]
    times = _sacct_times([j["job_id"] for j in jobs])
    for job in jobs:
        if job["kind"] == "train":
            stage1_job = job["dependency"].split(":")[1]
            assert times[job["job_id"]][0] >= times[stage1_job][1], (job, times)


def _sacct_times(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,Start,End"],
                         capture_output=True, text=True, timeout=30, check=True)
    return {job: (start, end) for job, start, end in (line.split("|") for line in out.stdout.splitlines())}


# save_steps far beyond what one attempt trains: only the pre-emption checkpoint can save the work.
REQUEUE = ["model=tiny_s", "tuning=full", "trainer.max_steps=60", "trainer.save_steps=1000",
           "trainer.logging_steps=1", "data.synthetic_num_train=128", "pretrain_data.synthetic_num_train=96",
           "cluster=localhost_slurm"]


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize("shape", [["tuning.nodes=2", "deepspeed=zero2"]], ids=["2 nodes ZeRO-2"])
def test_timed_out_job_saves_at_the_next_step_is_requeued_and_resumes_with_the_same_losses(tmp_path, shape):
    # One shape keeps the suite short: 2 nodes × 1 task with DeepSpeed covers the one-node path's steps too
    # (signal, agreed stop, checkpoint, requeue, resume); `[]` adds the plain one-node case.
    import submitit

    overrides = [*REQUEUE, *shape]
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    straight.mkdir(), requeued.mkdir()
    launch = [sys.executable, "-m", "lmm.train", "-m", "hydra/launcher=slurm", "cluster.timeout_min=5"]
    out = subprocess.run([*launch, f"paths.root={straight}", *overrides], cwd=straight, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    # Submit without waiting; a time limit of ≤ 10 min makes submitit treat the signal as a time-out.
    out = subprocess.run([*launch, "hydra.launcher.wait=false", f"paths.root={requeued}", *overrides],
                         cwd=requeued, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = run_dir(compose([f"paths.root={requeued}", *overrides]))
    entry = latest_job(folder, "train")
    assert "--requeue" in Path(entry["stderr"]).parent.joinpath(f"{entry['job_id']}_submission.sh").read_text()
    job = submitit.SlurmJob(folder=Path(entry["stderr"]).parent, job_id=entry["job_id"])

    deadline = time.time() + 300
    while not (read_attempts(folder) and (read_attempts(folder)[-1]["last_step"] or 0) >= 3):
        assert time.time() < deadline and not _ended(job), "training never got to step 3"
        time.sleep(0.1)
    job._interrupt(timeout=True)  # what SLURM's time-limit signal does
    started = time.time()
    while read_attempts(folder)[0]["outcome"] != "preempted":
        assert time.time() < started + 120, "no checkpoint after the signal"
        time.sleep(0.05)
    # One checkpoint set, written once for all ranks (rank 0 of the first node writes the weights).
    saved = sorted(p.name for p in (folder / "checkpoints").glob("checkpoint-*"))
    assert saved == [f"checkpoint-{read_attempts(folder)[0]['last_step']}"], saved
    if shape:
        shards = sorted(p.name for p in (folder / "checkpoints" / saved[0]).rglob("*optim_states.pt"))
        assert len(shards) == 2 and "rank_0" in shards[0] and "rank_1" in shards[1], shards
    job.result()  # waits through the requeue; raises if the job failed
    record = read_record(folder)
    finetune = record["finetune"]
    expected = read_record(run_dir(compose([f"paths.root={straight}", *overrides])))["finetune"]
    first, second = read_attempts(folder)
    assert first["outcome"] == "preempted" and second["outcome"] == "finished"
    # The checkpoint was written at the step the signal interrupted: the resumed attempt redid no step.
    assert finetune["resumed_from"] == f"checkpoint-{first['last_step']}"
    assert second["resumed_at_step"] == first["last_step"] and 3 <= first["last_step"] < 60
    assert [e["step"] for e in finetune["losses"]] == [e["step"] for e in expected["losses"]]
    for a, b in zip(finetune["losses"], expected["losses"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # The record counts every attempt: wall time, GPU-hours and tokens; and the nodes it ran on.
    assert finetune["attempts"] == 2 and record["stages"]["finetune"]["attempts"] == 2
    assert finetune["wall_time_s"] == pytest.approx(first["wall_time_s"] + second["wall_time_s"], abs=0.02)
    assert finetune["tokens"] == expected["tokens"]
    assert record["resources"]["nodes"] == (2 if shape else 1) and finetune["world_size"] == (2 if shape else 1)
    print(f"requeue + resume took {time.time() - started:.1f} s; attempt 1 stopped at step {first['last_step']}")


def test_slurm_launcher_refuses_a_run_predicted_to_run_out_of_memory(tmp_path):
    """65B LoRA under ZeRO-2 holds the bf16 LLM on every GPU and does not fit (the paper used ZeRO-3 on 2
    nodes); nothing is submitted, not even the point that fits."""
    cmd = [sys.executable, "-m", "lmm.train", "-m", "hydra/launcher=slurm", f"paths.root={tmp_path}",
           "experiment=table4/65b_lora64", "deepspeed=zero2,zero3"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = out.stdout + out.stderr
    assert out.returncode == 2 and "Not submitting" in log and "plan.force" in log and "Traceback" not in log
    zero2, zero3 = log.split("Not submitting")[1].split("\n#1 ")
    assert "deepspeed=zero2" in zero2 and "predicted to run out of GPU memory" in zero2
    assert "predicted to run out" not in zero3  # ZeRO-3 fits; it is refused only for its missing data
    assert not list(tmp_path.rglob("jobs.jsonl"))


@pytest.mark.slow
def test_a_failed_run_is_reported_and_does_not_stop_the_others(tmp_path):
    # The second point's LoRA targets match no module: PEFT raises when its stage 2 builds the model.
    cmd = [sys.executable, "-m", "lmm.train", "-m", "hydra/launcher=submitit", f"paths.root={tmp_path}",
           "debug=fast", "tuning=lora", "tuning.rank=8",
           "tuning.target_modules=.*language_model.*q_proj,no_such_module"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "1 job(s) failed" in log and "log: " in log
    assert "FAILED: peft.utils.error.NoMatchingPeftModuleError: Target modules no_such_module not found" in log
    states = {s.state: s for s in run_states(tmp_path / "runs" / "default")}
    assert set(states) == {"done", "failed"}
    assert "no_such_module" in states["failed"].detail or "Target modules" in states["failed"].detail
    status = subprocess.run([sys.executable, "-m", "lmm.sweep", "status", str(tmp_path / "runs" / "default")],
                            capture_output=True, text=True, timeout=60)
    assert "failed" in status.stdout and "1 done" in status.stdout


def test_a_submission_without_its_data_fails_before_any_job(tmp_path):
    cmd = [sys.executable, "-m", "lmm.train", "-m", "hydra/launcher=submitit", f"paths.root={tmp_path}",
           "debug=fast", "data=synthetic,llava_80k"]  # LLaVA-80K is not on this machine
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 2 and "Not submitting; invalid grid points" in log and " data=llava_80k:" in log
    assert "Traceback" not in log
    assert "llava_instruct_80k.json" in log and "#0" not in log.split("Not submitting")[1]
    assert not list(tmp_path.rglob("jobs.jsonl"))  # nothing was submitted, not even the valid point


class _FakeJob:
    """A job handle that is done `seconds` after it starts."""

    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def done(self) -> bool:
        return time.time() >= self.end


def test_the_local_launcher_starts_a_job_once_its_dependencies_end_within_max_parallel_processes():
    from types import SimpleNamespace

    from hydra_plugins.lmm_launcher.launcher import LmmLocalLauncher

    def spec(name: str, tasks: int, seconds: float, after=()):
        return SimpleNamespace(name=name, after=list(after), handle=None, seconds=seconds,
                               resources=SimpleNamespace(nodes=1, tasks_per_node=tasks), cfg=SimpleNamespace(sweep="s"))

    stage1_a = spec("stage1_a", 1, 0.6)
    train_a = spec("train_a", 1, 0.2, after=[stage1_a])
    stage1_b = spec("stage1_b", 1, 0.2)
    wide = spec("wide", 2, 0.2)
    starts = []

    def submit(self, job, sweep):
        busy = sum(j.resources.tasks_per_node for j, _, _ in starts if not j.handle.done())
        starts.append((job, busy, time.time()))
        job.handle = _FakeJob(job.seconds)

    launcher = LmmLocalLauncher(max_parallel=2)
    launcher._submit = submit.__get__(launcher)
    launcher._submit_all([stage1_a, train_a, stage1_b, wide])
    # stage1_b does not queue behind train_a, which waits for stage1_a; the 2-task job waits for 2 free slots.
    assert [job.name for job, _, _ in starts] == ["stage1_a", "stage1_b", "train_a", "wide"]
    assert all(busy + job.resources.tasks_per_node <= 2 for job, busy, _ in starts)
    started = {job.name: at for job, _, at in starts}
    assert started["train_a"] >= stage1_a.handle.end and started["wide"] >= train_a.handle.end


def test_a_negative_max_parallel_is_refused_naming_the_field(tmp_path):
    cmd = [sys.executable, "-m", "lmm.train", "-m", "hydra/launcher=submitit", "hydra.launcher.max_parallel=-1",
           f"paths.root={tmp_path}", "debug=fast"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "hydra.launcher.max_parallel = -1 must be >= 0 (0: one process per CPU core)." in out.stderr
    assert not list(tmp_path.rglob("jobs.jsonl"))


def test_the_local_launcher_runs_an_evaluation_in_its_one_process_training_job():
    from types import SimpleNamespace

    from hydra_plugins.lmm_launcher.launcher import JobSpec, LmmLocalLauncher

    def spec(kind: str, run: str, tasks: int = 1, after=(), after_ids=()):
        return JobSpec(kind, run, Path(run), None, [(len(run), [f"task={kind}"])],
                       SimpleNamespace(nodes=1, tasks_per_node=tasks), list(after), list(after_ids))

    stage1 = spec("stage1", "s1")
    train, wide = spec("train", "a", after=[stage1]), spec("train", "bb", tasks=2, after=[stage1])
    evals = [spec("eval", "a", after=[train]), spec("eval", "bb", after=[wide]), spec("eval", "ccc", after_ids=["7"])]
    jobs = LmmLocalLauncher(max_parallel=2)._jobs([stage1, train, wide, *evals])
    # Folded: the one-process training's evaluation. Not: a 2-task training's (each rank would evaluate), and an
    # evaluation of a run trained by a job submitted before (nothing here to fold it into).
    assert [(j.kind, j.run_id) for j in jobs] == [("stage1", "s1"), ("train", "a"), ("train", "bb"), ("eval", "bb"),
                                                  ("eval", "ccc")]
    assert train.calls == [(1, ["task=train"]), (1, ["task=eval"])] and train.folded == [evals[0]]
    assert wide.calls == [(2, ["task=train"])] and not wide.folded


def test_a_folded_job_stops_at_its_failed_training():
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.lmm_launcher.launcher import RunGroup

    ran = []

    def launcher(overrides, *rest):
        ran.append(overrides)
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED if "task=train" in overrides else
                        JobStatus.COMPLETED)
        ret._return_value = RuntimeError("training failed") if "task=train" in overrides else "scored"
        return ret

    calls = [(["task=train"],), (["task=eval"],)]
    with pytest.raises(RuntimeError, match="training failed"):
        RunGroup(launcher, calls, stop_at_failure=True)()
    assert ran == [["task=train"]]  # the evaluation did not run on a failed training
    with pytest.raises(RuntimeError, match="training failed"):
        RunGroup(launcher, calls)()  # an eval job's beams: each call runs, the first failure is raised
    assert ran == [["task=train"], ["task=train"], ["task=eval"]]


def test_a_local_jobs_process_id_is_never_asked_of_slurm(tmp_path, monkeypatch):
    """A local executor's job id is a process id: SLURM does not know it (or knows another job by it), and asking
    a cluster whose controller is down costs ~10 s of retries. Only SLURM's jobs are looked up."""
    from lmm.launch import jobs
    from lmm.launch.jobs import record_job, slurm_job_ids

    asked = []
    monkeypatch.setattr(jobs, "_run", lambda cmd: asked.append(cmd) or "")
    monkeypatch.setattr(jobs.shutil, "which", lambda name: f"/usr/bin/{name}")
    local, slurm, older = tmp_path / "sweep" / "local", tmp_path / "sweep" / "slurm", tmp_path / "sweep" / "older"
    record_job(local, {"kind": "train", "job_id": "4242", "executor": "local"})
    record_job(slurm, {"kind": "train", "job_id": "17", "executor": "slurm"})
    record_job(older, {"kind": "train", "job_id": "18"})  # written before jobs named their executor
    assert slurm_job_ids([read_jobs(f)[-1] for f in (local, slurm, older)] + [None]) == ["17", "18"]

    states = {s.run_id: s.state for s in run_states(tmp_path / "sweep")}
    assert states == {"local": "submitted", "slurm": "submitted", "older": "submitted"}
    assert asked and all("4242" not in " ".join(cmd) for cmd in asked)
    assert any("17,18" in " ".join(cmd) for cmd in asked)


def test_collecting_waits_for_a_job_submitit_would_take_for_finished_while_slurm_still_sets_it_up(
        tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hydra_plugins.lmm_launcher import launcher

    states = iter(["CONFIGURING", "CONFIGURING", "REQUEUE_HOLD", "RUNNING", "SUSPENDED", "RUNNING"])
    result = tmp_path / "0_result.pkl"

    class Job:
        """submitit's view: any state outside its short list of unfinished ones is the end, so 'done' at once."""

        job_id = "41"
        paths = SimpleNamespace(result_pickle=result, stderr=tmp_path / "log.err")
        asked = 0

        @property
        def state(self):
            self.asked += 1
            state = next(states, "COMPLETED")
            if state == "COMPLETED":
                result.write_text("done")
            return state

        def done(self):
            return True

        def results(self):
            if not result.exists():
                raise RuntimeError("Job 41 (task: 0) with path 0_result.pkl has not produced any output")
            return [["trained"]]

    monkeypatch.setattr(launcher, "JOB_POLL_S", 0)
    job = Job()
    spec = SimpleNamespace(kind="train", run_id="run", handle=job, calls=[(0, ["task=train"])])
    returns = launcher.LmmSlurmLauncher()._collect([SimpleNamespace(num=0)], [spec])
    assert returns == ["trained"] and job.asked == 7  # 6 live states, then the one that ended it
