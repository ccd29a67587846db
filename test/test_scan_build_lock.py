"""The CUDA selective scan's build lock (ops/selective_scan/cuda_scan.py): a build killed midway must not leave
every later load of the extension waiting forever on torch's lock file."""

import logging
import signal
import subprocess
import sys
import time

from mambaseg_core.ops.selective_scan.cuda_scan import build_lock

# A build that takes the lock as load_extension does, starts torch's build (its lock file), then is killed.
KILLED_BUILD = """
import sys, time
from pathlib import Path
from mambaseg_core.ops.selective_scan.cuda_scan import build_lock
directory = Path(sys.argv[1])
with build_lock(directory):
    (directory / "lock").touch()
    print("building", flush=True)
    time.sleep(60)
"""


def test_a_build_killed_midway_leaves_no_lock_that_later_loads_wait_for(tmp_path, caplog):
    build = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert build.stdout is not None and build.stdout.readline() == "building\n"
        assert (tmp_path / "lock").exists()
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=10)
    assert (tmp_path / "lock").exists()  # what torch's FileBaton would wait on, forever
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
    assert time.monotonic() - start < 5  # the killed process's flock ended with it
    assert "killed midway" in caplog.text


def test_a_running_build_is_waited_for(tmp_path):
    build = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD.replace("time.sleep(60)", "time.sleep(1)"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert build.stdout is not None and build.stdout.readline() == "building\n"
    start = time.monotonic()
    with build_lock(tmp_path):  # waits for the build's flock, then finds torch's lock file it left as its own
        waited = time.monotonic() - start
    build.wait(timeout=10)
    assert waited > 0.5
