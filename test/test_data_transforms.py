"""Joint augmentation (official RandomScale → RandomCrop → HorizontalFlip) and the class tables."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mambaseg_core.data.classes import CLASS_SETS, DSEC19_TO_DSEC11, IGNORE_INDEX
from mambaseg_core.data.transforms import (
    DDD17_TRAIN_AUGMENT,
    DSEC_TRAIN_AUGMENT,
    AugmentParams,
    JointAugment,
)


def _sample_arrays(rng: np.random.Generator, height: int, width: int, channels: int, bins: int = 10):
    image = rng.random((channels, height, width), dtype=np.float32)
    label = rng.choice(np.array([0, 3, 7, IGNORE_INDEX], np.uint8), size=(height, width))
    events = rng.normal(size=(bins, height, width)).astype(np.float32)
    return image, label, events


def _albumentations_literal(array: np.ndarray, params: AugmentParams, crop: tuple[int, int], nearest: bool):
    """albumentations 1.0.0, re-stated: F.scale → F.random_crop → HorizontalFlip, one (H, W[, C]) array."""
    height, width = array.shape[:2]
    new_h, new_w = int(height * params.scale), int(width * params.scale)
    if (new_h, new_w) != (height, width):
        interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        array = cv2.resize(array, dsize=(new_w, new_h), interpolation=interpolation).reshape(
            new_h, new_w, *array.shape[2:]
        )
    y1 = int((new_h - crop[0]) * params.crop_top_fraction)
    x1 = int((new_w - crop[1]) * params.crop_left_fraction)
    array = array[y1 : y1 + crop[0], x1 : x1 + crop[1]]
    return np.ascontiguousarray(array[:, ::-1]) if params.flip else array


@pytest.mark.parametrize("augment, channels", [(DSEC_TRAIN_AUGMENT, 3), (DDD17_TRAIN_AUGMENT, 1)])
def test_matches_albumentations_restatement_channel_by_channel(augment: JointAugment, channels: int):
    rng = np.random.default_rng(0)
    image, label, events = _sample_arrays(rng, augment.crop_height, augment.crop_width, channels)
    for seed in range(3):
        params = augment.sample(np.random.default_rng(seed))
        out_image, out_label, out_events = augment(params, image, label, events)
        crop = (augment.crop_height, augment.crop_width)
        expected_image = _albumentations_literal(image.transpose(1, 2, 0), params, crop, nearest=False).transpose(
            2, 0, 1
        )
        expected_label = _albumentations_literal(label, params, crop, nearest=True)
        expected_events = np.stack([_albumentations_literal(b, params, crop, nearest=False) for b in events])
        print("params", params, "max diff", np.abs(out_events - expected_events).max())
        np.testing.assert_array_equal(out_image, expected_image)
        np.testing.assert_array_equal(out_label, expected_label)
        np.testing.assert_array_equal(out_events, expected_events)
        assert out_image.shape == (channels, *crop) and out_events.shape == (10, *crop) and out_label.shape == crop


def test_flip_only_mirrors_every_input_identically():
    rng = np.random.default_rng(1)
    image, label, events = _sample_arrays(rng, 440, 640, 3)
    params = AugmentParams(scale=1.0, crop_top_fraction=0.0, crop_left_fraction=0.0, flip=True)
    augment = JointAugment(440, 640, (1.0, 1.0))
    out_image, out_label, out_events = augment(params, image, label, events)
    np.testing.assert_array_equal(out_image, image[:, :, ::-1])
    np.testing.assert_array_equal(out_label, label[:, ::-1])
    np.testing.assert_array_equal(out_events, events[:, :, ::-1])


def test_scale_zooms_all_inputs_around_the_same_content():
    # A bright square in image, label and every event bin must land on the same pixels after zoom + crop.
    image = np.zeros((3, 200, 346), np.float32)
    label = np.zeros((200, 346), np.uint8)
    events = np.zeros((10, 200, 346), np.float32)
    image[:, 80:120, 150:200] = 1.0
    label[80:120, 150:200] = 5
    events[:, 80:120, 150:200] = 2.0
    params = AugmentParams(scale=1.5, crop_top_fraction=0.5, crop_left_fraction=0.25, flip=True)
    out_image, out_label, out_events = DDD17_TRAIN_AUGMENT(params, image, label, events)
    inside = out_label == 5
    near = cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    print("square size", inside.sum())
    # Zoom 1.5: the 40x50 square becomes about 60x75 (the crop keeps it whole here).
    assert abs(int(inside.sum()) - 60 * 75) <= 2 * (60 + 75)
    assert np.all(out_image[0][inside] > 0.5) and np.all(out_events[:, inside] > 1.0)
    assert np.all(out_image[0][~near] == 0) and np.all(out_events[:, ~near] == 0)


def test_label_keeps_only_its_own_values_under_scale():
    rng = np.random.default_rng(2)
    image, label, events = _sample_arrays(rng, 440, 640, 3)
    for seed in range(5):
        _, out_label, _ = DSEC_TRAIN_AUGMENT(
            DSEC_TRAIN_AUGMENT.sample(np.random.default_rng(seed)), image, label, events
        )
        assert set(np.unique(out_label)) <= {0, 3, 7, IGNORE_INDEX}


def test_sampled_parameters_follow_the_official_ranges():
    rng = np.random.default_rng(3)
    samples = [DSEC_TRAIN_AUGMENT.sample(rng) for _ in range(400)]
    scales = np.array([s.scale for s in samples])
    flips = np.array([s.flip for s in samples])
    assert scales.min() >= 1.02 and scales.max() <= 1.20
    assert 0.4 < flips.mean() < 0.6
    ddd17 = [DDD17_TRAIN_AUGMENT.sample(rng).scale for _ in range(200)]
    assert min(ddd17) >= 1.0 and max(ddd17) <= 1.8 and max(ddd17) > 1.6


def test_invalid_configuration_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="scale_range"):
        JointAugment(10, 10, (0.9, 1.1))
    image, label, events = _sample_arrays(np.random.default_rng(4), 20, 30, 3)
    with pytest.raises(ValueError, match="share H and W"):
        JointAugment(20, 30, (1.0, 1.2))(AugmentParams(1.0, 0, 0, False), image, label[:10], events)


def test_class_sets_and_19_to_11_mapping():
    assert {k: cs.num_classes for k, cs in CLASS_SETS.items()} == {"dsec11": 11, "dsec19": 19, "ddd17": 6}
    for cs in CLASS_SETS.values():
        assert cs.palette.shape == (cs.num_classes, 3) and cs.palette.dtype == np.uint8
        assert len(set(map(tuple, cs.palette))) == cs.num_classes, f"{cs.key}: palette colours must differ"
    # Same class name → same colour across the 19- and 11-class palettes (e.g. road, car).
    names11 = CLASS_SETS["dsec11"].names
    for k19, name in enumerate(CLASS_SETS["dsec19"].names):
        k11 = int(DSEC19_TO_DSEC11[k19])
        assert k11 < 11
        if name in names11:
            assert k11 == names11.index(name)
            np.testing.assert_array_equal(CLASS_SETS["dsec19"].palette[k19], CLASS_SETS["dsec11"].palette[k11])
    assert DSEC19_TO_DSEC11[IGNORE_INDEX] == IGNORE_INDEX and DSEC19_TO_DSEC11[19] == IGNORE_INDEX
    assert [int(DSEC19_TO_DSEC11[k]) for k in (10, 11, 12, 13, 18)] == [0, 3, 3, 8, 8]
