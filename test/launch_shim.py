"""Run a simple ROS 2 launch file without `launch`/`launch_ros` (not installable here, docs/spec ros.md §4.3).

Stand-ins for the few classes our launch files use are injected into `sys.modules`, the file's
`generate_launch_description()` is executed, arguments are resolved (defaults, then overrides), and each
Node becomes the command line `ros2 run` would start:

    <exe> --ros-args -r __node:=<name> --params-file <yaml>... -r <from>:=<to>...

Parameter dicts are written to a temporary YAML file (`/**: ros__parameters:`), as launch_ros does. The
executable is `<prefix>/lib/<package>/<executable>` when the package is installed (ament index), else the
`fallback_modules` entry run as `python -m <module>`. Only plain launch files are supported: arguments,
SetEnvironmentVariable, Node with parameters and remappings. Launch semantics (events, conditions) are
not modelled -- keep launch files free of them.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class LaunchPlan:
    """What the launch file asks for, fully resolved."""

    arguments: dict[str, str]  # every declared argument's value
    descriptions: dict[str, str]  # declared argument -> description
    environment: dict[str, str]  # SetEnvironmentVariable actions
    commands: list[list[str]] = field(default_factory=list)  # one command line per Node


class _Context:
    def __init__(self, share_dirs: dict[str, Path]):
        self.arguments: dict[str, str] = {}
        self.share_dirs = share_dirs


def _resolve(value: Any, context: _Context) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(_resolve(v, context) for v in value)
    return value.perform(context)


class _LaunchConfiguration:
    def __init__(self, name: str, default: Any = None):
        self.name, self.default = name, default

    def perform(self, context: _Context) -> str:
        if self.name in context.arguments:
            return context.arguments[self.name]
        if self.default is None:
            raise KeyError(f"launch argument {self.name!r} is not declared and has no default")
        return _resolve(self.default, context)


class _PathJoinSubstitution:
    def __init__(self, parts: list[Any]):
        self.parts = parts

    def perform(self, context: _Context) -> str:
        return os.path.join(*(_resolve(p, context) for p in self.parts))


class _FindPackageShare:
    def __init__(self, package: Any):
        self.package = package

    def perform(self, context: _Context) -> str:
        package = _resolve(self.package, context)
        if package in context.share_dirs:
            return str(context.share_dirs[package])
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory(package)


class _ParameterValue:
    def __init__(self, value: Any, value_type: type | None = None):
        self.value, self.value_type = value, value_type

    def resolve(self, context: _Context) -> Any:
        text = _resolve(self.value, context)
        return self.value_type(text) if self.value_type is not None else yaml.safe_load(text)


class _DeclareLaunchArgument:
    def __init__(self, name: str, default_value: Any = None, description: str = "", **_: Any):
        self.name, self.default_value, self.description = name, default_value, description


class _SetEnvironmentVariable:
    def __init__(self, name: Any, value: Any):
        self.name, self.value = name, value


class _Node:
    def __init__(
        self,
        *,
        package: str,
        executable: str,
        name: str | None = None,
        parameters: list[Any] | None = None,
        remappings: list[tuple[Any, Any]] | None = None,
        **_: Any,
    ):
        self.package, self.executable, self.name = package, executable, name
        self.parameters, self.remappings = parameters or [], remappings or []


class _LaunchDescription:
    def __init__(self, entities: list[Any]):
        self.entities = entities


def _stand_in_modules() -> dict[str, types.ModuleType]:
    def module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    return {
        "launch": module("launch", LaunchDescription=_LaunchDescription),
        "launch.actions": module(
            "launch.actions",
            DeclareLaunchArgument=_DeclareLaunchArgument,
            SetEnvironmentVariable=_SetEnvironmentVariable,
        ),
        "launch.substitutions": module(
            "launch.substitutions", LaunchConfiguration=_LaunchConfiguration, PathJoinSubstitution=_PathJoinSubstitution
        ),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=_Node),
        "launch_ros.substitutions": module("launch_ros.substitutions", FindPackageShare=_FindPackageShare),
        "launch_ros.parameter_descriptions": module(
            "launch_ros.parameter_descriptions", ParameterValue=_ParameterValue
        ),
    }


@contextlib.contextmanager
def _injected(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _executable(package: str, executable: str, fallback_modules: dict[str, str]) -> list[str]:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        path = Path(get_package_prefix(package)) / "lib" / package / executable
        if path.is_file():
            return [str(path)]
    except (ImportError, PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        pass
    key = f"{package}/{executable}"
    if key not in fallback_modules:
        raise FileNotFoundError(f"{key} is not installed and has no fallback module")
    return [sys.executable, "-m", fallback_modules[key]]


def plan_launch(
    launch_file: str | Path,
    overrides: dict[str, str] | None = None,
    *,
    share_dirs: dict[str, Path] | None = None,
    fallback_modules: dict[str, str] | None = None,
    tmp_dir: str | Path | None = None,
) -> LaunchPlan:
    """Execute `launch_file` against the stand-ins and resolve it into a LaunchPlan.

    overrides: `name:=value` launch arguments; share_dirs: package -> share folder for packages that are
    not installed (e.g. the source tree); fallback_modules: "package/executable" -> python module.
    """
    context = _Context(dict(share_dirs or {}))
    with _injected(_stand_in_modules()):
        namespace = runpy.run_path(str(launch_file))
        description = namespace["generate_launch_description"]()
    overrides = dict(overrides or {})
    plan = LaunchPlan(arguments={}, descriptions={}, environment={})
    for entity in description.entities:
        if isinstance(entity, _DeclareLaunchArgument):
            if entity.name in overrides:
                value = overrides.pop(entity.name)
            elif entity.default_value is not None:
                value = _resolve(entity.default_value, context)
            else:
                raise KeyError(f"launch argument {entity.name!r} has no default and was not given")
            context.arguments[entity.name] = plan.arguments[entity.name] = value
            plan.descriptions[entity.name] = entity.description
        elif isinstance(entity, _SetEnvironmentVariable):
            plan.environment[_resolve(entity.name, context)] = _resolve(entity.value, context)
        elif isinstance(entity, _Node):
            plan.commands.append(_node_command(entity, context, fallback_modules or {}, tmp_dir))
        else:
            raise TypeError(f"the launch shim does not model {type(entity).__name__}")
    if overrides:
        raise KeyError(f"unknown launch arguments: {sorted(overrides)}")
    return plan


def _node_command(node: _Node, context: _Context, fallback_modules: dict[str, str], tmp_dir: Any) -> list[str]:
    command = [*_executable(node.package, node.executable, fallback_modules), "--ros-args"]
    if node.name:
        command += ["-r", f"__node:={node.name}"]
    for entry in node.parameters:
        if isinstance(entry, dict):
            values = {key: _parameter(value, context) for key, value in entry.items()}
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=tmp_dir, delete=False) as f:
                yaml.safe_dump({"/**": {"ros__parameters": values}}, f)
            command += ["--params-file", f.name]
        else:
            command += ["--params-file", _resolve(entry, context)]
    for source, target in node.remappings:
        command += ["-r", f"{_resolve(source, context)}:={_resolve(target, context)}"]
    return command


def _parameter(value: Any, context: _Context) -> Any:
    """A parameter dict value as launch_ros passes it: plain values as they are, substitutions YAML-parsed."""
    if isinstance(value, _ParameterValue):
        return value.resolve(context)
    if isinstance(value, (bool, int, float)):
        return value
    return yaml.safe_load(_resolve(value, context))
