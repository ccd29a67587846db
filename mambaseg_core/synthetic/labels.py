"""Class ids the synthetic world paints (DSEC 11-class set, spec §5.1) and the DDD17 6-class mapping (§5.3)."""

from __future__ import annotations

import numpy as np

SKY = 0  # "background" in the 11-class set
BUILDING = 1
FENCE = 2
PERSON = 3
POLE = 4
ROAD = 5
SIDEWALK = 6
VEGETATION = 7
CAR = 8
WALL = 9
TRAFFIC_SIGN = 10
NUM_CLASSES = 11

TRANSPARENT = 255
"""Texel value of a layer texture where the surface is absent (the painter shows what lies behind).
It never reaches a rendered label: the sky layer is opaque everywhere."""

# DDD17 ids: 0 flat, 1 background (construction + sky), 2 object, 3 vegetation, 4 human, 5 vehicle.
_DSEC11_TO_DDD17 = {
    ROAD: 0,
    SIDEWALK: 0,
    BUILDING: 1,
    WALL: 1,
    FENCE: 1,
    SKY: 1,
    POLE: 2,
    TRAFFIC_SIGN: 2,
    VEGETATION: 3,
    PERSON: 4,
    CAR: 5,
}

DSEC11_TO_DDD17 = np.full(256, 255, np.uint8)
"""(256,) uint8 lookup table: `DSEC11_TO_DDD17[label11]` is the DDD17 label; 255 and unknown ids → 255."""
for _src, _dst in _DSEC11_TO_DDD17.items():
    DSEC11_TO_DDD17[_src] = _dst
DSEC11_TO_DDD17.setflags(write=False)


def to_ddd17(label11: np.ndarray) -> np.ndarray:
    """Map an 11-class label image (any shape, uint8) to the DDD17 6-class set (same shape, uint8)."""
    label11 = np.asarray(label11)
    if label11.dtype != np.uint8:
        raise TypeError(f"label11 must be uint8, got {label11.dtype}")
    return DSEC11_TO_DDD17[label11]
