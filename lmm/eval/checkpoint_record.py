"""The run record of a checkpoint evaluated without training here (`python -m lmm.eval +checkpoint=...`).

Same schema as a trained stage-2 record (`lmm.records`), so the analysis reads it as a measured row:
`kind: "stage2"`, plus `source: "checkpoint"` and a `checkpoint` section:

- `id` (the hub id, or the local folder's path), `kind` (`llava` | `llm`), `name` (the repo's or folder's
  name), `local`, `revision` (the hub commit its config came from), `architectures`, `params_b` (counted
  from the config), `slug` (the folder name under runs/checkpoints/);
- `preset` and `preset_source`: the conf/model preset that names the model (`given` on the command line,
  found by `path` = the hub id, or by `shape`), or null.

`choices`, `hparams` and `config` come from the config the checkpoint was evaluated with (the LLM's shape,
size and template; a LLaVA's tower and projector; `mixing_ratio` from `data=`/`experiment=` when given).
There is no training here, so `stages` and `cost` are empty (a checkpoint never enters a cost table), the
training hyper-parameters and choices (lr, batch sizes, rank, tuning, DeepSpeed, cluster...) are null,
`method` stays `full` (a released checkpoint is read as fully fine-tuned, as in Table 5), and a bare LLM has
no image size, tower or projector.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from omegaconf import DictConfig, OmegaConf

from lmm.records import choices, hparams

SOURCE = "checkpoint"
# Settings of a training that did not happen here: unknown, so null (not the config's defaults).
TRAINING_HPARAMS = ("rank", "alpha", "dropout", "lr", "global_batch_size", "micro_batch_size", "epochs", "nodes",
                    "deepspeed_stage", "max_steps", "pretrain_lr", "pretrain_global_batch_size", "pretrain_epochs",
                    "pretrain_nodes")
TRAINING_CHOICES = ("tuning", "pretrain_data", "stage", "deepspeed", "cluster")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def build_checkpoint_record(cfg: DictConfig, checkpoint: dict, started: float) -> dict:
    """The record of an evaluated checkpoint (`checkpoint`: the section above); `eval` starts empty."""
    hp = {**hparams(cfg), **dict.fromkeys(TRAINING_HPARAMS)}
    picked = {**choices(cfg), **dict.fromkeys(TRAINING_CHOICES)}
    if checkpoint["kind"] == "llm":
        hp.update(image_size=None, patch_size=None, projector_type=None)
        picked.update(vision=None, projector=None)
    return {
        "run_id": checkpoint["slug"],
        "kind": "stage2",
        "source": SOURCE,
        "checkpoint": checkpoint,
        "sweep": str(cfg.sweep),
        "seed": int(cfg.seed),
        "started_at": _iso(started),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_time_s": None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "choices": picked,
        "hparams": hp,
        "resources": {},
        "stages": {"pretrain": None, "finetune": None},
        "cost": {},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "stage1": None,
        "finetune": None,
        "assembled": None,
        "eval": {},
    }
