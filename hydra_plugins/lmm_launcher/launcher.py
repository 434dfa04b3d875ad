"""Hydra launchers over submitit that size each job from its own config and skip finished runs.

hydra-submitit-launcher submits every grid point with one set of resources; a grid of the paper
mixes 1-, 2- and 4-node runs. These launchers compose each job's config first and then, before
anything is submitted: validate it, refuse runs predicted to run out of memory (unless
`plan.force=true`), skip runs that are done or already running, and size the job (nodes, one task
per GPU). With `wait: false` they submit and return; `python -m lmm.sweep status` shows the jobs.
"""

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules, where
# dataclasses cannot resolve string annotations.

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import II, OmegaConf

log = logging.getLogger(__name__)
MANIFEST = "lmm_jobs.jsonl"


@dataclass
class LmmSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.lmm_launcher.launcher.LmmSlurmLauncher"
    # Block until every job ends (Hydra's default) or submit and return.
    wait: bool = True
    # Requeues allowed after time-outs/preemptions (each resumes from the run's latest checkpoint).
    max_num_timeout: int = 20


@dataclass
class LmmLocalConf(LocalQueueConf):
    """`hydra/launcher=submitit`: each job in its own process(es), the SLURM path without SLURM."""

    _target_: str = "hydra_plugins.lmm_launcher.launcher.LmmLocalLauncher"
    wait: bool = True
    timeout_min: int = II("cluster.timeout_min")
    tasks_per_node: int = II("cluster.gpus_per_node")


ConfigStore.instance().store(group="hydra/launcher", name="lmm_slurm", node=LmmSlurmConf, provider="lmm")
# Not named `submitit_local`: that is the plugin's own entry, which Hydra's plugin scan re-registers.
ConfigStore.instance().store(group="hydra/launcher", name="submitit", node=LmmLocalConf, provider="lmm")


@dataclass
class PlannedJob:
    num: int
    overrides: list[str]
    run_id: str
    run_dir: Path
    nodes: int
    tasks_per_node: int
    skip: str | None = None  # why it is not submitted (done, running)


