"""The rank variables a job exports: a one-task job's store picks a free port, a multi-task job's port is the one its
peers derive."""

from __future__ import annotations

import os
import random
from unittest import mock

import pytest

from lmm.launch.distributed import RANK_VARS, setup_distributed_env


@pytest.mark.parametrize("tasks", [1, 2])
def test_a_one_task_job_lets_its_store_pick_a_port_and_a_multi_task_job_takes_the_derived_one(tasks):
    job_id = "4242"  # a local executor's job id is a process id
    env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": job_id, "SUBMITIT_LOCAL_NTASKS": str(tasks),
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "0",
           "SUBMITIT_LOCAL_LOCALID": "0"}
    derived = random.Random(job_id).randint(20000, 60000)  # submitit's port for this job id
    # The export writes os.environ: the whole of it is put back after the test. (monkeypatch.delenv of an unset
    # variable records nothing, so once the exported RANK and MASTER_PORT stayed behind, and every later training
    # process on this pytest worker took itself for rank 0 of a group on that one port: EADDRINUSE across CI.)
    with mock.patch.dict(os.environ, env):
        for var in (*RANK_VARS, "LOCAL_WORLD_SIZE"):
            os.environ.pop(var, None)
        exported = setup_distributed_env(need_process_group=False)
    assert exported["WORLD_SIZE"] == str(tasks) and exported["RANK"] == "0"
    if tasks == 2:
        assert exported["MASTER_PORT"] == str(derived)  # every task computes the same one
    else:  # port 0: the store binds a free port itself, never the derived one another job or socket may hold
        assert exported["MASTER_PORT"] == "0"


def test_a_lone_process_that_needs_a_process_group_lets_its_store_pick_a_port():
    with mock.patch.dict(os.environ):
        for var in (*RANK_VARS, "LOCAL_WORLD_SIZE", "SUBMITIT_EXECUTOR", "SLURM_PROCID"):
            os.environ.pop(var, None)
        assert setup_distributed_env(need_process_group=False) == {}
        assert setup_distributed_env(need_process_group=True) == {
            "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
