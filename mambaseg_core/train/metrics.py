"""Segmentation metrics from one confusion matrix accumulated over a whole split (the official protocol).

- Pixels whose label is `ignore_index` (255) are skipped.
- IoU_k = TP / (TP + FP + FN); a class with no label and no prediction pixel has IoU 0 and still counts
  in mIoU, which is the plain mean over all K classes (data.md §5 "Metrics").
- Pixel accuracy = trace / number of counted pixels.
Across DDP ranks the matrices are summed before any ratio is taken (`ConfusionMatrix.all_reduce`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .distributed import all_reduce_sum


@dataclass(frozen=True)
class SegmentationMetrics:
    """Ratios in [0, 1]; `confusion[t, p]` counts pixels of true class t predicted as p."""

    confusion: np.ndarray  # (K, K) int64
    iou: np.ndarray  # (K,) float64
    miou: float
    pixel_accuracy: float

    def as_dict(self, class_names: tuple[str, ...] | None = None) -> dict:
        """JSON-ready: mIoU and accuracy in % (as the paper reports them), per-class IoU in %, the raw matrix."""
        names = class_names or tuple(str(k) for k in range(len(self.iou)))
        return {
            "miou": 100.0 * self.miou,
            "pixel_accuracy": 100.0 * self.pixel_accuracy,
            "per_class_iou": {name: 100.0 * float(v) for name, v in zip(names, self.iou, strict=True)},
            "pixels": int(self.confusion.sum()),
            "confusion": self.confusion.tolist(),
        }


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix from integer predictions and labels."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add prediction (B, H, W) and label (B, H, W) class ids; labels outside 0..K-1 other than ignore fail."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} must match")
        label = label.to(self.matrix.device).reshape(-1).long()
        prediction = prediction.to(self.matrix.device).reshape(-1).long()
        keep = label != self.ignore_index
        label, prediction = label[keep], prediction[keep]
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.num_classes):
            raise ValueError(f"label holds ids outside 0..{self.num_classes - 1} and {self.ignore_index}")
        k = self.num_classes
        self.matrix += torch.bincount(label * k + prediction, minlength=k * k).reshape(k, k)

    def all_reduce(self) -> None:
        """Sum the matrices of all DDP ranks (no-op in one process)."""
        all_reduce_sum(self.matrix)

    def compute(self) -> SegmentationMetrics:
        return metrics_from_confusion(self.matrix.cpu().numpy())


def metrics_from_confusion(confusion: np.ndarray) -> SegmentationMetrics:
    """IoU per class, mIoU over all K classes and pixel accuracy from a (K, K) matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    iou = np.divide(true_positive, union, out=np.zeros_like(true_positive), where=union > 0)
    total = confusion.sum()
    accuracy = float(true_positive.sum() / total) if total else 0.0
    return SegmentationMetrics(confusion=confusion, iou=iou, miou=float(iou.mean()), pixel_accuracy=accuracy)


def write_png(path: Path, image: np.ndarray) -> None:
    """cv2.imwrite that fails loudly (it returns False instead of raising)."""
    import cv2

    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def render_confusion_png(confusion: np.ndarray, class_names: tuple[str, ...], cell: int = 48) -> np.ndarray:
    """A BGR uint8 image of the row-normalised confusion matrix (rows = true class), for cv2.imwrite."""
    import cv2  # only the reports need OpenCV; training on a bare GPU image does not

    k = len(class_names)
    rows = confusion.sum(1, keepdims=True).astype(np.float64)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    margin = 8 + 8 * max(len(n) for n in class_names)
    size = (margin + k * cell + 8, margin + k * cell + 8)
    image = np.full((*size, 3), 255, np.uint8)
    heat = cv2.applyColorMap((normalised * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    image[margin : margin + k * cell, margin : margin + k * cell] = cv2.resize(
        heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST
    )
    font = cv2.FONT_HERSHEY_SIMPLEX
    for t in range(k):
        for p in range(k):
            colour = (0, 0, 0) if normalised[t, p] > 0.6 else (255, 255, 255)
            origin = (margin + p * cell + 4, margin + t * cell + cell // 2 + 4)
            cv2.putText(image, f"{normalised[t, p]:.2f}", origin, font, 0.35, colour, 1, cv2.LINE_AA)
    for i, name in enumerate(class_names):
        cv2.putText(image, name, (4, margin + i * cell + cell // 2 + 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    # Column labels are written rotated: draw on a transposed strip, then rotate it into place.
    strip = np.full((k * cell, margin, 3), 255, np.uint8)
    for p, name in enumerate(class_names):
        cv2.putText(strip, name, (4, p * cell + cell // 2 + 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    image[:margin, margin : margin + k * cell] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image
