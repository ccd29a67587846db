"""Class-id masks to pictures: palette lookup and alpha overlay (numpy + OpenCV, no torch, no ROS).

Conventions: class ids are uint8 (H, W) with `IGNORE_INDEX` (255) = unlabeled; pictures are uint8
RGB (H, W, 3). Unlabeled pixels are drawn in `UNLABELED_COLOR` in the colored mask and are left
untouched (the plain image) in the overlay.
"""

from __future__ import annotations

import cv2
import numpy as np

from mambaseg_core.data.classes import IGNORE_INDEX

UNLABELED_COLOR = (0, 0, 0)


def palette_lut(palette: np.ndarray) -> np.ndarray:
    """A (256, 3) uint8 lookup table from a (K, 3) palette; ids >= K (incl. 255) map to `UNLABELED_COLOR`."""
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= palette.shape[0] <= IGNORE_INDEX:
        raise ValueError(f"palette must be (K, 3) with 1 <= K <= {IGNORE_INDEX}, got shape {palette.shape}")
    if palette.min() < 0 or palette.max() > 255:
        raise ValueError("palette entries must be in 0..255")
    lut = np.empty((256, 3), np.uint8)
    lut[:] = UNLABELED_COLOR
    lut[: palette.shape[0]] = palette
    return lut


def colorize(class_ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class ids -> (H, W, 3) uint8 RGB via a `palette_lut` table."""
    if class_ids.dtype != np.uint8 or class_ids.ndim != 2:
        raise ValueError(f"class_ids must be uint8 (H, W), got {class_ids.dtype} {class_ids.shape}")
    # cv2.LUT on the id replicated to 3 channels is ~6x faster than numpy fancy indexing.
    return cv2.LUT(cv2.merge([class_ids, class_ids, class_ids]), lut.reshape(1, 256, 3))


def overlay(image_rgb: np.ndarray, colored: np.ndarray, class_ids: np.ndarray, alpha: float) -> np.ndarray:
    """Blend `colored` over `image_rgb`: round((1 - alpha)·image + alpha·colored); unlabeled pixels keep the image.

    image_rgb, colored: (H, W, 3) uint8; class_ids: (H, W) uint8. OpenCV rounds halves to even, so a
    pixel can differ by 1 from round-half-up arithmetic.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image_rgb.shape != colored.shape or image_rgb.shape[:2] != class_ids.shape:
        raise ValueError(
            f"shape mismatch: image {image_rgb.shape}, colored {colored.shape}, class_ids {class_ids.shape}"
        )
    blended = cv2.addWeighted(image_rgb, 1.0 - alpha, colored, alpha, 0.0)
    # Masked copy in OpenCV: ~15x faster than numpy boolean indexing at 640x480.
    cv2.copyTo(image_rgb, (class_ids == IGNORE_INDEX).view(np.uint8), blended)
    return blended


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 3) uint8/uint16 image as (H, W, 3) uint8 RGB for display (uint16 keeps the top byte)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)  # OpenCV needs C order (e.g. after a BGR -> RGB view)
    raise ValueError(f"image must be (H, W) or (H, W, 3), got {image.shape}")


def render_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (H, W, 3) uint8 RGB picture of events: white background, ON (p=1) blue, OFF red, by net polarity per
    pixel, saturating at 4 events; events outside the frame are ignored."""
    x = np.asarray(x).astype(np.int64)
    y = np.asarray(y).astype(np.int64)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    signed = np.where(np.asarray(p)[inside] == 1, 1.0, -1.0)
    net = np.bincount(y[inside] * width + x[inside], weights=signed, minlength=height * width).reshape(height, width)
    strength = np.clip(np.abs(net) / 4.0, 0.0, 1.0)
    picture = np.full((height, width, 3), 255.0)
    on, off = net > 0, net < 0
    picture[on] = 255.0 - strength[on, None] * np.array([255.0, 155.0, 0.0])  # towards (0, 100, 255)
    picture[off] = 255.0 - strength[off, None] * np.array([0.0, 215.0, 215.0])  # towards (255, 40, 40)
    return picture.round().astype(np.uint8)
