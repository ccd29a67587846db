"""The repository is one ament_python package that is also a pip package; these keep the two views in sync."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO_ROOT

ROS_MODULES = {
    "rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "event_camera_msgs", "builtin_interfaces",
    "lifecycle_msgs", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py", "rosbag2_py", "rosidl_parser",
    "dvs_msgs", "prophesee_event_msgs", "cv_bridge", "message_filters",
}  # fmt: skip


def _setup_py_constant(name: str):
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py defines no {name}")


def _package_xml() -> ET.Element:
    return ET.parse(REPO_ROOT / "package.xml").getroot()


def test_package_xml_is_format3_ament_python_named_like_the_distribution():
    root = _package_xml()
    assert root.get("format") == "3"
    assert root.findtext("name") == "mambaseg_ros"
    assert root.findtext("export/build_type") == "ament_python"
    setup_src = (REPO_ROOT / "setup.py").read_text()
    assert re.search(r'PACKAGE = "mambaseg_ros"', setup_src)
    assert (REPO_ROOT / "resource" / "mambaseg_ros").is_file(), "ament index marker missing"


def test_versions_agree():
    import mambaseg_core

    assert _package_xml().findtext("version") == mambaseg_core.__version__


def test_dependencies_agree_between_package_xml_and_setup_py():
    # Each python3-* rosdep key of package.xml must be a pip requirement of setup.py and vice versa
    # (modulo the rosdep <-> PyPI naming of the few packages below).
    rosdep_to_pip = {
        "python3-numpy": "numpy", "python3-opencv": "opencv-python-headless", "python3-h5py": "h5py",
        "python3-yaml": "PyYAML", "python3-tqdm": "tqdm", "pytorch": "torch",
    }  # fmt: skip
    exec_deps = {e.text for e in _package_xml().findall("exec_depend")}
    pip_names = {re.split(r"[<>=!~ ]", r)[0] for r in _setup_py_constant("INSTALL_REQUIRES")}
    for key, pip_name in rosdep_to_pip.items():
        assert key in exec_deps, f"package.xml lacks exec_depend {key}"
        assert pip_name in pip_names, f"setup.py lacks install_requires {pip_name} (package.xml has {key})"
    for ros_dep in ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "event_camera_msgs", "launch", "launch_ros"):
        assert ros_dep in exec_deps, f"package.xml lacks exec_depend {ros_dep}"


def test_every_pip_requirement_is_pinned_in_constraints():
    pins = {
        line.split("==")[0].lower()
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    extras = _setup_py_constant("EXTRAS_REQUIRE")
    reqs = _setup_py_constant("INSTALL_REQUIRES") + extras["dev"] + extras["train"]
    for req in reqs:
        name = re.split(r"[<>=!~ \[]", req)[0].lower()
        assert name in pins, f"{name} has no exact pin in constraints.txt"


@pytest.mark.parametrize("entry", _setup_py_constant("CONSOLE_SCRIPTS"))
def test_console_script_imports(entry):
    name, target = (s.strip() for s in entry.split("="))
    module_name, func = target.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, func)), f"{name}: {target} is not callable"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_has_no_ros_import_statically():
    offenders = {
        str(p.relative_to(REPO_ROOT)): sorted(_imported_modules(p) & ROS_MODULES)
        for p in (REPO_ROOT / "mambaseg_core").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"mambaseg_core must not import ROS: {offenders}"


def test_core_imports_with_ros_unavailable():
    # Catches dynamic imports too: every core module imports with the ROS modules blocked.
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {sorted(ROS_MODULES)!r}:
            raise ImportError('ROS import from mambaseg_core: ' + name)
sys.meta_path.insert(0, Block())
import mambaseg_core
for m in pkgutil.walk_packages(mambaseg_core.__path__, 'mambaseg_core.'):
    importlib.import_module(m.name)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    colcon = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    if not Path(colcon).exists():
        pytest.skip("colcon is not installed (make test installs it through the dev extra)")
    base = tmp_path_factory.mktemp("colcon")
    cmd = [colcon, "--log-base", str(base / "log"), "build", "--paths", str(REPO_ROOT)]
    cmd += ["--build-base", str(base / "build"), "--install-base", str(base / "install")]
    out = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return base / "install" / "mambaseg_ros"


def test_colcon_build_installs_package_resources(colcon_install):
    share = colcon_install / "share" / "mambaseg_ros"
    assert (colcon_install / "share" / "ament_index" / "resource_index" / "packages" / "mambaseg_ros").is_file()
    assert (share / "package.xml").is_file()
    launch_files = sorted(p.name for p in (REPO_ROOT / "launch").glob("*.launch.py"))
    assert launch_files, "no launch file in launch/"
    for name in launch_files:
        assert (share / "launch" / name).is_file(), f"launch/{name} not installed"
    for cfg in (REPO_ROOT / "config").rglob("*.*"):
        assert (share / cfg.relative_to(REPO_ROOT)).is_file(), f"{cfg.relative_to(REPO_ROOT)} not installed"
    for entry in _setup_py_constant("CONSOLE_SCRIPTS"):
        name = entry.split("=")[0].strip()
        assert os.access(colcon_install / "lib" / "mambaseg_ros" / name, os.X_OK), f"{name} not in lib/mambaseg_ros"


def test_colcon_installed_node_runs_and_validates_parameters(colcon_install):
    # `ros2 run mambaseg_ros mambaseg_node` runs <prefix>/lib/mambaseg_ros/mambaseg_node: start that very file
    # with a bad parameter; the real node code must reject it by name and exit with its error code 2.
    site = next((colcon_install / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    exe = colcon_install / "lib" / "mambaseg_ros" / "mambaseg_node"
    cmd = [str(exe), "--ros-args", "-p", "overlay_alpha:=2.0", "-p", "allow_random_weights:=true"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "overlay_alpha" in out.stderr
