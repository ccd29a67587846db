"""Shared test fixtures: repository paths and the read-only reference data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton (where installed) runs our kernels in its interpreter, on CPU tensors, for the tests that ask
# for it (ops/triton_support.RUN_ON_CPU). Set before any module defines a kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The read-only ../shared beside the checkout; MAMBASEG_SHARED_DIR points elsewhere (e.g. a copy on a GPU machine).
SHARED_DIR = Path(os.environ.get("MAMBASEG_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = SHARED_DIR / "reference"
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (the ../shared folder beside the checkout)")
    return path
