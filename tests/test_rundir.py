"""Run-folder locks and failure notes: a run never runs twice at once; failures are recorded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from lmm.launch.rundir import RunLocked, clear_failed, is_locked, mark_failed, read_failure, run_lock


def _hold_lock_in_another_process(folder, seconds: float):
    code = textwrap.dedent(f"""
        import time
        from lmm.launch.rundir import run_lock
        with run_lock({str(folder)!r}, wait=False):
            print("locked", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_run_refuses_a_second_runner(tmp_path):
    holder = _hold_lock_in_another_process(tmp_path, 30)
    try:
        assert is_locked(tmp_path)
        with pytest.raises(RunLocked, match="already running"), run_lock(tmp_path, wait=False):
            pass
    finally:
        holder.kill()
        holder.wait()
    # A killed holder's lock is released by the OS: the run can start (resume) at once.
    assert not is_locked(tmp_path)
    with run_lock(tmp_path, wait=False):
        assert is_locked(tmp_path) is True


def test_waiting_lock_blocks_until_released(tmp_path):
    holder = _hold_lock_in_another_process(tmp_path, 1.0)
    started = time.monotonic()
    with run_lock(tmp_path, wait=True):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.5


def test_failure_note_round_trip(tmp_path):
    try:
        raise ValueError("data missing")
    except ValueError as error:
        mark_failed(tmp_path, error)
    note = read_failure(tmp_path)
    assert note["error"] == "ValueError: data missing" and "Traceback" in note["traceback"]
    clear_failed(tmp_path)
    assert read_failure(tmp_path) is None
