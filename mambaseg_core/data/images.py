"""Reading image and label PNGs exactly as the official loaders do, with errors that name the file.

- DSEC images: PIL + `ToTensor` → float32 (3, H, W) in [0, 1] (uint8 / 255, no mean/std).
- DDD17 images: PIL + `Grayscale()` (PIL's RGB → L conversion) + `ToTensor` → float32 (1, H, W).
- DSEC labels: `np.array(PIL.Image.open(path))`; DDD17 labels: `cv2.imread(path, 0)`.
The two label readers differ only for non-grayscale PNGs; each dataset uses its official one.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import DatasetError


def _check_size(path: Path, array: np.ndarray, height: int, width: int, what: str) -> None:
    if array.shape[:2] != (height, width):
        got_h, got_w = array.shape[:2]
        raise DatasetError(path, f"{what} must be {width}x{height} (WxH), got {got_w}x{got_h}")


def open_image(path: Path) -> Image.Image:
    """A decoded PIL image; DatasetError naming the file when it is missing or cannot be decoded."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        image = Image.open(path)
        image.load()
    except OSError as err:
        raise DatasetError(path, f"cannot decode image ({err})") from err
    return image


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    # Same arithmetic as torchvision's ToTensor: float32 division by 255.
    return array.astype(np.float32) / np.float32(255)


def read_rgb_image(path: Path, height: int, width: int) -> np.ndarray:
    """An RGB PNG as float32 (3, H, W) in [0, 1]."""
    image = open_image(path)
    if image.mode != "RGB":
        raise DatasetError(path, f"expected an RGB image, got PIL mode {image.mode!r}")
    array = np.asarray(image)
    _check_size(path, array, height, width, "image")
    return _to_unit_float(array).transpose(2, 0, 1).copy()


def read_gray_image(path: Path, height: int, width: int) -> np.ndarray:
    """Any PNG converted to 8-bit luma with PIL, as float32 (1, H, W) in [0, 1]."""
    array = np.asarray(open_image(path).convert("L"))
    _check_size(path, array, height, width, "image")
    return _to_unit_float(array)[None]


def read_label_pil(path: Path, height: int, width: int) -> np.ndarray:
    """A single-channel uint8 label PNG read with PIL (DSEC), as uint8 (H, W)."""
    array = np.asarray(open_image(path))
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DatasetError(path, f"label must be a single-channel 8-bit PNG, got array {array.dtype}{array.shape}")
    _check_size(path, array, height, width, "label")
    return array.copy()


def read_label_cv2(path: Path, height: int, width: int) -> np.ndarray:
    """A label PNG read with `cv2.imread(path, 0)` (DDD17), as uint8 (H, W)."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    array = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if array is None:
        raise DatasetError(path, "cannot decode image")
    _check_size(path, array, height, width, "label")
    return array
