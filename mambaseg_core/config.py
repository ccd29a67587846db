"""YAML configs loaded into typed dataclasses and validated at load time.

`load_config(MyConfig, "config/x.yaml")` (or a dict) builds the dataclass, checking every key:
unknown keys, wrong types and failed `validate()` checks raise `ConfigError` naming the offending
key path (e.g. ``model.encoder.dims[2]``). Dataclasses may define `validate(self)` raising
`ConfigError`/`ValueError` for cross-field rules.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or invalid; `key` is the dotted path to it."""

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key = key
        where = f" in {source}" if source else ""
        super().__init__(f"config key '{key}'{where}: {message}")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(key, f"must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # `X | None`: X's own error names the inner key and the reason
            return _convert(value, options[0], key)
        for arg in options:
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"{value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(key, f"must have {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(key, f"must be {tp.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}{'.' if prefix else ''}{name}", f"unknown key (known keys: {known})")
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}{'.' if prefix else ''}{name}"
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "is required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as exc:
            if prefix and not exc.key.startswith(prefix):
                raise ConfigError(f"{prefix}.{exc.key}", str(exc).split(": ", 1)[-1]) from None
            raise
        except ValueError as exc:
            raise ConfigError(prefix or cls.__name__, str(exc)) from None
    return obj


def load_config(cls: type[T], source: str | Path | dict | None = None, **overrides: Any) -> T:
    """Build `cls` from a YAML file path or a mapping, then apply keyword overrides."""
    name = None
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        name = str(source)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with path.open() as f:
            loaded = yaml.safe_load(f)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("<root>", "the file must contain a mapping", name)
        data = loaded
    data.update(overrides)
    try:
        return _build(cls, data)
    except ConfigError as exc:
        if name and "' in " not in str(exc):
            raise ConfigError(exc.key, str(exc).split(": ", 1)[-1], name) from None
        raise


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain YAML-serialisable data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["ConfigError", "load_config", "to_dict"]
