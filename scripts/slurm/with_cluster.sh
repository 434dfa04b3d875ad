#!/usr/bin/env bash
# Run a command (the test suite) with the local SLURM cluster up, so that the SLURM tests run instead
# of skipping: installs and starts it when needed (root on Debian/Ubuntu), and stops it afterwards
# only if this script started it. Where it cannot, says why in one line before and after the command.
#   scripts/slurm/with_cluster.sh .venv/bin/python -m pytest -q
# LMM_SKIP_SLURM=1 runs the command without the cluster.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log=${LMM_SLURM_STATE:-/tmp/lmm-slurm}.setup.log
why=""
started=0

if [ "${LMM_SKIP_SLURM:-0}" = 1 ]; then
    why="LMM_SKIP_SLURM=1"
elif timeout 5 scontrol ping >/dev/null 2>&1 && sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
    :  # already up (e.g. started by hand): used as is, left running
elif [ "$(id -u)" -ne 0 ]; then
    why="not root: the local cluster's daemons need root (scripts/slurm/start.sh)"
elif ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
    why="no apt-get to install SLURM (scripts/slurm/install.sh) and no SLURM installed"
elif ! "$here/install.sh" >"$log" 2>&1; then
    why="installing SLURM failed (see $log)"
elif ! "$here/start.sh" >>"$log" 2>&1; then
    why="starting the local cluster failed (see $log)"
else
    started=1
    echo "with_cluster.sh: local SLURM cluster up (log: $log)"
fi
[ -n "$why" ] && echo "with_cluster.sh: SLURM tests will SKIP: $why"

"$@"
status=$?

[ -n "$why" ] && echo "with_cluster.sh: SLURM tests were SKIPPED: $why"
if [ "$started" = 1 ]; then
    "$here/stop.sh" >>"$log" 2>&1 || echo "with_cluster.sh: stopping the cluster failed (see $log)"
fi
exit $status
