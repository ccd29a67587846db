"""Per-class labelled-pixel counts of a training set, for frequency-based loss weights (`TrainConfig.loss`).

The counts come from a bounded, evenly spaced sample of the un-augmented train set (consecutive samples of a
sequence are near-duplicates, so a few thousand spread-out frames represent it), read through a DataLoader with
the training workers. Whole samples are read: about 2.3 ms each for the 128x96 synthetic data on one core.
The counts are not cached for reuse: the trainer stores the resulting weights in every checkpoint (and writes
class_weights.json to the run directory as a record), so a resume reuses them instead of counting again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.classes import IGNORE_INDEX


def sample_indices(length: int, max_samples: int) -> list[int]:
    """At most `max_samples` indices spread evenly over [0, length), first and last included."""
    if length <= max_samples:
        return list(range(length))
    return sorted(set(np.linspace(0, length - 1, max_samples).round().astype(int).tolist()))


def _labels_only(items: list[dict[str, Any]]) -> list[torch.Tensor]:
    """DataLoader collate: keep only the labels, so workers do not ship images and voxel grids back."""
    return [torch.as_tensor(item["label"]) for item in items]


def count_class_pixels(
    dataset: Dataset,
    num_classes: int,
    max_samples: int,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """(K,) int64 labelled-pixel counts over an evenly spaced sample of `dataset`, and the sample size.

    Items must hold "label" (H, W) integer class ids in [0, K) or 255 (ignored, not counted).
    """
    indices = sample_indices(len(dataset), max_samples)  # type: ignore[arg-type]
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=16,
        num_workers=num_workers,
        collate_fn=_labels_only,
        generator=torch.Generator(),  # a private generator: counting must not advance the global torch RNG
    )
    counts = torch.zeros(num_classes, dtype=torch.int64)
    from tqdm import tqdm

    for labels in tqdm(loader, desc="class frequencies", unit="batch", disable=not progress):
        for label in labels:
            ids = label[label != IGNORE_INDEX].flatten().long()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
                raise ValueError(
                    f"train label holds class id {int(ids.max())} (or {int(ids.min())}) outside [0, {num_classes}) "
                    f"and is not {IGNORE_INDEX}"
                )
            counts += torch.bincount(ids, minlength=num_classes)
    return counts, len(indices)
