#!/usr/bin/env bash
# Install a single-node SLURM (controller, node daemon, client, munge, accounting daemon and its
# MariaDB) from Debian's packages. Idempotent: returns at once when everything is installed.
# Usage: sudo scripts/slurm/install.sh        (root on Debian/Ubuntu; no systemd needed)
set -euo pipefail

PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
t0=$EPOCHREALTIME

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install.sh: all packages already installed (${PKGS[*]})"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: must run as root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the index only when apt has never been updated (no lists) or the install fails.
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        apt-get update -q
    fi
    # policy-rc.d stops the packages' maintainer scripts from starting daemons: start.sh starts
    # them with our own configuration and state folder.
    prc=/usr/sbin/policy-rc.d
    own_prc=0
    if [ ! -e "$prc" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; own_prc=1
    fi
    trap '[ "$own_prc" = 1 ] && rm -f "$prc"' EXIT
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi

awk -v a="$t0" -v b="$EPOCHREALTIME" -v v="$(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo '?')" \
    'BEGIN { printf "install.sh: done in %.1f s (slurm %s)\n", b - a, v }'
