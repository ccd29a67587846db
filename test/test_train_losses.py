"""The training loss options (TrainConfig.loss): class weights from label frequencies, weighted CE, OHEM, the
default staying the official plain CE bit for bit, config errors, and the trainer wiring (counting, checkpoint,
resume)."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from test_train_support import (  # noqa: F401 (autouse fixture)
    NUM_CLASSES,
    BlobDataset,
    TinySegNet,
    single_torch_thread,
    tiny_config,
)

from mambaseg_core.config import ConfigError
from mambaseg_core.data.classes import DDD17
from mambaseg_core.train import HookBase, LossRecorder, Trainer
from mambaseg_core.train.checkpoint import resolve_resume
from mambaseg_core.train.class_frequencies import count_class_pixels, sample_indices
from mambaseg_core.train.config import LossConfig, OhemConfig, load_train_config
from mambaseg_core.train.distributed import destroy_distributed, init_distributed
from mambaseg_core.train.losses import SegmentationLoss, build_loss, class_weights_from_counts, ohem_keep_mask

REPO_ROOT = Path(__file__).resolve().parents[1]
IGNORE = 255
FP32_TOL = 1e-6


def _random_batch(seed: int = 0, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (2, K, 6, 7) and labels with ~20 % ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 6, 7, generator=g) * 3
    label = torch.randint(0, classes, (2, 6, 7), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.2] = IGNORE
    return logits, label


# ----------------------------------------------------------------- class weights from label frequencies
def test_counts_and_weights_match_a_hand_computation():
    # 4 classes; class 3 never occurs. Pixel counts: class 0: 8, class 1: 4, class 2: 2 (255 is not counted).
    labels = [
        torch.tensor([[0, 0, 0, 0], [0, 1, 1, IGNORE]]),
        torch.tensor([[0, 0, 0, 1], [1, 2, 2, IGNORE]]),
    ]
    dataset = [{"label": label, "image": torch.zeros(1)} for label in labels]
    counts, samples = count_class_pixels(dataset, num_classes=4, max_samples=10)  # type: ignore[arg-type]
    assert samples == 2 and counts.tolist() == [8, 4, 2, 0]
    # Shares 8/14, 4/14, 2/14; the median of the present classes is 4/14.
    median = class_weights_from_counts(counts, "median_frequency", (0.01, 100.0))
    root = class_weights_from_counts(counts, "inverse_sqrt_frequency", (0.01, 100.0))
    clipped = class_weights_from_counts(counts, "median_frequency", (0.6, 1.5))
    expected_median = torch.tensor([0.5, 1.0, 2.0, 1.0])  # absent class: 1
    expected_root = torch.tensor([math.sqrt(0.5), 1.0, math.sqrt(2.0), 1.0])
    print("median", median.tolist(), "sqrt", root.tolist(), "clipped", clipped.tolist())
    assert median.dtype == torch.float32
    torch.testing.assert_close(median, expected_median, rtol=0, atol=FP32_TOL)
    torch.testing.assert_close(root, expected_root, rtol=0, atol=FP32_TOL)
    torch.testing.assert_close(clipped, torch.tensor([0.6, 1.0, 1.5, 1.0]), rtol=0, atol=FP32_TOL)


def test_counting_uses_a_bounded_evenly_spaced_sample_and_rejects_bad_ids():
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4]
    assert sample_indices(101, 5) == [0, 25, 50, 75, 100]
    dataset = [{"label": torch.full((2, 2), i % 3)} for i in range(101)]
    counts, samples = count_class_pixels(dataset, num_classes=3, max_samples=5)  # type: ignore[arg-type]
    # samples 0, 25, 50, 75, 100 → classes 0, 1, 2, 0, 1, four pixels each
    assert samples == 5 and counts.tolist() == [8, 8, 4]
    with pytest.raises(ValueError, match=r"class id 3 .*outside \[0, 3\)"):
        count_class_pixels([{"label": torch.tensor([[3]])}], num_classes=3, max_samples=5)  # type: ignore[arg-type]


# ----------------------------------------------------------------- the loss itself
def test_disabled_options_are_bit_identical_to_the_old_loss():
    logits, label = _random_batch()
    old = nn.CrossEntropyLoss(ignore_index=IGNORE)(logits, label)
    new = build_loss(LossConfig(), num_classes=5)(logits, label)
    print(f"old {old.item()!r} new {new.item()!r} diff {(old - new).abs().item()}")
    assert torch.equal(old, new)


def test_weighted_ce_equals_torch_and_the_weighted_mean():
    logits, label = _random_batch(seed=1)
    weights = torch.tensor([0.2, 1.0, 3.0, 0.5, 5.0])
    loss = SegmentationLoss(weights)(logits, label)
    reference = F.cross_entropy(logits, label, weight=weights, ignore_index=IGNORE)
    # By hand: sum_i w[y_i] * (-log p_i[y_i]) / sum_i w[y_i] over the labelled pixels.
    valid = label != IGNORE
    nll = -logits.log_softmax(1).gather(1, torch.where(valid, label, 0).unsqueeze(1)).squeeze(1)
    w = weights[torch.where(valid, label, 0)] * valid
    by_hand = (w * nll).sum() / w.sum()
    print(f"loss {loss.item()} torch {reference.item()} by hand {by_hand.item()}")
    assert torch.equal(loss, reference)
    torch.testing.assert_close(loss, by_hand, rtol=FP32_TOL, atol=FP32_TOL)
    assert not torch.allclose(loss, F.cross_entropy(logits, label, ignore_index=IGNORE))  # the weights matter


def _two_class_logits(true_probs: list[float]) -> torch.Tensor:
    """(1, 2, 1, N) logits whose softmax gives class 0 the probabilities `true_probs`."""
    p = torch.tensor(true_probs, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()]).float().view(1, 2, 1, -1)


def test_ohem_keeps_exactly_the_hard_pixels():
    probs = [0.9, 0.2, 0.6, 0.95, 0.5, 0.1]
    logits = _two_class_logits(probs)
    label = torch.tensor([[[0, 0, 0, 0, 0, IGNORE]]])  # the last pixel is hard but unlabelled
    keep = ohem_keep_mask(logits, label, OhemConfig(thresh=0.7, min_kept=0))
    assert keep.flatten().tolist() == [False, True, True, False, True, False]
    # min_kept above the hard count: the min_kept lowest true-class probabilities (0.2, 0.5, 0.6, 0.9).
    keep = ohem_keep_mask(logits, label, OhemConfig(thresh=0.7, min_kept=4))
    assert keep.flatten().tolist() == [True, True, True, False, True, False]
    # min_kept above the labelled count: every labelled pixel.
    keep = ohem_keep_mask(logits, label, OhemConfig(thresh=0.05, min_kept=100))
    assert keep.flatten().tolist() == [True] * 5 + [False]

    # The loss is the mean CE over the kept pixels, and the easy ones get no gradient.
    logits.requires_grad_(True)
    loss = SegmentationLoss(ohem=OhemConfig(thresh=0.7, min_kept=0))(logits, label)
    expected = -torch.log(torch.tensor([0.2, 0.6, 0.5])).mean()
    print(f"OHEM loss {loss.item()} expected {expected.item()}")
    torch.testing.assert_close(loss, expected, rtol=FP32_TOL, atol=FP32_TOL)
    loss.backward()
    assert logits.grad is not None
    grad_per_pixel = logits.grad.abs().sum(1).flatten()
    assert grad_per_pixel[[0, 3, 5]].eq(0).all() and grad_per_pixel[[1, 2, 4]].gt(0).all()


def test_ohem_with_class_weights_is_weighted_ce_on_the_kept_pixels():
    logits, label = _random_batch(seed=2)
    weights = torch.tensor([0.5, 1.0, 2.0, 1.0, 4.0])
    ohem = OhemConfig(thresh=0.3, min_kept=10)
    keep = ohem_keep_mask(logits, label, ohem)
    assert 10 <= int(keep.sum()) < int((label != IGNORE).sum())
    loss = SegmentationLoss(weights, ohem)(logits, label)
    reference = F.cross_entropy(logits, torch.where(keep, label, IGNORE), weight=weights, ignore_index=IGNORE)
    assert torch.equal(loss, reference)


# ----------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("loss.class_weights=balanced", r"loss\.class_weights", "median_frequency"),
        ("loss.class_weights=[1, 2, 3]", r"loss\.class_weights", "has 3 weights.*6 classes"),
        ("loss.class_weights=[1, 1, 1, 1, 1, -1]", r"loss\.class_weights", "finite and > 0"),
        ("loss.class_weight_range=[0, 5]", r"loss\.class_weight_range", "0 < low <= high"),
        ("loss.frequency_samples=0", r"loss\.frequency_samples", ">= 1"),
        ("loss.ohem={thresh: 1.5}", r"loss\.ohem\.thresh", r"\(0, 1\]"),
        ("loss.ohem={min_kept: -1}", r"loss\.ohem\.min_kept", ">= 0"),
        ("loss.weights=1", r"loss\.weights", "unknown key"),
    ],
)
def test_config_errors_name_the_key(override, key, message):
    with pytest.raises(ConfigError, match=rf"'{key}'.*{message}"):
        load_train_config(REPO_ROOT / "config" / "train" / "ddd17.yaml", [override])


def test_defaults_are_plain_ce_and_the_demo_gpu_config_enables_clipped_median_weights():
    for name in ("ddd17.yaml", "dsec.yaml", "synthetic_demo.yaml"):
        assert load_train_config(REPO_ROOT / "config" / "train" / name).loss == LossConfig(None, (0.1, 10.0), 2000)
    demo = load_train_config(REPO_ROOT / "config" / "train" / "synthetic_demo_gpu.yaml").loss
    assert demo.class_weights == "median_frequency" and demo.class_weight_range == (0.2, 5.0) and demo.ohem is None
    explicit = load_train_config(
        REPO_ROOT / "config" / "train" / "ddd17.yaml", ["loss.class_weights=[1, 2, 1, 1, 1, 3]"]
    )
    assert explicit.loss.class_weights == [1.0, 2.0, 1.0, 1.0, 1.0, 3.0]


# ----------------------------------------------------------------- trainer wiring
class _CrashAfterEpoch(HookBase):
    def after_epoch(self) -> None:
        raise KeyboardInterrupt("simulated crash after the first epoch")


def _trainer(cfg, *hooks) -> Trainer:
    torch.manual_seed(0)
    train_set = BlobDataset(16, seed=1, ignore_fraction=0.1)
    return Trainer(
        cfg, TinySegNet(), train_set, {"test": BlobDataset(4, seed=2)}, DDD17.names, DDD17.palette, extra_hooks=hooks
    )


def test_trainer_counts_weights_once_saves_them_and_resume_reuses_them(tmp_path):
    loss = {"class_weights": "median_frequency", "ohem": {"thresh": 0.9, "min_kept": 200}}
    sections = {"loss": loss, "schedule": {"epochs": 2}}
    reference = LossRecorder()
    full = _trainer(tiny_config(tmp_path / "full", **sections), reference)
    full.train()
    labels = full.train_set.labels  # type: ignore[attr-defined]
    counts = torch.bincount(labels[labels != IGNORE], minlength=NUM_CLASSES)
    expected = class_weights_from_counts(counts, "median_frequency", (0.1, 10.0))
    assert full.loss_fn.class_weights is not None
    assert torch.equal(full.loss_fn.class_weights, expected)
    record = json.loads((tmp_path / "full" / "class_weights.json").read_text())
    assert record["pixel_counts"] == counts.tolist() and record["samples"] == 16

    first = LossRecorder()
    with pytest.raises(KeyboardInterrupt):
        _trainer(tiny_config(tmp_path / "split", **sections), first, _CrashAfterEpoch()).train()
    checkpoint = resolve_resume("auto", tmp_path / "split")
    assert checkpoint is not None
    saved = torch.load(checkpoint, weights_only=True)["trainer"]["class_weights"]
    assert torch.equal(saved, expected)

    # The resumed run takes the checkpoint's weights (a planted marker shows no recount happens).
    resumed_cfg = tiny_config(tmp_path / "split", **sections)
    second = LossRecorder()
    resumed = _trainer(resumed_cfg, second)
    resumed.train_set = []  # type: ignore[assignment]  # counting it would fail
    resumed.resume(checkpoint)
    resumed.train()
    print(f"losses uninterrupted {reference.losses}\nlosses resumed      {first.losses + second.losses}")
    assert first.losses + second.losses == reference.losses

    plain = _trainer(tiny_config(tmp_path / "split", schedule={"epochs": 2}))
    with pytest.raises(ValueError, match="class weights are on in the checkpoint but not in the config"):
        plain.resume(checkpoint)


def _ddp_weights(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank of a 2-process gloo run with frequency weights; saves the loss weights this rank trained with."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    assert init_distributed("gloo")
    try:
        cfg = tiny_config(
            Path(out_dir) / "run",
            loss={"class_weights": "inverse_sqrt_frequency"},
            runtime={"max_iters": 1, "eval_every_epochs": 0},
            checkpoint={"every_epochs": 0},
        )
        trainer = _trainer(cfg)
        trainer.train()
        torch.save(trainer.loss_fn.class_weights, Path(out_dir) / f"weights_{rank}.pt")
    finally:
        destroy_distributed()


def test_ddp_ranks_train_with_rank_0s_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_weights, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    labels = BlobDataset(16, seed=1, ignore_fraction=0.1).labels
    counts = torch.bincount(labels[labels != IGNORE], minlength=NUM_CLASSES)
    expected = class_weights_from_counts(counts, "inverse_sqrt_frequency", (0.1, 10.0))
    for rank in range(2):
        weights = torch.load(tmp_path / f"weights_{rank}.pt", weights_only=True)
        print(f"rank {rank} weights {weights.tolist()}")
        assert torch.equal(weights, expected)
