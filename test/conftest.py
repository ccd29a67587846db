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


@pytest.fixture(
    params=[
        pytest.param("cuda", marks=pytest.mark.cuda),
        "interpreter",
    ]
)
def triton_device(request, monkeypatch) -> str:
    """Where the kernels run: the GPU, or Triton's interpreter on the CPU."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU: the Triton kernels compiled for it")
        return "cuda"
    from mambaseg_core.ops import triton_support

    if triton_support.triton is None:
        pytest.skip("needs the triton package for its interpreter (CPU builds of torch come without it)")
    if not triton_support.INTERPRETED:
        pytest.skip("a GPU is present: the kernels are tested compiled (cuda cases), not in the interpreter")
    monkeypatch.setattr(triton_support, "RUN_ON_CPU", True)
    return "cpu"
