"""Training checkpoints: atomic writes, keep-last-k rotation, "auto" resume lookup and RNG state capture.

File layout (a torch.save'd dict of plain types and tensors, readable with `weights_only=True`): the
`models.save_checkpoint` layout (`format`, `version`, `model_config`, `state_dict`) plus `epoch` and, for
periodic checkpoints, `trainer` (optimiser, scheduler, scaler, EMA, iteration, per-rank RNG states, hooks,
config). `models.load_model` therefore reads every checkpoint the trainer writes.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

PERIODIC_PATTERN = re.compile(r"^checkpoint_(\d{8})\.pt$")
BEST_NAME = "model_best.pt"


def periodic_name(iteration: int) -> str:
    return f"checkpoint_{iteration:08d}.pt"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """Write `obj` to `path` so that a crash at any point leaves either the old file or the new one.

    The data goes to a temporary file in the same directory (same filesystem), is fsync'ed, and then
    `os.replace`d over `path`, which is atomic on POSIX and Windows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def periodic_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's periodic checkpoints, oldest first (by iteration in the name)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := PERIODIC_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` periodic checkpoints; return the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    stale = periodic_checkpoints(run_dir)[:-keep_last]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """`None` → no resume; `"auto"` → newest periodic checkpoint in `run_dir` (or None); else that file."""
    if resume is None:
        return None
    if resume == "auto":
        found = periodic_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
    return path


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy, torch CPU and every CUDA device of this process.

    Only plain types and tensors, so checkpoints load with `torch.load(..., weights_only=True)`.
    """
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    keys = np.asarray(keys)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch (CPU + CUDA); optionally make cuDNN deterministic (official settings)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
