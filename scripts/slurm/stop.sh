#!/usr/bin/env bash
# Stop the SLURM cluster started by start.sh: every node's slurmd, slurmctld, slurmdbd, MariaDB,
# munged, each by the pid in its pid file (nothing is killed by name). Idempotent. The state folder
# (job accounting, spool, logs) is kept: start.sh picks it up again. Remove the folder by hand
# to reset (job ids then start again at 1).
set -euo pipefail

STATE=${LMM_SLURM_STATE:-/tmp/lmm-slurm}
T0=$EPOCHREALTIME

# gone PID: the process has exited (a zombie waiting for its parent to reap it counts as gone).
gone() {
    [ ! -r "/proc/$1/stat" ] && return 0
    [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# stop NAME PIDFILE [SECONDS]: SIGTERM the process named in PIDFILE if it is NAME; SIGKILL it
# after SECONDS (default 20).
stop() {
    local name=$1 pidfile=$2 limit=${3:-20} pid i
    if [ ! -s "$pidfile" ]; then
        echo "stop.sh: $name: no pid file"
        return 0
    fi
    pid=$(tr -dc '0-9' <"$pidfile")
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm")" != "$name" ]; then
        echo "stop.sh: $name: not running"
        rm -f "$pidfile"
        return 0
    fi
    local t0=$EPOCHREALTIME
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
        gone "$pid" && break
        sleep 0.1
    done
    if ! gone "$pid"; then
        echo "stop.sh: $name (pid $pid) ignored SIGTERM for ${limit} s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    awk -v a="$t0" -v b="$EPOCHREALTIME" -v w="$name (pid $pid)" 'BEGIN { printf "stop.sh: %-24s stopped in %5.2f s\n", w, b - a }'
    rm -f "$pidfile"
}

for pidfile in "$STATE"/run/slurmd*.pid; do
    [ -e "$pidfile" ] && stop slurmd "$pidfile"
done
stop slurmctld "$STATE/run/slurmctld.pid"
stop slurmdbd "$STATE/run/slurmdbd.pid"
stop mariadbd "$STATE/run/mariadb.pid" 60
stop munged "$STATE/run/munged.pid"
awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "stop.sh: done in %.2f s\n", b - a }'
