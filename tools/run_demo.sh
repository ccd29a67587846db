#!/usr/bin/env bash
# `make demo`: the ROS 2 node on the embedded synthetic input; artefacts in demo_output/ (see mambaseg_ros/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
# Keep DDS on this machine: localhost discovery, a private domain id, the loopback-only large-image profile.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}
export FASTDDS_DEFAULT_PROFILES_FILE=$PWD/config/fastdds_shm.xml
export ROS_LOG_DIR=$PWD/build/ros_log
exec python -m mambaseg_ros.demo "$@"
