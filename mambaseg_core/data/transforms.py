"""Joint train-time augmentation: RandomScale → RandomCrop(back to the input size) → HorizontalFlip.

Re-states MambaSeg's albumentations 1.0.0 `ReplayCompose` pipeline (spec §4) with cv2 directly:
- RandomScale: `cv2.resize` to `(int(H*s), int(W*s))`, INTER_LINEAR for the image and for every event bin
  (each bin resized on its own, as the official replay does), INTER_NEAREST for the label, so the label
  keeps only values it already had.
- RandomCrop: top-left corner `(int((H'-h)*u), int((W'-w)*v))` with u, v ~ U[0, 1).
- HorizontalFlip with probability 0.5.
The same `AugmentParams` are applied to image, label and events. Random numbers come from a
`numpy.random.Generator` (the official code draws from Python's global `random`, so the streams differ;
the distributions and the applied geometry are the same). Evaluation uses no augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class AugmentParams:
    """One sampled augmentation: scale factor, crop corner as fractions of the free range, and flip."""

    scale: float
    crop_top_fraction: float
    crop_left_fraction: float
    flip: bool


@dataclass(frozen=True)
class JointAugment:
    """Scale by s ~ U[scale_range], crop (crop_height, crop_width), flip with `flip_probability`."""

    crop_height: int
    crop_width: int
    scale_range: tuple[float, float]
    flip_probability: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if low < 1:
            # A crop back to the input size needs the scaled image to be at least that large.
            raise ValueError(f"scale_range must not shrink below the crop size (low >= 1), got {self.scale_range}")

    def sample(self, rng: np.random.Generator) -> AugmentParams:
        low, high = self.scale_range
        return AugmentParams(
            scale=float(rng.uniform(low, high)),
            crop_top_fraction=float(rng.random()),
            crop_left_fraction=float(rng.random()),
            flip=bool(rng.random() < self.flip_probability),
        )

    def __call__(
        self, params: AugmentParams, image: np.ndarray, label: np.ndarray, events: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply `params` to image (C, H, W) float32, label (H, W) uint8 and events (B, H, W) float32.

        Returns the same three arrays at (crop_height, crop_width).
        """
        height, width = label.shape
        if image.shape[1:] != (height, width) or events.shape[1:] != (height, width):
            raise ValueError(f"image {image.shape}, label {label.shape} and events {events.shape} must share H and W")
        image_hwc = self._geometry(image.transpose(1, 2, 0), params, cv2.INTER_LINEAR)
        label_out = self._geometry(label, params, cv2.INTER_NEAREST)
        event_bins = [self._geometry(bin_, params, cv2.INTER_LINEAR) for bin_ in events]
        return (
            np.ascontiguousarray(image_hwc.transpose(2, 0, 1)),
            np.ascontiguousarray(label_out),
            np.ascontiguousarray(np.stack(event_bins)),
        )

    def _geometry(self, array: np.ndarray, params: AugmentParams, interpolation: int) -> np.ndarray:
        """Scale, crop and flip one (H, W) or (H, W, C) array."""
        height, width = array.shape[:2]
        new_height, new_width = int(height * params.scale), int(width * params.scale)
        if (new_height, new_width) != (height, width):
            resized = cv2.resize(array, (new_width, new_height), interpolation=interpolation)
            array = resized.reshape(new_height, new_width, *array.shape[2:])  # cv2 drops a single channel axis
        if new_height < self.crop_height or new_width < self.crop_width:
            raise ValueError(
                f"scaled size {new_height}x{new_width} is smaller than the crop {self.crop_height}x{self.crop_width}"
            )
        top = int((new_height - self.crop_height) * params.crop_top_fraction)
        left = int((new_width - self.crop_width) * params.crop_left_fraction)
        array = array[top : top + self.crop_height, left : left + self.crop_width]
        return array[:, ::-1] if params.flip else array


DSEC_TRAIN_AUGMENT = JointAugment(crop_height=440, crop_width=640, scale_range=(1.02, 1.20))
"""MambaSeg's DSEC train pipeline: `RandomScale((0.02, 0.2))`, `RandomCrop(440, 640)`, `HorizontalFlip(0.5)`."""

DDD17_TRAIN_AUGMENT = JointAugment(crop_height=200, crop_width=346, scale_range=(1.0, 1.8))
"""MambaSeg's DDD17 train pipeline: `RandomScale((0, 0.8))`, `RandomCrop(200, 346)`, `HorizontalFlip(0.5)`."""

AugmentOption = JointAugment | None | Literal["official"]
"""How a dataset augments: an explicit pipeline, none, or "official" (the preset for the train split only)."""


def augment_rng(generator: torch.Generator | None = None) -> np.random.Generator:
    """A numpy generator seeded from torch's RNG (`generator`, or the global one).

    Drawing the seed from torch makes augmentation follow `torch.manual_seed` in the main process and the
    per-worker seeds a DataLoader sets, so workers never repeat each other's parameters.
    """
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def make_sample(
    image: np.ndarray,
    label: np.ndarray,
    events: np.ndarray,
    augment: JointAugment | None,
    generator: torch.Generator | None,
    **meta: Any,
) -> dict[str, Any]:
    """A dataset sample: optionally one joint augmentation (fresh parameters from `generator`), then tensors
    `events` float32 (B, H, W), `image` float32 (C, H, W), `label` int64 (H, W), plus the `meta` entries."""
    if augment is not None:
        image, label, events = augment(augment.sample(augment_rng(generator)), image, label, events)
    return {
        "events": torch.from_numpy(np.ascontiguousarray(events)),
        "image": torch.from_numpy(np.ascontiguousarray(image)),
        "label": torch.from_numpy(label.astype(np.int64)),
        **meta,
    }
