"""The rank variables a job exports: a one-task job's port is free, a multi-task job's is the one its peers derive."""

from __future__ import annotations

import os
import random
import socket
from unittest import mock

import pytest

from lmm.launch.distributed import RANK_VARS, setup_distributed_env


@pytest.mark.parametrize("tasks", [1, 2])
def test_a_one_task_job_takes_a_free_port_and_a_multi_task_job_the_derived_one(tasks):
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
        with socket.socket() as taken:  # something else already listens there (CI: EADDRINUSE)
            taken.bind(("127.0.0.1", derived))
            taken.listen()
            exported = setup_distributed_env(need_process_group=False)
    assert exported["WORLD_SIZE"] == str(tasks) and exported["RANK"] == "0"
    if tasks == 2:
        assert exported["MASTER_PORT"] == str(derived)  # every task computes the same one
    else:
        assert exported["MASTER_PORT"] != str(derived)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", int(exported["MASTER_PORT"])))  # free
