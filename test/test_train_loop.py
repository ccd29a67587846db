"""The trainer on a stand-in model: the loss goes down, resume is bit-exact, hooks and schedules behave."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_support import BlobDataset, TinySegNet, single_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

from mambaseg_core.data.classes import DDD17
from mambaseg_core.train import HookBase, LossRecorder, Trainer
from mambaseg_core.train.checkpoint import periodic_checkpoints, resolve_resume
from mambaseg_core.train.schedules import LRFactor


class _Crash(HookBase):
    """Simulates a crash (e.g. a killed job) once iteration `at` has finished and been checkpointed:
    after the step mid-epoch, after the epoch's evaluation and checkpoint at an epoch end."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self) -> None:
        if self.trainer.iteration == self.at and self.at % self.trainer.iters_per_epoch:
            raise KeyboardInterrupt(f"simulated crash at iteration {self.at}")

    def after_epoch(self) -> None:
        if self.trainer.iteration == self.at:
            raise KeyboardInterrupt(f"simulated crash at the end of epoch {self.trainer.epoch + 1}")


def _trainer(cfg, *hooks, train_len=16, augment=None) -> Trainer:
    torch.manual_seed(0)
    return Trainer(
        cfg,
        TinySegNet(),
        BlobDataset(train_len, seed=1, ignore_fraction=0.1),
        {"test": BlobDataset(8, seed=2)},
        DDD17.names,
        DDD17.palette,
        augment=augment,
        extra_hooks=hooks,
    )


def test_loss_goes_down_and_reports_best_and_last(tmp_path):
    cfg = tiny_config(tmp_path / "run", schedule={"epochs": 10}, optim={"lr": 5e-2})
    recorder = LossRecorder()
    trainer = _trainer(cfg, recorder)
    trainer.train()
    first, last = np.mean(recorder.losses[:4]), np.mean(recorder.losses[-4:])
    print(f"loss first 4 steps {first:.4f}, last 4 steps {last:.4f}")
    assert len(recorder.losses) == 10 * 4
    assert last < 0.75 * first
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["selection_split"] == "test"
    assert summary["last"]["epoch"] == 10 and 1 <= summary["best"]["epoch"] <= 10
    assert (tmp_path / "run" / "model_best.pt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "confusion_test.png").is_file()
    # keep_last=2: only the two newest of the ten per-epoch checkpoints remain.
    assert [p.name for p in periodic_checkpoints(tmp_path / "run")] == [
        "checkpoint_00000036.pt",
        "checkpoint_00000040.pt",
    ]


class _Augment:
    """A random flip + additive image noise, to check that augmentation draws survive a resume."""

    def sample(self, rng):
        return bool(rng.random() < 0.5), float(rng.normal())

    def __call__(self, params, image, label, events):
        flip, shift = params
        if flip:
            image, label, events = image[..., ::-1], label[..., ::-1], events[..., ::-1]
        return (image + 0.1 * shift).astype(np.float32).copy(), label.copy(), events.copy()


@pytest.mark.parametrize("crash_at", [6, 8], ids=["mid-epoch", "epoch-end"])
@pytest.mark.parametrize("ema", [None, {"decay": 0.9}], ids=["no-ema", "ema"])
def test_resume_is_bit_exact(tmp_path, crash_at, ema):
    """Crash after `crash_at` of 12 iterations (4 per epoch), resume from the checkpoint: identical run."""
    sections = {"schedule": {"epochs": 3, "policy": "poly", "warmup_iters": 3}, "checkpoint": {"every_iters": 2}}
    if ema:
        sections["ema"] = ema
    reference = LossRecorder()
    full = _trainer(tiny_config(tmp_path / "full", **sections), reference, train_len=17, augment=_Augment())
    full.train()

    first = LossRecorder()
    crashing = _trainer(
        tiny_config(tmp_path / "split", **sections), first, _Crash(crash_at), train_len=17, augment=_Augment()
    )
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    checkpoint = resolve_resume("auto", tmp_path / "split")
    assert checkpoint is not None and checkpoint.name == f"checkpoint_{crash_at:08d}.pt"
    # A different initial global RNG state must not matter: resume restores it.
    torch.manual_seed(12345)
    second = LossRecorder()
    resumed = _trainer(tiny_config(tmp_path / "split", **sections), second, train_len=17, augment=_Augment())
    resumed.resume(checkpoint)
    assert resumed.iteration == crash_at
    resumed.train()

    losses = first.losses + second.losses
    print(f"losses uninterrupted {reference.losses}\nlosses resumed      {losses}")
    assert losses == reference.losses
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        print(name, "max diff", (a - b).abs().max().item())
        assert torch.equal(a, b), name
    opt_a, opt_b = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for k in opt_a["state"]:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a["state"][k][field], opt_b["state"][k][field])
    assert full.scheduler.state_dict()["last_epoch"] == resumed.scheduler.state_dict()["last_epoch"] == 12
    assert full.lr == resumed.lr
    if ema:
        for a, b in zip(full.ema.module.state_dict().values(), resumed.ema.module.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    hist_a = json.loads((tmp_path / "full" / "metrics.json").read_text())["history"]
    hist_b = json.loads((tmp_path / "split" / "metrics.json").read_text())["history"]
    assert hist_a == hist_b


def test_lr_factors():
    warm = LRFactor("fixed", total_iters=100, warmup_iters=10, warmup_factor=0.1)
    assert warm(0) == pytest.approx(0.1) and warm(5) == pytest.approx(0.55) and warm(10) == 1.0 and warm(99) == 1.0
    poly = LRFactor("poly", total_iters=100, poly_power=1.0)
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5) and poly(100) == 0.0
    cosine = LRFactor("cosine", total_iters=100, min_lr_ratio=0.1)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.55) and cosine(100) == pytest.approx(0.1)


