"""Billboard (upright sprite) storage and the numba kernel that paints all visible billboards of a frame.

A frame may show ~100 billboards, most of them a few pixels tall; per-sprite OpenCV/numpy calls would cost
more than the pixels. So every sprite's mip levels live flattened in one `BillboardAtlas`, and one compiled
call scales, point-samples the label, bilinearly samples the albedo and composites all of them back to front.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from . import labels as L
from .textures import Texture, fill_transparent

MAX_LEVELS = 8
_TRANSPARENT = L.TRANSPARENT  # a global: numba freezes it into the kernel


class BillboardAtlas:
    """All sprite textures with mip levels, flattened.

    Attributes: `albedo` (N, 4) float32 and `label` (N,) uint8 texels of every level of every sprite;
    `levels` (S, MAX_LEVELS, 3) int64 = (offset, rows, cols) of sprite s, level l (the last real level repeated);
    `num_levels` (S,) int64, `res` (S,) float64 metres per level-0 texel, `size_m` (S, 2) float64 (width, height)
    and `base_y` (S,) float64 height of the bottom edge above the ground.
    """

    def __init__(self) -> None:
        self._albedo: list[np.ndarray] = []
        self._label: list[np.ndarray] = []
        self._levels: list[list[tuple[int, int, int]]] = []
        self._meta: list[tuple[float, float, float, float]] = []
        self._count = 0

    def add(self, tex: Texture, base_y: float = 0.0) -> int:
        """Store a sprite texture (its mip chain is built here); returns the sprite id."""
        fill_transparent(tex.albedo, tex.label)
        albedo, label = tex.albedo, tex.label
        levels = []
        while True:
            levels.append((self._count, label.shape[0], label.shape[1]))
            self._albedo.append(albedo.reshape(-1, 4))
            self._label.append(label.reshape(-1))
            self._count += label.size
            if min(label.shape) < 8 or len(levels) == MAX_LEVELS:
                break
            albedo, label = cv2.pyrDown(albedo), np.ascontiguousarray(label[::2, ::2])
        self._levels.append(levels)
        rows, cols = tex.label.shape
        self._meta.append((tex.res, cols * tex.res, rows * tex.res, base_y))
        return len(self._levels) - 1

    def freeze(self) -> None:
        """Pack everything added so far into the flat arrays the kernel reads."""
        self.albedo = np.concatenate(self._albedo).astype(np.float32) if self._albedo else np.zeros((0, 4), np.float32)
        self.label = np.concatenate(self._label) if self._label else np.zeros(0, np.uint8)
        self.levels = np.zeros((len(self._levels), MAX_LEVELS, 3), np.int64)
        self.num_levels = np.array([len(lv) for lv in self._levels], np.int64)
        for s, lv in enumerate(self._levels):
            self.levels[s] = [lv[min(i, len(lv) - 1)] for i in range(MAX_LEVELS)]
        meta = np.array(self._meta, np.float64).reshape(-1, 4)
        self.res, self.size_m, self.base_y = meta[:, 0], meta[:, 1:3], meta[:, 3]


@numba.njit(cache=True, nogil=True)
def draw_billboards(
    atlas_albedo: np.ndarray,
    atlas_label: np.ndarray,
    level_info: np.ndarray,
    scale: np.ndarray,
    left: np.ndarray,
    top: np.ndarray,
    depth: np.ndarray,
    indoor: np.ndarray,
    out_albedo: np.ndarray,
    out_label: np.ndarray,
    out_depth: np.ndarray,
    out_indoor: np.ndarray,
) -> None:
    """Paint D billboards in the given order (far to near) into the (H, W[, 4]) output buffers.

    Billboard d uses the level texture `level_info[d]` = (offset, rows, cols); its texel (i, j) centre lands on
    screen at (left + (j + 0.5)·scale - 0.5, top + (i + 0.5)·scale - 0.5), pixel centres at integers.
    Labels are point-sampled (transparent texels leave the pixel alone); albedo is bilinear.
    """
    height, width = out_label.shape
    for d in range(scale.shape[0]):
        offset, rows, cols = level_info[d, 0], level_info[d, 1], level_info[d, 2]
        s = scale[d]
        x0 = max(int(np.floor(left[d])), 0)
        x1 = min(int(np.ceil(left[d] + cols * s)) + 1, width)
        y0 = max(int(np.floor(top[d])), 0)
        y1 = min(int(np.ceil(top[d] + rows * s)) + 1, height)
        for y in range(y0, y1):
            fy = (y + 0.5 - top[d]) / s - 0.5  # continuous source row of this pixel centre
            i = int(np.floor(fy + 0.5))
            if i < 0 or i >= rows:
                continue
            i0 = min(max(int(np.floor(fy)), 0), rows - 1)
            i1 = min(i0 + 1, rows - 1)
            wy = min(max(fy - np.floor(fy), 0.0), 1.0) if fy >= 0 else 0.0
            for x in range(x0, x1):
                fx = (x + 0.5 - left[d]) / s - 0.5
                j = int(np.floor(fx + 0.5))
                if j < 0 or j >= cols:
                    continue
                lab = atlas_label[offset + i * cols + j]
                if lab == _TRANSPARENT:
                    continue
                j0 = min(max(int(np.floor(fx)), 0), cols - 1)
                j1 = min(j0 + 1, cols - 1)
                wx = min(max(fx - np.floor(fx), 0.0), 1.0) if fx >= 0 else 0.0
                a00 = offset + i0 * cols + j0
                a01 = offset + i0 * cols + j1
                a10 = offset + i1 * cols + j0
                a11 = offset + i1 * cols + j1
                for c in range(4):
                    top_mix = atlas_albedo[a00, c] * (1 - wx) + atlas_albedo[a01, c] * wx
                    bottom_mix = atlas_albedo[a10, c] * (1 - wx) + atlas_albedo[a11, c] * wx
                    out_albedo[y, x, c] = top_mix * (1 - wy) + bottom_mix * wy
                out_label[y, x] = lab
                out_depth[y, x] = depth[d]
                out_indoor[y, x] = indoor[d]
