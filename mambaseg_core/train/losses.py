"""The training loss: cross-entropy over the labelled pixels (255 = ignore), optionally class-weighted and with
online hard example mining (OHEM), as configured by `TrainConfig.loss`.

With both options off it is exactly the official `nn.CrossEntropyLoss(ignore_index=255)`: the mean over this
rank's labelled pixels (under DDP each rank averages its own batch, as before). Class weights turn it into the
weighted mean `sum_i w[y_i] * ce_i / sum_i w[y_i]` (torch's `F.cross_entropy(weight=...)`); OHEM drops the easy
pixels from both sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.classes import IGNORE_INDEX
from .config import LossConfig, OhemConfig

# class_weights method → exponent p of (median frequency / class frequency) ** p
FREQUENCY_WEIGHT_POWERS = {"median_frequency": 1.0, "inverse_sqrt_frequency": 0.5}


def class_weights_from_counts(counts: torch.Tensor, method: str, weight_range: tuple[float, float]) -> torch.Tensor:
    """(K,) labelled-pixel counts per class → (K,) float32 loss weights.

    `median_frequency` (Eigen & Fergus): w_c = median_f / f_c, f_c = count_c / total and the median over the
    classes that occur; `inverse_sqrt_frequency`: w_c = sqrt(median_f / f_c), a milder balance. Both give the
    median class weight 1 and are clipped to `weight_range`, so that a rare class cannot dominate the gradient.
    A class absent from the counts gets weight 1: no training label holds it, so the weight never applies.
    """
    if method not in FREQUENCY_WEIGHT_POWERS:
        raise ValueError(f"unknown class weight method {method!r}; known: {sorted(FREQUENCY_WEIGHT_POWERS)}")
    counts = counts.to(torch.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled pixel in the counted train samples: cannot compute class weights")
    frequency = counts / counts.sum()
    median = frequency[present].median()  # the lower middle value for an even number of classes
    weights = torch.ones_like(frequency)
    weights[present] = (median / frequency[present]) ** FREQUENCY_WEIGHT_POWERS[method]
    return weights.clamp(*weight_range).to(torch.float32)


def ohem_keep_mask(
    logits: torch.Tensor, label: torch.Tensor, ohem: OhemConfig, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(B, H, W) bool: the labelled pixels whose true-class probability is < `ohem.thresh`, or, when fewer than
    `ohem.min_kept` are, the `min_kept` labelled pixels of lowest true-class probability (all if fewer).

    logits (B, K, H, W) float, label (B, H, W) int64. No gradient flows through the selection.
    """
    with torch.no_grad():
        labelled = label != ignore_index
        target = torch.where(labelled, label, 0).unsqueeze(1)
        true_prob = logits.softmax(dim=1).gather(1, target).squeeze(1)  # (B, H, W)
        keep = labelled & (true_prob < ohem.thresh)
        wanted = min(ohem.min_kept, int(labelled.sum()))
        if int(keep.sum()) >= wanted:
            return keep
        # The hardest `wanted` labelled pixels (a superset of `keep`, which holds only lower probabilities).
        scores = torch.where(labelled, true_prob, torch.inf).flatten()
        hardest = torch.zeros_like(scores, dtype=torch.bool)
        hardest[scores.topk(wanted, largest=False).indices] = True
        return hardest.view_as(labelled)


class SegmentationLoss(nn.Module):
    """Per-pixel cross-entropy, mean over the counted pixels of the batch.

    Args:
        class_weights: (K,) float weights, or None for unweighted CE. A buffer, so `.to(device)` moves it; the
            trainer may set it after construction (weights counted from the train set or restored on resume).
        ohem: hard-example mining settings, or None to count every labelled pixel.
    forward: logits (B, K, H, W) float, label (B, H, W) int64 (255 = ignore) → scalar loss.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        ohem: OhemConfig | None = None,
        ignore_index: int = IGNORE_INDEX,
    ):
        super().__init__()
        self.register_buffer("class_weights", class_weights)
        self.ohem = ohem
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.ohem is not None:
            keep = ohem_keep_mask(logits, label, self.ohem, self.ignore_index)
            label = torch.where(keep, label, self.ignore_index)
        return F.cross_entropy(logits, label, weight=self.class_weights, ignore_index=self.ignore_index)


def build_loss(cfg: LossConfig, num_classes: int) -> SegmentationLoss:
    """The loss of `cfg`; frequency-based class weights are left unset here (see `Trainer.prepare_class_weights`)."""
    weights = None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != num_classes:
            raise ValueError(f"loss.class_weights has {len(cfg.class_weights)} weights for {num_classes} classes")
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    return SegmentationLoss(weights, cfg.ohem)


def format_class_weights(names: Sequence[str], counts: torch.Tensor, weights: torch.Tensor) -> str:
    """A small text table: class, share of the counted labelled pixels, loss weight."""
    shares = counts.to(torch.float64) / max(int(counts.sum()), 1)
    rows = [
        f"  {name:<14} {100 * float(s):7.3f} %  weight {float(w):.3f}" for name, s, w in zip(names, shares, weights)
    ]
    return "\n".join(rows)
