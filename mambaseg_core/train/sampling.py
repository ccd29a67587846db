"""Deterministic, resumable data order and per-sample augmentation.

Exact resume needs the batch sequence and every augmentation to be a pure function of
(seed, epoch, dataset index), independent of worker processes and of where the run restarted:
- `ResumableDistributedSampler` is a DistributedSampler (epoch-seeded permutation, rank-strided shard)
  that can start `skip` samples into its shard and yields `SampleKey(index, epoch)`;
- `AugmentedDataset` seeds a numpy Generator from (seed, epoch, index) for each training sample, so the
  same sample gets the same augmentation on any rank, worker or resumed run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class SampleKey(NamedTuple):
    """A training item: dataset `position` (the int index) in `epoch`."""

    position: int
    epoch: int


class Augment(Protocol):
    """`data.transforms.JointAugment`'s interface: draw parameters, then apply them to all three arrays."""

    def sample(self, rng: np.random.Generator) -> Any: ...

    def __call__(
        self, params: Any, image: np.ndarray, label: np.ndarray, events: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler over this rank's shard that yields `SampleKey`s and can start mid-shard.

    Call `set_epoch(e)` and `set_start(n)` before creating the DataLoader iterator; `n` samples of this
    rank's shard for epoch `e` are skipped (n = consumed batches × per-rank batch size).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        # drop_last: no padding duplicates, and the union of the ranks' first k batches is the same prefix of
        # the epoch's permutation for any rank count, so N GPUs see exactly the batches of one GPU.
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        self.start = start

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start :]
        return iter([SampleKey(int(i), self.epoch) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler[int]):
    """Evaluation order: indices rank, rank + world, ... with no padding, so no pixel is counted twice."""

    def __init__(self, length: int, num_replicas: int, rank: int):
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def unpack_sample(sample: Mapping[str, Any] | tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (C, H, W) float32, events (bins, H, W) float32, label (H, W) int64) from a dataset item."""
    if isinstance(sample, Mapping):
        try:
            image, events, label = sample["image"], sample["events"], sample["label"]
        except KeyError as exc:
            raise KeyError(f"a dataset sample must hold 'image', 'events' and 'label'; missing {exc}") from None
    else:
        image, events, label = sample
    return torch.as_tensor(image), torch.as_tensor(events), torch.as_tensor(label)


class AugmentedDataset(Dataset):
    """Wraps a dataset and applies `augment` to every item with a (seed, epoch, index)-seeded RNG.

    Training keys are `SampleKey`s; evaluation keys are plain ints (seeded from (seed, index)), used with
    a deterministic transform or none.

    Items are dicts {"image", "events", "label", "index"} so that batches collate into dicts of tensors.
    """

    def __init__(self, base: Dataset, augment: Augment | None, seed: int):
        self.base = base
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor | int]:
        index, epoch = (key.position, key.epoch) if isinstance(key, SampleKey) else (int(key), None)
        image, events, label = unpack_sample(self.base[index])
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, index] if epoch is None else [self.seed, epoch, index])
            image_np, label_np, events_np = self.augment(
                self.augment.sample(rng),
                image.numpy(),
                label.numpy().astype(np.uint8),
                events.numpy(),
            )
            image, events = torch.from_numpy(image_np), torch.from_numpy(events_np)
            label = torch.from_numpy(label_np.astype(np.int64))
        return {"image": image.float(), "events": events.float(), "label": label.long(), "index": index}
