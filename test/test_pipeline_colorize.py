"""Palette lookup and overlay math of mambaseg_core.pipeline.colorize."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg_core.data.classes import CLASS_SETS, IGNORE_INDEX
from mambaseg_core.pipeline.colorize import UNLABELED_COLOR, colorize, overlay, palette_lut, to_rgb8


def _ids(rng: np.random.Generator, classes: int, shape=(37, 53)) -> np.ndarray:
    ids = rng.integers(0, classes, shape).astype(np.uint8)
    ids[rng.random(shape) < 0.1] = IGNORE_INDEX
    return ids


@pytest.mark.parametrize("key", sorted(CLASS_SETS))
def test_colorize_looks_up_every_class_and_blacks_out_unlabeled(key):
    palette = CLASS_SETS[key].palette
    ids = _ids(np.random.default_rng(0), len(palette))
    colored = colorize(ids, palette_lut(palette))
    assert colored.shape == (*ids.shape, 3) and colored.dtype == np.uint8
    labeled = ids != IGNORE_INDEX
    np.testing.assert_array_equal(colored[labeled], palette[ids[labeled]])
    assert (colored[~labeled] == UNLABELED_COLOR).all()


def test_ids_beyond_the_palette_are_drawn_as_unlabeled():
    lut = palette_lut(np.array([[10, 20, 30], [40, 50, 60]], np.uint8))
    colored = colorize(np.array([[0, 1, 2, 254]], np.uint8), lut)
    np.testing.assert_array_equal(colored[0], [[10, 20, 30], [40, 50, 60], UNLABELED_COLOR, UNLABELED_COLOR])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_blends_labeled_pixels_and_keeps_unlabeled_ones(alpha):
    rng = np.random.default_rng(1)
    ids = _ids(rng, 6)
    image = rng.integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
    colored = colorize(ids, palette_lut(CLASS_SETS["ddd17"].palette))
    out = overlay(image, colored, ids, alpha)
    expected = np.floor((1 - alpha) * image.astype(np.float64) + alpha * colored + 0.5)
    labeled = ids != IGNORE_INDEX
    diff = np.abs(out[labeled].astype(np.float64) - expected[labeled])
    print(f"alpha {alpha}: max |overlay - round-half-up| = {diff.max()}")
    assert diff.max() <= 1  # OpenCV rounds halves to even
    np.testing.assert_array_equal(out[~labeled], image[~labeled])


def test_overlay_rejects_bad_alpha_and_shapes():
    image = np.zeros((4, 5, 3), np.uint8)
    ids = np.zeros((4, 5), np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, image, ids, 1.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        overlay(image, image, np.zeros((4, 6), np.uint8), 0.5)


def test_palette_lut_validates_the_palette():
    with pytest.raises(ValueError, match="palette"):
        palette_lut(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        palette_lut(np.array([[0, 0, 300]]))


def test_to_rgb8_converts_gray_and_uint16():
    gray16 = np.array([[0, 256, 65535]], np.uint16)
    rgb = to_rgb8(gray16)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 255])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_rgb8(np.zeros((2, 2), np.float32))


def test_overlay_accepts_a_reversed_channel_view():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ids = np.zeros((5, 7), np.uint8)
    rgb = to_rgb8(bgr[:, :, ::-1])
    out = overlay(rgb, colorize(ids, palette_lut(CLASS_SETS["ddd17"].palette)), ids, 0.0)
    np.testing.assert_array_equal(out, bgr[:, :, ::-1])
