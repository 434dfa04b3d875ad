"""Hydra launchers over submitit that plan a grid as dependent jobs, each sized from its own config.

Before anything is submitted, every grid point is composed, validated and (on SLURM) checked against
its GPUs' memory; one invalid point stops the whole submission. The grid then becomes jobs:

- one **stage-0** job per distinct missing stage 0 (the LLM trained from `model.base` when `model.path` is null),
  sized by `stage0.nodes` with its own ZeRO stage, shared by every grid point on that LLM;
- one **stage-1** job per distinct missing stage 1 (sized for stage 1, its own ZeRO stage), `afterok` on its
  stage-0 job when there is one;
- one **train** job per distinct run (grid points with the same run id share it: a configuration is
  trained once however many sweeps or benchmarks use it), `--dependency=afterok:<stage-1 job>`, so no
  allocation waits on a lock;
- one **eval** job per run with benchmarks still to score (one process holding one node's GPUs),
  `afterok` on the training job, or alone for a run that is already trained.

Runs that are done, or whose job is still pending or running (from the run folder's `jobs.jsonl` and
squeue/sacct), are not submitted again. Job logs live in the run's folder (`jobs/<job id>/`). The local
executor (`hydra/launcher=submitit`) runs the same plan, waiting for a job's dependencies before
submitting it. `dry_run=true` prints every job's sbatch request and dependencies, and fails when a
grid point is predicted to run out of memory.
"""

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules, where
# dataclasses cannot resolve string annotations.

import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import HydraException
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lmm.layout import JOB_LOGS_DIR  # a leaf: imports nothing

# The rest of lmm is imported inside the methods below: Hydra's plugin scan imports this module in every
# app it starts, and the planner and run-folder modules pull in torch (measured: +2.6 s per start).

log = logging.getLogger(__name__)
JOB_LOGS = JOB_LOGS_DIR  # <run folder>/jobs/<job id>/: submitit's scripts, pickles and logs
JOB_KINDS = ("stage0", "stage1", "train", "eval")
JOB_POLL_S = 2.0  # how often a waiting launcher looks at a job's result file and state


@dataclass
class LmmSlurmConf:
    """`hydra/launcher=slurm`. Resources come from each job's `cluster` preset, not from here."""

    _target_: str = "hydra_plugins.lmm_launcher.launcher.LmmSlurmLauncher"
    # Block until every job ends (Hydra's default) or submit and return.
    wait: bool = True
    # Requeues allowed after time-outs/pre-emptions (each resumes from the run's latest checkpoint).
    max_num_timeout: int = 20
    # Seconds between SLURM's warning signal and the time limit: enough to finish a step and save.
    signal_delay_s: int = 120
    # Shell lines run before the job (e.g. `module load cuda`), extra srun arguments, extra sbatch options.
    setup: list = field(default_factory=list)
    srun_args: list = field(default_factory=list)
    additional_parameters: dict = field(default_factory=dict)


@dataclass
class LmmLocalConf:
    """`hydra/launcher=submitit`: each job in its own process(es), the SLURM path without SLURM."""

    _target_: str = "hydra_plugins.lmm_launcher.launcher.LmmLocalLauncher"
    wait: bool = True
    # Processes run at once (a job of n tasks counts n); 0: one per CPU core. More would only share the cores.
    max_parallel: int = 0


ConfigStore.instance().store(group="hydra/launcher", name="lmm_slurm", node=LmmSlurmConf, provider="lmm")
# Not named `submitit_local`: that is the plugin's own entry, which Hydra's plugin scan re-registers.
ConfigStore.instance().store(group="hydra/launcher", name="submitit", node=LmmLocalConf, provider="lmm")


@dataclass
class LmmSweeperConf(BasicSweeperConf):
    """`hydra/sweeper=lmm` (conf/train.yaml's default): Hydra's basic grid sweeper, see LmmSweeper."""

    _target_: str = "hydra_plugins.lmm_launcher.launcher.LmmSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="lmm", node=LmmSweeperConf, provider="lmm")


