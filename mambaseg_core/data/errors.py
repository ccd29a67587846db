"""The one exception type for dataset problems; its message always names the file and what was expected."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file is missing, malformed or inconsistent with its siblings."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
