"""Datasets read exactly as MambaSeg's training reads them: DSEC-Semantic, DDD17, augmentation, fixtures.

Public API (imported lazily, so `mambaseg_core.data.classes` stays cheap for the ROS node and colorizer):
- `DsecSemantic`, `DsecSequence` (dsec.py), `Ddd17Segmentation` (ddd17.py): torch Datasets of dict samples.
- `JointAugment`, `DSEC_TRAIN_AUGMENT`, `DDD17_TRAIN_AUGMENT` (transforms.py).
- `CLASS_SETS`, `ClassSet`, `DSEC19_TO_DSEC11`, `IGNORE_INDEX` (classes.py).
- `prepare_dsec` (prepare_dsec.py), `check_dsec`, `check_ddd17` (check.py), fixture writers (fixtures.py).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "check": ("CheckReport", "check_ddd17", "check_dsec"),
    "classes": ("CLASS_SETS", "DSEC19_TO_DSEC11", "IGNORE_INDEX", "ClassSet", "class_set"),
    "ddd17": ("Ddd17Segmentation", "extract_video_frames"),
    "dsec": ("DSEC_SEQUENCES", "DsecSemantic", "DsecSequence"),
    "errors": ("DatasetError",),
    "fixtures": ("write_ddd17_fixture", "write_dsec_download_fixture", "write_dsec_fixture"),
    "prepare_dsec": ("prepare_dsec",),
    "transforms": ("DDD17_TRAIN_AUGMENT", "DSEC_TRAIN_AUGMENT", "AugmentParams", "JointAugment"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