@dataclass
class GridPoint:
    """One grid point, composed and checked."""

    num: int
    overrides: list
    cfg: DictConfig
    run_id: str
    folder: Path

    @property
    def label(self) -> str:
        return " ".join(filter_overrides(self.overrides)) or "(defaults)"


@dataclass
class JobSpec:
    """A job to submit: its kind, the grid points it runs, its request and what it waits for."""

    kind: str  # stage0 | stage1 | train | eval
    run_id: str
    folder: Path
    cfg: DictConfig  # the composed config of its first call
    calls: list  # [(grid point num, overrides)]
    resources: Any  # lmm.launch.resources.JobResources
    after: list = field(default_factory=list)  # JobSpecs of this launch
    after_ids: list = field(default_factory=list)  # ids of jobs already queued or running
    handle: Any = None
    error: Optional[str] = None  # why it was not submitted (a dependency failed)
    folded: list = field(default_factory=list)  # eval JobSpecs whose calls run in this job's process, after its own

    def dependency(self) -> Optional[str]:
        ids = [str(d.handle.job_id) for d in self.after if d.handle is not None] + list(self.after_ids)
        return "afterok:" + ":".join(ids) if ids else None

    def describe(self) -> str:
        waits = [f"{d.kind} job of {d.run_id}" for d in self.after] + [f"queued job {i}" for i in self.after_ids]
        return (f"[{self.kind}] {self.run_id}\n    sbatch {self.resources.flags()}"
                + (f"\n    after: {', '.join(waits)}" if waits else ""))


