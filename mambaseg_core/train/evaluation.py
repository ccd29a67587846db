"""One pass over an evaluation split: argmax of the full-resolution logits into one confusion matrix.

Used by the per-epoch evaluation hook and by `mambaseg-eval`. Under DDP each rank sees its own shard
(`sampling.ShardSampler`) and the matrices are summed before any ratio is computed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .metrics import ConfusionMatrix, SegmentationMetrics

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """`torch.autocast` for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    keep_samples: int = 0,
    progress: bool = False,
) -> tuple[SegmentationMetrics, list[dict[str, np.ndarray]]]:
    """Metrics over every batch of `loader` (all ranks combined) and up to `keep_samples` examples of this rank.

    Batches are dicts with image (B, C, H, W), events (B, bins, H, W), label (B, H, W). Each kept example
    is {"image": (C, H, W) float32, "prediction": (H, W) int64, "label": (H, W) int64} as numpy arrays.
    """
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(num_classes, device=device)
    kept: list[dict[str, np.ndarray]] = []
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True)
    try:
        for batch in batches:
            image = batch["image"].to(device, non_blocking=True)
            events = batch["events"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            with autocast_context(device, precision):
                logits = model(image=image, events=events)
            prediction = logits.argmax(dim=1)
            confusion.update(prediction, label)
            for i in range(min(keep_samples - len(kept), image.shape[0])):
                kept.append(
                    {
                        "image": image[i].float().cpu().numpy(),
                        "prediction": prediction[i].cpu().numpy(),
                        "label": label[i].cpu().numpy(),
                    }
                )
    finally:
        model.train(was_training)
    confusion.all_reduce()
    return confusion.compute(), kept


def overlay_panel(sample: dict[str, np.ndarray], palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, 2W, 3) uint8 RGB: the image blended with the coloured prediction, beside the coloured label.

    Ignored label pixels (255) are drawn black.
    """
    image = sample["image"]
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb_u8 = (np.clip(rgb.transpose(1, 2, 0), 0.0, 1.0) * 255).astype(np.uint8)
    lookup = np.zeros((256, 3), np.uint8)
    lookup[: len(palette)] = palette
    prediction = lookup[sample["prediction"].clip(0, 255)]
    label = lookup[sample["label"].clip(0, 255)]
    blended = (alpha * rgb_u8 + (1 - alpha) * prediction).astype(np.uint8)
    return np.concatenate([blended, label], axis=1)
