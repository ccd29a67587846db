"""The folder layout is the architecture: each core subpackage may import only the layers below it
(docs/ARCHITECTURE.md, "What may import what")."""

from __future__ import annotations

import ast

from conftest import REPO_ROOT

ALLOWED = {
    "config": set(),
    "ops": {"config"},
    "events": {"config"},
    "models": {"config", "ops"},
    "data": {"config", "events"},
    "synthetic": {"config", "events", "data"},
    "pipeline": {"config", "ops", "events", "models", "data"},
    "train": {"config", "ops", "events", "models", "data", "pipeline"},
    "cli": {"config", "ops", "events", "models", "data", "synthetic", "pipeline", "train"},
    "bags": {"config", "events", "data", "synthetic", "pipeline"},
}


def _internal_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mambaseg_core" and len(parts) > 1:
                yield parts[1]


def test_core_subpackages_import_only_lower_layers():
    core = REPO_ROOT / "mambaseg_core"
    violations = []
    for path in core.rglob("*.py"):
        rel = path.relative_to(core)
        layer = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
        if layer in ("__init__",):
            continue
        allowed = ALLOWED.get(layer)
        assert allowed is not None, f"{rel}: new top-level module {layer!r}: add it to ALLOWED and ARCHITECTURE.md"
        violations += [
            f"{rel} imports mambaseg_core.{dep}" for dep in _internal_imports(path) if dep not in allowed | {layer}
        ]
    assert not violations, "\n".join(violations)


def test_ros_glue_does_not_reach_into_model_internals():
    # The node is glue over the Segmenter pipeline: it must not build tensors or call the model itself.
    forbidden = {"ops", "models"}
    for path in (REPO_ROOT / "mambaseg_ros").rglob("*.py"):
        deps = set(_internal_imports(path))
        assert not deps & forbidden, f"{path.name} imports {sorted(deps & forbidden)}"
