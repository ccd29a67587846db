"""runtime.max_minutes: whole epochs fit into a wall-clock budget (on a fake clock); an overrun stops the run."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_support import BlobDataset, TinySegNet, single_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

from mambaseg_core.config import ConfigError
from mambaseg_core.data.classes import DDD17
from mambaseg_core.train import HookBase, Trainer
from mambaseg_core.train.checkpoint import periodic_checkpoints

SECONDS_PER_STEP = 5.0


class FakeClock(HookBase):
    """The trainer's clock: start-up (before the first step) takes `startup_s`, every optimiser step takes
    SECONDS_PER_STEP, everything else takes no time."""

    def __init__(self, startup_s: float = 0.0) -> None:
        self.now = 1000.0
        self.startup_s = startup_s

    def __call__(self) -> float:
        return self.now

    def before_train(self) -> None:
        self.now += self.startup_s

    def after_step(self) -> None:
        self.now += SECONDS_PER_STEP


def budget_trainer(tmp_path, max_minutes: float, epochs: int = 20, startup_s: float = 0.0) -> Trainer:
    cfg = tiny_config(
        tmp_path / "run",
        schedule={"epochs": epochs, "policy": "cosine", "min_lr_ratio": 0.1},
        runtime={"max_minutes": max_minutes},
    )
    clock = FakeClock(startup_s)
    torch.manual_seed(0)
    trainer = Trainer(
        cfg, TinySegNet(), BlobDataset(16, seed=1), {"test": BlobDataset(8, seed=2)}, DDD17.names, DDD17.palette,
        extra_hooks=[clock],
    )  # fmt: skip
    trainer.clock = clock
    return trainer


def test_whole_epochs_fit_and_the_lr_decay_completes(tmp_path):
    # 4 steps per epoch = 20 s. After epoch 1: 40 s left, one more epoch fits with half an epoch in reserve.
    trainer = budget_trainer(tmp_path, max_minutes=1.0)
    assert (trainer.iters_per_epoch, trainer.max_iter) == (4, 80)
    trainer.train()
    lr_ratio = trainer.lr / trainer.cfg.optim.lr
    print(f"stopped at iteration {trainer.iteration} after {trainer.epochs} epochs, final LR ratio {lr_ratio:.4f}")
    assert (trainer.iteration, trainer.epochs, trainer.max_iter) == (8, 2, 8)
    assert lr_ratio == pytest.approx(0.1, abs=1e-9)  # the cosine reached min_lr_ratio at the new end
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [record["epoch"] for record in summary["history"]] == [1, 2]
    assert (tmp_path / "run" / "model_best.pt").is_file()


def test_start_up_time_does_not_count_as_pace(tmp_path):
    # 40 s of start-up, then 20 s epochs, in 120 s: three epochs fit (100 s); a pace that counted the start-up
    # (60 s for the first epoch) would plan a single epoch.
    trainer = budget_trainer(tmp_path, max_minutes=2.0, startup_s=40.0)
    trainer.train()
    print(f"stopped at iteration {trainer.iteration} after {trainer.epochs} epochs")
    assert (trainer.iteration, trainer.epochs) == (12, 3)


def test_an_ample_budget_neither_shortens_nor_lengthens_the_run(tmp_path):
    trainer = budget_trainer(tmp_path, max_minutes=100.0, epochs=3)
    trainer.train()
    assert (trainer.iteration, trainer.epochs) == (12, 3)
    assert trainer.lr / trainer.cfg.optim.lr == pytest.approx(0.1, abs=1e-9)


def test_an_overrun_stops_mid_epoch_and_keeps_a_checkpoint(tmp_path):
    # 15 s budget: the third step of the first epoch uses it up.
    trainer = budget_trainer(tmp_path, max_minutes=0.25)
    trainer.train()
    print(f"stopped at iteration {trainer.iteration}")
    assert trainer.iteration == 3
    assert [path.name for path in periodic_checkpoints(tmp_path / "run")] == ["checkpoint_00000003.pt"]


@pytest.mark.parametrize("bad", [0, -1.5])
def test_a_non_positive_budget_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path / "run", runtime={"max_minutes": bad})
    print(info.value)
    assert info.value.key == "runtime.max_minutes"
