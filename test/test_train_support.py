"""Shared scaffolding for the training tests (no tests here): a tiny stand-in model, an in-memory dataset,
and a TrainConfig builder. The real model and datasets are exercised in test_train_cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from mambaseg_core.train.config import TrainConfig, load_train_config

NUM_CLASSES = 6
HEIGHT, WIDTH = 16, 24


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Run with one intra-op thread: on a busy 2-core machine two spinning OpenMP threads made the tiny
    MambaSeg steps ~20x slower (measured 0.3 s vs 8 s CPU per step). Import this into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinySegNet(nn.Module):
    """image (B, 1, H, W) + events (B, 4, H, W) → logits (B, 6, H, W); no BatchNorm, no randomness."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1 + 4, 8, 3, padding=1)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, *, image: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(torch.cat([image, events], dim=1))))


class BlobDataset(Dataset):
    """Deterministic samples whose label is a function of the image, so a model can learn it.

    `ignore_fraction` of the label pixels are 255.
    """

    def __init__(self, length: int, seed: int = 0, ignore_fraction: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(length, 1, HEIGHT, WIDTH, generator=g)
        self.events = torch.randn(length, 4, HEIGHT, WIDTH, generator=g)
        self.labels = (self.images[:, 0] * NUM_CLASSES).long().clamp_max(NUM_CLASSES - 1)
        if ignore_fraction:
            self.labels[torch.rand(self.labels.shape, generator=g) < ignore_fraction] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "events": self.events[index], "label": self.labels[index]}


def tiny_config(run_dir: Path, **sections: dict[str, Any]) -> TrainConfig:
    """A CPU config for the stand-in model: fp32, no workers, no TensorBoard or progress bars."""
    data: dict[str, Any] = {
        "data": {"dataset": "ddd17", "root": "unused", "batch_size": 4, "eval_batch_size": 4, "num_workers": 0},
        "optim": {"lr": 1e-2},
        "schedule": {"epochs": 2},
        "logging": {"tensorboard": False, "progress_bar": False, "overlay_images": 0},
        "runtime": {"seed": 3, "device": "cpu", "output_dir": str(run_dir.parent), "run_name": run_dir.name},
        "checkpoint": {"every_epochs": 1, "keep_last": 2},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return load_train_config(data)