def test_official_recipe_defaults():
    """The TrainConfig defaults are the official optimiser: AdamW(2e-4, (0.9, 0.999), 1e-8, wd 0.01), fixed LR."""
    from mambaseg_core.train.config import TrainConfig

    cfg = TrainConfig()
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.eps, cfg.optim.weight_decay) == (2e-4, (0.9, 0.999), 1e-8, 0.01)
    assert cfg.schedule.policy == "fixed" and cfg.schedule.warmup_iters == 0 and cfg.schedule.epochs == 60
    assert cfg.runtime.precision == "fp32" and cfg.optim.grad_clip_norm is None and cfg.ema is None


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_batches_union_to_the_single_process_batches(world):
    """Global batch 6 over `world` ranks: step k of all ranks together = step k of one process (15 samples)."""
    from mambaseg_core.train.sampling import ResumableDistributedSampler

    dataset = list(range(15))
    single = ResumableDistributedSampler(dataset, 1, 0, seed=5)
    single.set_epoch(3)
    order = [key.position for key in single]
    shards = []
    for rank in range(world):
        sampler = ResumableDistributedSampler(dataset, world, rank, seed=5)
        sampler.set_epoch(3)
        shards.append([key.position for key in sampler])
    per_rank = 6 // world
    for step in range(15 // 6):
        together = sorted(i for shard in shards for i in shard[step * per_rank : (step + 1) * per_rank])
        assert together == sorted(order[step * 6 : (step + 1) * 6])
    # A mid-epoch start skips exactly the consumed samples of this rank.
    sampler = ResumableDistributedSampler(dataset, world, 0, seed=5)
    sampler.set_epoch(3)
    sampler.set_start(per_rank)
    assert [key.position for key in sampler] == shards[0][per_rank:]


@pytest.mark.parametrize("eval_splits", ["all", "selection"])
def test_eval_splits_selection_scores_other_splits_only_at_the_end(tmp_path, eval_splits):
    cfg = tiny_config(
        tmp_path / "run",
        data={"val_split": "val", "test_split": "test"},
        schedule={"epochs": 3},
        runtime={"eval_splits": eval_splits},
    )
    torch.manual_seed(0)
    eval_sets = {"val": BlobDataset(8, seed=4), "test": BlobDataset(8, seed=2)}
    Trainer(cfg, TinySegNet(), BlobDataset(16, seed=1), eval_sets, DDD17.names, DDD17.palette).train()
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    scored = [sorted(record["splits"]) for record in history]
    print(eval_splits, scored)
    every_epoch = ["test", "val"] if eval_splits == "all" else ["val"]
    assert scored == [every_epoch, every_epoch, ["test", "val"]]