class _LmmSubmititMixin:
    """The per-job planning and submission shared by the SLURM and local launchers."""

    def __init__(self, wait: bool = True, **params: Any) -> None:
        self.wait = wait
        super().__init__(**params)

    # -- planning: runs in the submitting process, before anything is submitted --------------------

    def _plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[PlannedJob]:
        from lmm.launch.identity import run_dir, run_id, stage1_dir
        from lmm.launch.rundir import is_locked
        from lmm.plan import PredictedOOM
        from lmm.records import is_done
        from lmm.validate import ConfigError, validate, world_size

        jobs, problems = [], []
        for offset, overrides in enumerate(job_overrides):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                validate(cfg, stage1_exists=is_done(stage1_dir(cfg)) or None)
                self._check_memory(cfg)
            except (ConfigError, PredictedOOM, ValueError) as error:
                problems.append(f"#{initial_job_idx + offset} {' '.join(filter_overrides(overrides))}:\n{error}")
                continue
            stage = "pretrain" if cfg.stage.name == "pretrain" else "finetune"
            gpus = int(cfg.cluster.gpus_per_node)
            folder = run_dir(cfg)
            skip = "done" if is_done(folder) else "running" if is_locked(folder) else None
            jobs.append(PlannedJob(initial_job_idx + offset, list(overrides), run_id(cfg), folder,
                                   world_size(cfg, stage) // gpus, gpus, skip))
        if problems:
            # Nothing is submitted when any grid point is invalid.
            raise ValueError("Not submitting; invalid grid points:\n" + "\n".join(problems))
        return jobs

    def _check_memory(self, cfg) -> None:
        """Refuse runs predicted to run out of GPU memory (plan.force=true submits them anyway)."""
        if self._EXECUTOR != "slurm":
            return
        from lmm.plan import check_fits

        check_fits(cfg)

    # -- submission --------------------------------------------------------------------------------

    def _executor(self, job: PlannedJob):
        import submitit

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder,
                                         **({"slurm_max_num_timeout": params.pop("max_num_timeout")}
                                            if "max_num_timeout" in params else {}))
        params.pop("max_num_timeout", None)
        base = set(OmegaConf.structured(_base_keys()).keys())
        extra = {k: v for k, v in (params.pop("additional_parameters", None) or {}).items() if v is not None}
        if extra:  # e.g. an account: only when set, never "--account=None"
            params["additional_parameters"] = extra
        resources = {k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items() if v is not None}
        resources.update(nodes=job.nodes, tasks_per_node=job.tasks_per_node, name=job.run_id)
        if self._EXECUTOR == "slurm" and params.get("gpus_per_node") is not None:
            resources["gpus_per_node"] = job.tasks_per_node
        executor.update_parameters(**resources)
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.config.get("dry_run"):
            return self._dry_run(job_overrides, initial_job_idx)
        jobs = self._plan(job_overrides, initial_job_idx)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Grid points of one run (e.g. Table 1's beam 1 and beam 5 evaluations) share one job that
        # trains once and then runs each point in turn; two jobs would fight over the run's lock.
        groups: dict[str, list[PlannedJob]] = {}
        for job in jobs:
            groups.setdefault(job.run_id, []).append(job)
        handles = {}
        for run_id, members in groups.items():
            first = members[0]
            labels = "; ".join(" ".join(filter_overrides(j.overrides)) for j in members)
            # A done run is not resubmitted (evaluate it again with `python -m lmm.eval`).
            if first.skip:
                log.info("\t#%d : %s -> %s (%s): skipped", first.num, labels, run_id, first.skip)
                continue
            calls = [(j.overrides, "hydra.sweep.dir", j.num, f"job_id_for_{j.num}", Singleton.get_state())
                     for j in members]
            handle = self._executor(first).submit(RunGroup(self, calls))
            log.info("\t#%d : %s -> %s: job %s (%d node(s) × %d task(s))", first.num, labels, run_id,
                     handle.job_id, first.nodes, first.tasks_per_node)
            self._record(sweep_dir, first, handle)
            for job in members:
                handles[id(job)] = (handle, members.index(job))
        if not self.wait:
            log.info("%d job(s) submitted; watch them with: python -m lmm.sweep status %s",
                     len({h.job_id for h, _ in handles.values()}), sweep_dir.parent.parent)
            return [_skipped(job) for job in jobs]
        return self._collect(jobs, handles)

    def _dry_run(self, job_overrides, initial_job_idx) -> list[JobReturn]:
        """Print every grid point's plan (run id, nodes, GPUs, ...) and submit nothing."""
        from lmm.dryrun import format_plan
        from lmm.launch.identity import stage1_dir
        from lmm.records import is_done
        from lmm.validate import validate

        returns = []
        for offset, overrides in enumerate(job_overrides):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            present = is_done(stage1_dir(cfg))
            validate(cfg, stage1_exists=present)
            print(f"#{initial_job_idx + offset} : {' '.join(filter_overrides(overrides))}")
            print(format_plan(cfg, present), flush=True)
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            ret._return_value = "dry run"
            returns.append(ret)
        return returns

    @staticmethod
    def _record(sweep_dir: Path, job: PlannedJob, handle) -> None:
        entry = {"num": job.num, "run_id": job.run_id, "run_dir": str(job.run_dir), "job_id": str(handle.job_id),
                 "stdout": str(handle.paths.stdout), "stderr": str(handle.paths.stderr),
                 "submission_folder": str(handle.paths.folder), "nodes": job.nodes,
                 "tasks_per_node": job.tasks_per_node, "overrides": job.overrides,
                 "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(sweep_dir / MANIFEST, "a") as manifest:
            manifest.write(json.dumps(entry) + "\n")

    def _collect(self, jobs: list[PlannedJob], handles: dict) -> list[JobReturn]:
        """Wait for every job; a failed run is reported with its error and log, the others go on."""
        returns, failures = [], []
        for job in jobs:
            if id(job) not in handles:
                returns.append(_skipped(job))
                continue
            handle, position = handles[id(job)]
            try:
                result = handle.results()[0][position]
                error = result._return_value if result.status == JobStatus.FAILED else None
            except Exception as job_error:  # noqa: BLE001 - the job itself died (killed, cancelled, ...)
                result = JobReturn(overrides=job.overrides, status=JobStatus.FAILED)
                result._return_value = error = job_error
            if error is not None:
                message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
                failures.append(f"#{job.num} {job.run_id} (job {handle.job_id}) FAILED: {message}\n"
                                f"    log: {handle.paths.stderr}")
            returns.append(result)
        if failures:
            log.error("%d of %d run(s) failed:\n%s", len(failures), len(jobs), "\n".join(failures))
        return returns


def _base_keys():
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    return BaseQueueConf


def _skipped(job: PlannedJob) -> JobReturn:
    ret = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
    ret._return_value = job.skip or "submitted"
    return ret


class RunGroup:
    """The grid points of one run, executed in order in one job; requeued whole (each point resumes)."""

    def __init__(self, launcher: BaseSubmititLauncher, calls: list[tuple]):
        self.launcher = launcher
        self.calls = calls

    def __call__(self) -> list[JobReturn]:
        return [self.launcher(*call) for call in self.calls]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class LmmSlurmLauncher(_LmmSubmititMixin, BaseSubmititLauncher):
    _EXECUTOR = "slurm"


class LmmLocalLauncher(_LmmSubmititMixin, BaseSubmititLauncher):
    _EXECUTOR = "local"
