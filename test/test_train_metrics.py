"""Confusion-matrix metrics against hand-computed values, and the confusion-matrix PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaseg_core.train.metrics import ConfusionMatrix, metrics_from_confusion, render_confusion_png


def test_matches_hand_computed_confusion_with_ignore_and_absent_class():
    # 3 classes; class 2 never appears in the labels and is predicted only on an ignored pixel.
    label = torch.tensor([[[0, 0, 1], [1, 255, 0]]])
    prediction = torch.tensor([[[0, 1, 1], [0, 2, 0]]])
    cm = ConfusionMatrix(3)
    cm.update(prediction, label)
    expected = np.array([[2, 1, 0], [1, 1, 0], [0, 0, 0]])
    assert np.array_equal(cm.matrix.numpy(), expected)
    metrics = cm.compute()
    # IoU_0 = 2 / (2 + 1 + 1); IoU_1 = 1 / (1 + 1 + 1); IoU_2 = 0 (absent, still averaged); acc = 3 / 5.
    expected_iou = np.array([0.5, 1 / 3, 0.0])
    print("max IoU diff", np.abs(metrics.iou - expected_iou).max())
    np.testing.assert_allclose(metrics.iou, expected_iou, rtol=0, atol=1e-12)
    assert metrics.miou == pytest.approx((0.5 + 1 / 3) / 3, abs=1e-12)
    assert metrics.pixel_accuracy == pytest.approx(0.6, abs=1e-12)
    report = metrics.as_dict(("a", "b", "c"))
    assert report["miou"] == pytest.approx(100 * (0.5 + 1 / 3) / 3) and report["pixels"] == 5
    assert report["per_class_iou"]["c"] == 0.0


def test_accumulates_over_batches_like_one_big_matrix():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (6, 7, 9), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.2] = 255
    prediction = torch.randint(0, 5, (6, 7, 9), generator=g)
    whole, parts = ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(prediction, label)
    for i in range(6):
        parts.update(prediction[i : i + 1], label[i : i + 1])
    assert torch.equal(whole.matrix, parts.matrix)
    valid = label != 255
    assert int(whole.matrix.sum()) == int(valid.sum())
    assert whole.compute().pixel_accuracy == pytest.approx(float((prediction[valid] == label[valid]).float().mean()))


def test_rejects_out_of_range_labels_and_shape_mismatch():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="must match"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))


def test_empty_matrix_gives_zeros():
    metrics = metrics_from_confusion(np.zeros((4, 4), np.int64))
    assert metrics.miou == 0.0 and metrics.pixel_accuracy == 0.0


def test_confusion_png_renders():
    image = render_confusion_png(np.array([[5, 1], [0, 3]]), ("road", "car"))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] == image.shape[1] > 2 * 48
