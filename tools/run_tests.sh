#!/usr/bin/env bash
# `make test`: lint, type check, then the whole pytest suite with ROS 2 traffic confined to this host.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# shellcheck disable=SC1091
. "$VENV/bin/activate"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (mambaseg_core)"
mypy

# DDS isolation: discovery limited to localhost, a per-run domain id, the loopback-only FastDDS
# profile (large images over shared memory), and -- where we may -- a private network namespace.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}
export FASTDDS_DEFAULT_PROFILES_FILE=$PWD/config/fastdds_shm.xml
export ROS_LOG_DIR=$PWD/build/ros_log
export PYTHONUNBUFFERED=1
# One OpenMP thread per process: tests run nodes and players beside pytest on 2 cores, and oversubscribed torch
# threads made a 24 ms forward take seconds under load.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p build
pytest_cmd=(python -m pytest -rs -q --durations=15 "$@")
echo "== pytest (ROS_DOMAIN_ID=$ROS_DOMAIN_ID)"
rc=0
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${pytest_cmd[@]}" || rc=$?
else
  echo "(no private network namespace available: relying on LOCALHOST discovery + loopback profile)"
  "${pytest_cmd[@]}" || rc=$?
fi
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