class _LmmSubmititMixin:
    """The planning and submission shared by the SLURM and local launchers."""

    def __init__(self, wait: bool = True, **params: Any) -> None:
        self.wait = wait
        super().__init__(**params)

    def _jobs(self, specs: list) -> list:
        """The jobs to submit for the planned ones (SLURM: each its own job)."""
        return specs

    def _waited_for(self, spec: JobSpec) -> str:
        """The submit line's dependency: SLURM's afterok, which the scheduler holds the job on."""
        return f", {spec.dependency()}" if spec.dependency() else ""

    def _submit_all(self, specs: list) -> None:
        """In plan order: SLURM holds each job until its dependencies end (afterok)."""
        for spec in specs:
            self._submit(spec, str(spec.cfg.sweep))

    # -- planning: in the submitting process, before anything is submitted -------------------------

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _points(self, job_overrides, initial_job_idx: int, check_memory: bool, dry_run: bool) -> list:
        """Compose, validate and memory-check every grid point; raise listing every problem at once."""
        from lmm.launch.identity import run_dir, run_id, stage1_dir
        from lmm.plan.preflight import PredictedOOM, check_fits, preflight
        from lmm.records import is_done
        from lmm.validate import ConfigError, validate, validate_files

        points, problems = [], []
        for offset, overrides in enumerate(job_overrides):
            num, label = initial_job_idx + offset, " ".join(filter_overrides(overrides))
            try:
                cfg = self._compose(overrides)
                present = is_done(stage1_dir(cfg)) or None
                validate(cfg, stage1_exists=present)
            except (ConfigError, ValueError) as error:
                problems.append(f"#{num} {label}:\n{error}")
                continue
            except (HydraException, OmegaConfBaseException) as error:  # a bad override: LmmSweeper left it to us
                problems.append(f"#{num} {label}:\n{_composition_error(error)}")
                continue
            found = []
            if check_memory:  # stage 1 runs as its own job: checked on its own config in _plan
                try:
                    check_fits(cfg, preflight(cfg, stage1_present=True))
                except PredictedOOM as error:
                    found.append(str(error))
            if not dry_run:  # a real submission needs the run's data and benchmark files: missing ones fail
                try:        # here, in seconds, not after queueing and loading a model on many GPUs
                    validate_files(cfg, stage1_exists=present)
                except ConfigError as error:
                    found.append(str(error))
            if found:
                problems.append(f"#{num} {label}:\n" + "\n".join(found))
                continue
            points.append(GridPoint(num, list(overrides), cfg, run_id(cfg), run_dir(cfg)))
        _refuse(problems, dry_run)
        return points

    def _plan(self, points: list, check_memory: bool) -> tuple:
        """The jobs of the grid, in submission order, and a line per run that needs no new job."""
        from lmm.launch.identity import stage0_active, stage0_dir, stage0_id, stage1_dir, stage1_id
        from lmm.launch.jobs import latest_job, queue_states, slurm_job_ids
        from lmm.launch.resources import job_resources
        from lmm.launch.rundir import is_locked
        from lmm.plan.preflight import PredictedOOM, check_fits, preflight
        from lmm.records import is_done
        from lmm.validate import ConfigError, validate

        folders = {p.folder for p in points} | {stage1_dir(p.cfg) for p in points} | {
            stage0_dir(p.cfg) for p in points if stage0_active(p.cfg)}
        latest = {(f, kind): latest_job(f, kind) for f in folders for kind in JOB_KINDS}
        states = queue_states(slurm_job_ids(latest.values()))

        def queued(folder: Path, kind: str) -> Optional[tuple]:
            """(job id, "STATE: reason") of the folder's `kind` job that is still queued or running."""
            job = latest.get((folder, kind))
            state = states.get(str(job["job_id"])) if job else None
            if state is None or not state.active:
                return None
            return str(job["job_id"]), state.state + (f": {state.reason}" if state.reason else "")

        stage0_jobs: dict = {}  # stage-0 id → its JobSpec, or the id of its job already queued
        stage1_jobs: dict = {}  # stage-1 id → its JobSpec, or the id of its job already queued
        specs, notes, problems = [], [], []

        def existing(kind: str, key: str, folder: Path, planned: dict) -> tuple:
            """(True, what to wait for) when a shared stage-0/1 run needs no new job: planned already in this
            launch, done (None), queued (its job id) or trained right now outside any job of ours (None: the run
            waits on its lock); (False, None) when it needs a job."""
            name = f"stage {kind[-1]} {key}"
            if key in planned:
                return True, planned[key]
            if is_done(folder):
                return True, None
            job = queued(folder, kind)
            if job:
                notes.append(f"{name}: job {job[0]} ({job[1]}), not resubmitted")
                planned[key] = job[0]
                return True, job[0]
            if is_locked(folder):
                notes.append(f"{name}: running outside a job")
                return True, None
            return False, None

        def stage0_job(point: GridPoint, overrides: list):
            """The stage-0 job a point's first job waits for (planned once per stage-0 id), or None when its LLM
            has a checkpoint or stage 0 is done."""
            if not stage0_active(point.cfg):
                return None
            key, folder = stage0_id(point.cfg), stage0_dir(point.cfg)
            known, job = existing("stage0", key, folder, stage0_jobs)
            if known:
                return job
            s0_overrides = [*(o for o in overrides if not o.startswith("stage=")), "stage=stage0"]
            try:
                cfg = self._compose(s0_overrides)
                validate(cfg)
                if check_memory:
                    check_fits(cfg)
            except (ConfigError, PredictedOOM, ValueError) as error:
                problems.append(f"#{point.num} {point.label} [its stage 0, a job of its own]:\n{error}")
                return None
            stage0_jobs[key] = JobSpec("stage0", key, folder, cfg, [(point.num, s0_overrides)],
                                       job_resources(cfg, "stage0"))
            specs.append(stage0_jobs[key])
            return stage0_jobs[key]

        def waits_for(dep) -> tuple:
            """(after, after_ids) of a job that waits for `dep`: a JobSpec of this launch or a queued job id."""
            return ([dep] if isinstance(dep, JobSpec) else []), ([dep] if isinstance(dep, str) else [])

        def stage1_job(point: GridPoint, overrides: list, cfg: Optional[DictConfig] = None):
            """The stage-1 job a point waits for (planned once per stage-1 id), or None when stage 1 is there.
            Its config is composed from `overrides` only when it needs a job (most points share a stage 1)."""
            key, folder = stage1_id(point.cfg), stage1_dir(point.cfg)
            known, job = existing("stage1", key, folder, stage1_jobs)
            if known:
                return job
            try:
                cfg = cfg if cfg is not None else self._compose(overrides)
                validate(cfg)
                if check_memory:  # its stage 0 (if any) is done or its own job: planned there
                    check_fits(cfg, preflight(cfg, stage0_present=True))
            except (ConfigError, PredictedOOM, ValueError) as error:
                problems.append(f"#{point.num} {point.label} [its stage 1, a job of its own]:\n{error}")
                return None
            after, after_ids = waits_for(stage0_job(point, overrides))
            stage1_jobs[key] = JobSpec("stage1", key, folder, cfg, [(point.num, overrides)],
                                       job_resources(cfg, "stage1"), after, after_ids)
            specs.append(stage1_jobs[key])
            return stage1_jobs[key]

        groups: dict = {}
        for point in points:
            groups.setdefault(point.run_id, []).append(point)
        for run_id, members in groups.items():
            first = members[0]
            if first.cfg.stage.name == "stage0":  # the LLM alone: its stage-0 job, nothing after it
                if stage0_job(first, first.overrides) is None and is_done(first.folder):
                    notes.append(f"stage 0 {run_id}: done")
                continue
            if first.cfg.stage.name == "pretrain":
                if stage1_job(first, first.overrides, first.cfg) is None and is_done(first.folder):
                    notes.append(f"stage 1 {run_id}: done")
                continue
            train, train_ids = None, []
            job = queued(first.folder, "train")
            if is_done(first.folder):
                notes.append(f"{run_id}: trained (done)")
            elif job or is_locked(first.folder):
                train_ids = [job[0]] if job else []
                notes.append(f"{run_id}: {f'job {job[0]} ({job[1]})' if job else 'running'}, not resubmitted")
            else:
                dep, overrides = None, [*first.overrides, "task=train"]
                if first.cfg.stage.name == "both" and not first.cfg.stage.projector_path:
                    s1_overrides = [*first.overrides, "stage=pretrain"]
                    dep = stage1_job(first, s1_overrides)
                    if dep is not None or is_done(stage1_dir(first.cfg)):
                        overrides.append("stage=finetune")  # stage 1 is done, or its job's afterok says so
                if first.cfg.stage.projector_path:  # no stage 1 before it: it reads the stage-0 LLM itself
                    dep = stage0_job(first, first.overrides)
                cfg = self._compose(overrides)
                train = JobSpec("train", run_id, first.folder, cfg, [(first.num, overrides)],
                                job_resources(cfg, "train"), *waits_for(dep))
                specs.append(train)
            to_score = [m for m in members if _missing_scores(m.cfg, m.folder)]
            evaluating = queued(first.folder, "eval")
            if to_score and evaluating:
                notes.append(f"{run_id}: evaluation job {evaluating[0]} ({evaluating[1]}), not resubmitted")
            elif to_score and (train is not None or train_ids or is_done(first.folder)):
                specs.append(JobSpec("eval", run_id, first.folder, to_score[0].cfg,
                                     [(m.num, [*m.overrides, "task=eval"]) for m in to_score],
                                     job_resources(to_score[0].cfg, "eval"), [train] if train else [], train_ids))
            elif is_done(first.folder) and any(m.cfg.eval.benchmarks for m in members):
                notes.append(f"{run_id}: every benchmark asked for is scored")
        _refuse(problems)
        return specs, notes

    # -- submission --------------------------------------------------------------------------------

    def _executor(self, spec: JobSpec):
        import submitit

        folder = spec.folder / JOB_LOGS / "%j"
        if self._EXECUTOR == "slurm":
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(self.params["max_num_timeout"]))
            params = spec.resources.slurm_parameters()
            params["additional_parameters"] = {**params["additional_parameters"],
                                               **(self.params.get("additional_parameters") or {})}
            params.update(job_name=f"{spec.kind}:{spec.run_id}", signal_delay_s=int(self.params["signal_delay_s"]),
                          dependency=spec.dependency())
            for key in ("setup", "srun_args"):
                if self.params.get(key):
                    params[key] = list(self.params[key])
            executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        else:
            executor = submitit.LocalExecutor(folder=folder)
            r = spec.resources
            executor.update_parameters(timeout_min=r.time_min, nodes=r.nodes, tasks_per_node=r.tasks_per_node)
        return executor

    def _submit(self, spec: JobSpec, sweep: str) -> None:
        from lmm.launch.jobs import record_job

        if self._EXECUTOR != "slurm":  # no scheduler to hold the job: wait for its dependencies here
            for dep in spec.after:
                if dep.handle is None:
                    spec.error = f"its {dep.kind} job was not submitted ({dep.error})"
                    return
                try:
                    dep.handle.result()
                except Exception as error:  # noqa: BLE001 - reported, the others go on
                    spec.error = f"its {dep.kind} job {dep.handle.job_id} failed: {_last_line(error)}"
                    return
        calls = [(overrides, "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state())
                 for num, overrides in spec.calls]
        # A training with its evaluations folded in stops at a failed call: nothing to evaluate.
        spec.handle = self._executor(spec).submit(RunGroup(self, calls, stop_at_failure=bool(spec.folded)))
        r = spec.resources
        record_job(spec.folder, {
            "kind": spec.kind, "job_id": str(spec.handle.job_id), "run_id": spec.run_id, "sweep": sweep,
            "executor": self._EXECUTOR, "stdout": str(spec.handle.paths.stdout),
            "stderr": str(spec.handle.paths.stderr),
            "dependency": spec.dependency() if self._EXECUTOR == "slurm" else None,
            "nodes": r.nodes, "tasks_per_node": r.tasks_per_node, "sbatch": r.flags(),
            "overrides": [list(o) for _, o in spec.calls], "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        log.info("\t[%s] %s: job %s (%d node(s) × %d task(s))%s%s", spec.kind, spec.run_id, spec.handle.job_id,
                 r.nodes, r.tasks_per_node, self._waited_for(spec),
                 ", then its evaluation in the same process" if spec.folded else "")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lmm.launch.identity import sweep_link
        from lmm.launch.store import link_into_sweep

        dry_run = bool(self.config.get("dry_run"))
        # A dry run prints every job first and then fails on the ones predicted not to fit.
        check_memory = self._EXECUTOR == "slurm" and not dry_run
        points = self._points(job_overrides, initial_job_idx, check_memory, dry_run)
        specs, notes = self._plan(points, check_memory)
        if dry_run:
            return self._dry_run(points, specs, notes)
        if self._EXECUTOR == "slurm":  # a job that would be abandoned unfinished: nothing is submitted
            too_long = [self._time_check(spec, _job_plan(spec))[1] for spec in specs if spec.kind != "eval"]
            _refuse([problem for problem in too_long if problem])
        for point in points:  # every run of the sweep appears in its view, trained or not
            link_into_sweep(point.folder, sweep_link(point.cfg))
        for note in notes:
            log.info("\t%s", note)
        specs = self._jobs(specs)
        self._submit_all(specs)
        submitted = [s for s in specs if s.handle is not None]
        folded = sum(len(s.folded) for s in submitted)
        log.info("%d job(s) submitted (%s)%s", len(submitted),
                 ", ".join(f"{sum(s.kind == k for s in submitted)} {k}" for k in JOB_KINDS),
                 f"; {folded} evaluation(s) in their training job's process" if folded else "")
        if not self.wait:
            log.info("watch them with: python -m lmm.sweep status %s", _sweep_dir(points))
            return [_result(p, "submitted") for p in points]
        return self._collect(points, specs)

    def _dry_run(self, points: list, specs: list, notes: list) -> list:
        """Print every job (request, dependencies, plan) and the totals; fail when a job would not fit its GPUs'
        memory or not end within its requeues."""
        from lmm.dryrun import format_plan
        from lmm.launch.identity import stage1_dir
        from lmm.records import is_done

        print(f"{len(points)} grid point(s) → {len(specs)} job(s): "
              + ", ".join(f"{sum(s.kind == k for s in specs)} {k}" for k in JOB_KINDS), flush=True)
        stage_hours: dict = {}
        oom, too_long = [], []
        by_num = {p.num: p.cfg for p in points}
        for spec in specs:
            print(spec.describe())
            if spec.kind == "eval":
                print(f"    evaluates: {', '.join(spec.cfg.eval.benchmarks)} (beams "
                      f"{', '.join(str(by_num[num].eval.num_beams) for num, _ in spec.calls)})")
                continue
            own_job = "trained first by its own stage-1 job" if spec.kind == "train" and (
                any(d.kind == "stage1" for d in spec.after) or spec.after_ids) else None
            plan = _job_plan(spec)
            text = format_plan(spec.cfg, spec.kind == "train" or is_done(stage1_dir(spec.cfg)), stage1_state=own_job,
                               plan=plan)
            note, problem = self._time_check(spec, plan)
            print("\n".join("    " + line for line in [*text.splitlines(), *([note] if note else [])]), flush=True)
            if problem:
                too_long.append(problem)
            for stage in plan.stages:
                if not stage.reused:
                    stage_hours.setdefault(stage.stage, {})[stage.run_id] = stage.gpu_hours_per_node
            if plan.fits is False and not spec.cfg.plan.force:
                oom.append(spec)
        for note in notes:
            print(f"  {note}")
        for stage, label in (("stage0", "stage-0"), ("pretrain", "stage-1"), ("finetune", "stage-2")):
            hours = stage_hours.get(stage, {})
            known = [h for h in hours.values() if h is not None]
            total = f"{sum(known):.1f}" if len(known) == len(hours) else f"≥ {sum(known):.1f} (some unknown)"
            print(f"{label} trainings: {len(hours)}, GPU-hours per node: {total}")
        failures = []
        if oom:
            failures += ["Dry run: predicted out of memory (the real submit refuses these; plan.force=true overrides):",
                         *(f"  [{s.kind}] {s.run_id}" for s in oom)]
        if too_long:
            failures += ["Dry run: these jobs would not end within their time limits (the real submit refuses them):",
                         *(f"  {problem}" for problem in too_long)]
        if failures:
            _fail("\n".join(failures))
        return [_result(p, "dry run") for p in points]

    def _time_check(self, spec: JobSpec, plan) -> tuple:
        """(the dry run's time line, why it must not be submitted) of a SLURM job, from its predicted wall time,
        its time limit, the requeues allowed and the warning's delay; plan.force overrides a predicted overrun, not
        a delay as long as the limit. (None, None) on the local executor."""
        from lmm.plan.timelimit import time_note, time_problem

        if self._EXECUTOR != "slurm":
            return None, None
        r, requeues, warning = spec.resources, int(self.params["max_num_timeout"]), int(self.params["signal_delay_s"])
        if warning >= r.time_min * 60:  # certain, not predicted: plan.force does not override it
            return None, (f"[{spec.kind}] {spec.run_id}: hydra.launcher.signal_delay_s={warning} is not under its "
                          f"{r.time_min}-min time limit: SLURM would warn every allocation as it starts, and the job "
                          "would requeue without training. Fixes: a smaller hydra.launcher.signal_delay_s, or a "
                          "longer cluster.timeout_min.")
        problem = time_problem(spec.kind, spec.run_id, plan.wall_hours, r.nodes, r.time_min, requeues)
        return time_note(plan.wall_hours, r.nodes, r.time_min, requeues), None if spec.cfg.plan.force else problem

    def _collect(self, points: list, specs: list) -> list:
        """Wait for every job; a failed one is reported with its error and log, the others go on."""
        results, failures = {}, []
        for spec in specs:
            if spec.handle is None:
                failures.append(f"[{spec.kind}] {spec.run_id} not submitted: {spec.error}")
                for num, _ in spec.calls:
                    results[num] = _failed(num, points, RuntimeError(spec.error))
                continue
            try:
                _wait_until_ended(spec.handle)
                returns = spec.handle.results()[0]
            except Exception as error:  # noqa: BLE001 - the job raised, or died (killed, cancelled, ...)
                failures.append(f"[{spec.kind}] {spec.run_id} (job {spec.handle.job_id}) FAILED: {_last_line(error)}\n"
                                f"    log: {spec.handle.paths.stderr}")
                for num, _ in spec.calls:
                    results[num] = _failed(num, points, error)
                continue
            for (num, _), ret in zip(spec.calls, returns):
                results[num] = ret
        if failures:
            log.error("%d job(s) failed:\n%s", len(failures), "\n".join(failures))
        return [results.get(p.num) or _result(p, "nothing to do") for p in points]


def _wait_until_ended(handle) -> None:
    """Wait until a job has written its result or has left the scheduler's live states.

    submitit's own wait takes every state outside its short list of unfinished ones (READY, PENDING, RUNNING,
    UNKNOWN, REQUEUED, COMPLETING, PREEMPTED) for the end. A multi-node job whose nodes are still being set up
    (CONFIGURING), one held after a requeue (REQUEUE_HOLD) or a SUSPENDED one would then be reported as failed
    ("has not produced any output") while it goes on running.
    """
    from lmm.launch.jobs import ACTIVE_STATES, state_name

    while not handle.paths.result_pickle.exists() and (state_name(handle.state) in ACTIVE_STATES
                                                        or not handle.done()):
        time.sleep(JOB_POLL_S)


def _job_plan(spec: JobSpec):
    """The planner's prediction for the stages a stage-0, stage-1 or train job runs."""
    from lmm.launch.identity import stage1_dir
    from lmm.plan.preflight import preflight
    from lmm.records import is_done

    # A train job's stage 1 is done, or is the stage-1 job it waits for (planned on its own). Every job but a
    # stage-0 one finds its stage-0 LLM done, or waits for its stage-0 job.
    present = spec.kind == "train" or is_done(stage1_dir(spec.cfg))
    return preflight(spec.cfg, stage1_present=present, stage0_present=spec.kind != "stage0")


def _refuse(problems: list, dry_run: bool = False) -> None:
    """Nothing is submitted when any grid point (or its stage 1) is invalid, or predicted not to fit or not to end."""
    if problems:
        what = "Dry run: these grid points could not be submitted" if dry_run else "Not submitting"
        _fail(f"{what}; invalid grid points:\n" + "\n".join(problems))


def _fail(message: str) -> None:
    """Stop the whole launch with the message alone (exit code 2): the problem is the input, not our code."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(2)


def _missing_scores(cfg: DictConfig, folder: Path) -> bool:
    """Whether the run still lacks a score this grid point asks for (benchmark × its beam count)."""
    from lmm.records import beam_key, is_done, read_record

    if not cfg.eval.benchmarks:
        return False
    if not is_done(folder):
        return True
    scores = read_record(folder).get("eval") or {}
    key = beam_key(int(cfg.eval.num_beams))
    return any(key not in (scores.get(b) or {}) for b in cfg.eval.benchmarks)


def _composition_error(error: BaseException) -> str:
    """Hydra's message for a grid point that does not compose, with its cause (the value that did not convert),
    without the config search path it appends to a missing option."""
    text = str(error).split("\nConfig search path:")[0].rstrip()
    cause = error.__cause__
    return f"{text}\n{str(cause).rstrip()}" if cause is not None and str(cause) not in text else text


def _sweep_dir(points: list) -> str:
    from lmm.launch.identity import sweep_link

    return str(sweep_link(points[0].cfg).parent) if points else "runs/<sweep>"


def _last_line(error: BaseException) -> str:
    """The error's own line: for a job that raised, the exception line of its traceback (submitit's message
    ends with the paths of the logs, which the report gives separately)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Exit|Interrupt)\b.*", line)]
    return (raised or lines or [repr(error)])[-1]


