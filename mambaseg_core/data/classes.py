"""Class names and RGB palettes of the three label sets, and the Cityscapes-19 → DSEC-11 mapping.

The palettes are the ones MambaSeg's `utils/labels.py: dataset_info()` uses (DSEC 11, DDD17 6) and the
standard Cityscapes trainId colours (DSEC 19, which MambaSeg itself has no palette for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
"""Label value excluded from the loss (`CrossEntropyLoss(ignore_index=255)`) and from the metrics."""


@dataclass(frozen=True)
class ClassSet:
    """One label set: `names[k]` and `palette[k]` (uint8 RGB) for class id k in 0..K-1."""

    key: str
    names: tuple[str, ...]
    palette: np.ndarray  # (K, 3) uint8

    def __post_init__(self) -> None:
        if self.palette.shape != (len(self.names), 3) or self.palette.dtype != np.uint8:
            raise ValueError(f"{self.key}: palette must be uint8 ({len(self.names)}, 3), got {self.palette.shape}")
        self.palette.setflags(write=False)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def valid_ids(self) -> frozenset[int]:
        """Every value a label PNG of this set may hold: 0..K-1 and the ignore value."""
        return frozenset(range(self.num_classes)) | {IGNORE_INDEX}


def _class_set(key: str, table: list[tuple[str, tuple[int, int, int]]]) -> ClassSet:
    return ClassSet(key, tuple(name for name, _ in table), np.array([rgb for _, rgb in table], np.uint8))


DSEC11 = _class_set(
    "dsec11",
    [
        ("background", (0, 0, 0)),
        ("building", (70, 70, 70)),
        ("fence", (190, 153, 153)),
        ("person", (220, 20, 60)),
        ("pole", (153, 153, 153)),
        ("road", (128, 64, 128)),
        ("sidewalk", (244, 35, 232)),
        ("vegetation", (107, 142, 35)),
        ("car", (0, 0, 142)),
        ("wall", (102, 102, 156)),
        ("traffic sign", (220, 220, 0)),
    ],
)

DSEC19 = _class_set(
    "dsec19",
    [
        ("road", (128, 64, 128)),
        ("sidewalk", (244, 35, 232)),
        ("building", (70, 70, 70)),
        ("wall", (102, 102, 156)),
        ("fence", (190, 153, 153)),
        ("pole", (153, 153, 153)),
        ("traffic light", (250, 170, 30)),
        ("traffic sign", (220, 220, 0)),
        ("vegetation", (107, 142, 35)),
        ("terrain", (152, 251, 152)),
        ("sky", (70, 130, 180)),
        ("person", (220, 20, 60)),
        ("rider", (255, 0, 0)),
        ("car", (0, 0, 142)),
        ("truck", (0, 0, 70)),
        ("bus", (0, 60, 100)),
        ("train", (0, 80, 100)),
        ("motorcycle", (0, 0, 230)),
        ("bicycle", (119, 11, 32)),
    ],
)

DDD17 = _class_set(
    "ddd17",
    [
        ("flat", (128, 64, 128)),
        ("background", (70, 70, 70)),
        ("object", (220, 220, 0)),
        ("vegetation", (107, 142, 35)),
        ("human", (220, 20, 60)),
        ("vehicle", (0, 0, 142)),
    ],
)

CLASS_SETS: dict[str, ClassSet] = {cs.key: cs for cs in (DSEC11, DSEC19, DDD17)}

# Cityscapes trainId (DSEC 19) -> DSEC 11 id, from MambaSeg's `labels_11_Cityscapes`.
_DSEC19_TO_11 = {0: 5, 1: 6, 2: 1, 3: 9, 4: 2, 5: 4, 6: 10, 7: 10, 8: 7, 9: 7, 10: 0, 11: 3, 12: 3}
_DSEC19_TO_11.update({k: 8 for k in range(13, 19)})

DSEC19_TO_DSEC11 = np.full(256, IGNORE_INDEX, np.uint8)
"""(256,) uint8 lookup table: `DSEC19_TO_DSEC11[label19]` gives the 11-class label; 255 and unknown ids → 255."""
for _src, _dst in _DSEC19_TO_11.items():
    DSEC19_TO_DSEC11[_src] = _dst
DSEC19_TO_DSEC11.setflags(write=False)


def class_set(key: str) -> ClassSet:
    """The class set named `key` ("dsec11", "dsec19" or "ddd17")."""
    try:
        return CLASS_SETS[key]
    except KeyError:
        raise KeyError(f"unknown class set {key!r}; expected one of {sorted(CLASS_SETS)}") from None
