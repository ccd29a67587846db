"""Shared test fixtures: repository paths and the read-only reference data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