def _result(point: GridPoint, value: str) -> JobReturn:
    ret = JobReturn(overrides=point.overrides, status=JobStatus.COMPLETED)
    ret._return_value = value
    return ret


def _failed(num: int, points: list, error: BaseException) -> JobReturn:
    point = next(p for p in points if p.num == num)
    ret = JobReturn(overrides=point.overrides, status=JobStatus.FAILED)
    ret._return_value = error
    return ret


class LmmSweeper(BasicSweeper):
    """Hydra's basic grid sweeper, minus its first composition of every grid point when the launcher is lmm's.

    Hydra composes each point once to find bad overrides early, and the launcher composes it again. lmm's
    launchers compose and check every point themselves, reporting all the bad ones, before they submit any job:
    the first composition only doubled a grid's set-up (about 0.3 s a point). Hydra's own launcher keeps it.
    """

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not isinstance(self.launcher, _LmmSubmititMixin):
            super().validate_batch_is_legal(batch)


class RunGroup:
    """The calls of one job (a run's training, or its evaluations), in order; requeued whole.

    A call that raised makes the job raise after the others ran: the job then fails (sacct FAILED,
    non-zero exit) with the traceback in its log, instead of ending "COMPLETED" with the error hidden.
    """

    def __init__(self, launcher: BaseSubmititLauncher, calls: list, stop_at_failure: bool = False):
        self.launcher = launcher
        self.calls = calls
        self.stop_at_failure = stop_at_failure

    def __call__(self) -> list:
        returns = []
        for call in self.calls:
            returns.append(self.launcher(*call))
            if self.stop_at_failure and returns[-1].status == JobStatus.FAILED:
                break
        failed = [r for r in returns if r.status == JobStatus.FAILED]
        if failed:
            error = failed[0]._return_value
            if isinstance(error, BaseException):
                raise error
            raise RuntimeError(str(error))
        return returns

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class LmmSlurmLauncher(_LmmSubmititMixin, BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def __init__(self, wait: bool = True, **params: Any) -> None:
        super().__init__(wait=wait, **params)
        for key, least, meaning in (("max_num_timeout", 0, "the requeues a timed-out job is allowed"),
                                    ("signal_delay_s", 1, "seconds from SLURM's warning to the time limit, to "
                                                          "finish a step and save")):
            if key in self.params and int(self.params[key]) < least:  # Hydra passes every LmmSlurmConf field
                _fail(f"hydra.launcher.{key} = {self.params[key]} must be >= {least} ({meaning}).")


class LmmLocalLauncher(_LmmSubmititMixin, BaseSubmititLauncher):
    _EXECUTOR = "local"

    def __init__(self, wait: bool = True, max_parallel: int = 0, **params: Any) -> None:
        super().__init__(wait=wait, **params)
        if int(max_parallel) < 0:
            _fail(f"hydra.launcher.max_parallel = {max_parallel} must be >= 0 (0: one process per CPU core).")
        self.max_parallel = int(max_parallel) or os.cpu_count() or 1

    def _jobs(self, specs: list) -> list:
        """An eval job that waits only for its run's one-process training runs in that training's process, after
        it: no second start-up (about 11 s of imports per process on CPU, a quarter of a tiny run's evaluation)."""
        jobs = []
        for spec in specs:
            train = spec.after[0] if spec.kind == "eval" and len(spec.after) == 1 and not spec.after_ids else None
            if train is not None and train.kind == "train" and processes(train) == 1 and processes(spec) == 1:
                train.calls = [*train.calls, *spec.calls]
                train.folded.append(spec)
                continue
            jobs.append(spec)
        return jobs

    def _waited_for(self, spec: JobSpec) -> str:
        """The submit line's dependency: the jobs that ended before this one started (no scheduler, no afterok)."""
        ended = [str(d.handle.job_id) for d in spec.after if d.handle is not None]
        return f", after job {', '.join(ended)} ended" if ended else ""

    def _submit_all(self, specs: list) -> None:
        """No scheduler here: start each job once its dependencies have ended (plan order among the ready
        ones), with at most max_parallel processes at once (a job of n tasks counts n; a bigger one runs alone)."""
        pending, running = list(specs), []
        while pending:
            busy = sum(processes(s) for s in running if not s.handle.done())
            waiting = {id(s) for s in pending}  # identity: a JobSpec's == would compare whole configs
            ready = [s for s in pending if all(id(dep) not in waiting and (dep.handle is None or dep.handle.done())
                                               for dep in s.after)]
            spec = next((s for s in ready if busy == 0 or busy + processes(s) <= self.max_parallel), None)
            if spec is None:
                time.sleep(0.2)
                continue
            pending = [s for s in pending if s is not spec]
            self._submit(spec, str(spec.cfg.sweep))  # a job whose dependency failed is not submitted
            if spec.handle is not None:
                running.append(spec)


def processes(spec: JobSpec) -> int:
    """The processes a job starts: one per task."""
    return spec.resources.nodes * spec.resources.tasks_per_node
