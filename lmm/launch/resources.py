"""What one job asks SLURM for, from that job's own composed config: its cluster preset and its stage.

A grid may mix clusters and sizes (Table 4: 1-, 2- and 4-node runs), so nothing here comes from the
launcher's defaults. Stage-1 and training jobs run one task per GPU on their stage's nodes; an
evaluation job is one process on one node holding all its GPUs (generation shards the model over them).
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

KINDS = ("stage0", "stage1", "train", "eval")


def world_size(cfg: DictConfig, stage: str) -> int:
    """Ranks of a stage: nodes × GPUs per node. A stage=both job runs stage 1 on the job's (stage-2) nodes; stage 0
    runs on `stage0.nodes` in its own job (stage=stage0), else on the nodes of the job that trains it first."""
    if stage == "stage0" and cfg.stage.name == "stage0":
        return int(cfg.stage0.nodes) * int(cfg.cluster.gpus_per_node)
    if stage == "stage0":
        stage = "pretrain" if cfg.stage.name == "pretrain" else "finetune"
    nodes = cfg.pretrain.nodes if stage == "pretrain" and cfg.stage.name == "pretrain" else cfg.tuning.nodes
    return int(nodes) * int(cfg.cluster.gpus_per_node)


def accumulation_steps(global_batch: int, micro_batch: int, world: int) -> int:
    """Gradient-accumulation steps that turn micro-batches on `world` ranks into the global batch."""
    return global_batch // (micro_batch * world)


@dataclass(frozen=True)
class JobResources:
    """One job's sbatch request."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: int  # per node; 0 = the cluster's default (no --mem)
    time_min: int
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres: str | None = None  # e.g. "gpu:a100:8": replaces --gpus-per-node

    def slurm_parameters(self) -> dict:
        """submitit.SlurmExecutor's parameters (sbatch options); `--requeue` always, so that a time-out or
        pre-emption can requeue the job on sites whose default is --no-requeue."""
        params = {"nodes": self.nodes, "ntasks_per_node": self.tasks_per_node, "cpus_per_task": self.cpus_per_task,
                  "time": self.time_min, "additional_parameters": {"requeue": True}}
        if self.gres:
            params["gres"] = self.gres
        else:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb > 0:
            params["mem"] = f"{self.mem_gb}GB"
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        return params

    def flags(self) -> str:
        """The request as sbatch flags, for dry runs and logs."""
        out = []
        for key, value in self.slurm_parameters().items():
            if key == "additional_parameters":
                out += [f"--{k}" if v is True else f"--{k}={v}" for k, v in value.items()]
            else:
                out.append(f"--{key.replace('_', '-')}={value}")
        return " ".join(out)


def job_resources(cfg: DictConfig, kind: str) -> JobResources:
    """The resources of a `kind` job (stage0 | stage1 | train | eval) for the composed config `cfg`."""
    if kind not in KINDS:
        raise ValueError(f"job kind {kind!r} must be one of {KINDS}")
    c = cfg.cluster
    gpus = int(c.gpus_per_node)
    if kind == "eval":
        nodes, tasks, cpus = 1, 1, int(c.cpus_per_task) * gpus
    else:
        nodes = world_size(cfg, {"stage0": "stage0", "stage1": "pretrain"}.get(kind, "finetune")) // gpus
        tasks, cpus = gpus, int(c.cpus_per_task)
    return JobResources(nodes=nodes, tasks_per_node=tasks, gpus_per_node=gpus, cpus_per_task=cpus,
                        mem_gb=int(c.mem_gb_per_node or 0), time_min=int(c.timeout_min), partition=c.partition,
                        account=c.account, qos=c.qos, constraint=c.constraint, gres=c.get("gres"))
