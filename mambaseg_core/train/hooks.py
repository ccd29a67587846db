"""Side concerns of the training loop, as detectron2-style hooks: progress, logging, evaluation, checkpoints.

Every hook runs on every rank, because some of them take part in collective operations (the loss
average, the confusion-matrix all-reduce); only rank 0 writes files, TensorBoard events or progress bars.
A hook with `state_dict`/`load_state_dict` is saved in and restored from training checkpoints.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checkpoint import BEST_NAME, atomic_torch_save, periodic_name, prune_checkpoints
from .distributed import all_reduce_sum, get_world_size, is_main_process, synchronize
from .evaluation import evaluate, overlay_panel
from .metrics import render_confusion_png, write_png

if TYPE_CHECKING:
    from .trainer import Trainer


class HookBase:
    """Callbacks around the loop; `self.trainer` is set by `Trainer.register_hooks`."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class ProgressBar(HookBase):
    """A tqdm bar per epoch on rank 0 showing the loss and LR."""

    def __init__(self) -> None:
        self._bar: Any = None

    def before_epoch(self) -> None:
        if not is_main_process():
            return
        from tqdm import tqdm

        t = self.trainer
        done = t.iteration - t.epoch * t.iters_per_epoch
        self._bar = tqdm(
            total=t.iters_per_epoch, initial=done, desc=f"epoch {t.epoch + 1}/{t.epochs}", dynamic_ncols=True
        )

    def after_step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if self.trainer.iteration % 10 == 0:
                self._bar.set_postfix(loss=f"{self.trainer.last_loss.item():.4f}", lr=f"{self.trainer.lr:.3g}")

    def after_epoch(self) -> None:
        self.after_train()

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ScalarLogger(HookBase):
    """Every `every` iterations: the loss averaged over ranks and the LR, to TensorBoard (rank 0)."""

    def __init__(self, every: int):
        self.every = max(1, every)

    def after_step(self) -> None:
        t = self.trainer
        if t.iteration % self.every:
            return
        loss = all_reduce_sum(t.last_loss.detach().float().clone()) / get_world_size()
        t.log_scalar("train/loss", float(loss), t.iteration)
        t.log_scalar("train/lr", t.lr, t.iteration)
        t.log_scalar("train/epoch", t.iteration / t.iters_per_epoch, t.iteration)


class EvalHook(HookBase):
    """Evaluates every configured split after every `every_epochs` epochs and after the last one
    (with `selection_only`, only the selection split before the last evaluation).

    "Best" is picked on `selection_split` (the validation split when one is configured, else the test
    split, which is what the official code does). `metrics.json` in the run dir always holds the history,
    the best epoch and the last epoch.
    """

    def __init__(self, every_epochs: int, selection_split: str, overlay_images: int, selection_only: bool = False):
        self.every_epochs = every_epochs
        self.selection_split = selection_split
        self.selection_only = selection_only  # before the last evaluation, score only the selection split
        self.overlay_images = overlay_images
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.new_best = False

    def after_epoch(self) -> None:
        t = self.trainer
        self.new_best = False
        last = t.epoch + 1 == t.epochs
        if not self.every_epochs or ((t.epoch + 1) % self.every_epochs and not last):
            return
        record: dict[str, Any] = {"epoch": t.epoch + 1, "iteration": t.iteration, "splits": {}}
        for split, loader in t.eval_loaders.items():
            if self.selection_only and not last and split != self.selection_split:
                continue
            metrics, samples = evaluate(
                t.eval_model, loader, t.num_classes, t.device, t.cfg.runtime.precision, self.overlay_images
            )
            record["splits"][split] = metrics.as_dict(t.class_names)
            self._log(split, metrics.miou, metrics.pixel_accuracy, metrics.iou, samples)
            if is_main_process():
                png = render_confusion_png(metrics.confusion, t.class_names)
                write_png(t.run_dir / f"confusion_{split}.png", png)
        self.history.append(record)
        score = record["splits"][self.selection_split]["miou"]
        # ">=" as in the official code: a later epoch with an equal score replaces the best.
        if self.best is None or score >= self.best["splits"][self.selection_split]["miou"]:
            self.best = record
            self.new_best = True
        self._write_summary()

    def _log(self, split: str, miou: float, accuracy: float, iou: np.ndarray, samples: list) -> None:
        t = self.trainer
        t.log_scalar(f"{split}/mIoU", 100 * miou, t.iteration)
        t.log_scalar(f"{split}/pixel_accuracy", 100 * accuracy, t.iteration)
        for name, value in zip(t.class_names, iou, strict=True):
            t.log_scalar(f"{split}/IoU/{name}", 100 * float(value), t.iteration)
        if t.writer is not None:
            for i, sample in enumerate(samples):
                panel = overlay_panel(sample, t.palette)
                t.writer.add_image(f"{split}/overlay_{i}", panel, t.iteration, dataformats="HWC")

    def _write_summary(self) -> None:
        if not is_main_process():
            return
        summary = {
            "selection_split": self.selection_split,
            "best": self.best,
            "last": self.history[-1],
            "history": [{**r, "splits": {s: _brief(m) for s, m in r["splits"].items()}} for r in self.history],
        }
        (self.trainer.run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))

    def after_train(self) -> None:
        if not is_main_process() or self.best is None:
            return
        last = self.history[-1]
        for label, record in (("best", self.best), ("last", last)):
            scores = ", ".join(
                f"{s} mIoU {m['miou']:.2f} acc {m['pixel_accuracy']:.2f}" for s, m in record["splits"].items()
            )
            print(f"[{label} epoch {record['epoch']}] {scores} (best selected on '{self.selection_split}')")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.best = state["history"], state["best"]


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "confusion"}


class CheckpointHook(HookBase):
    """Periodic checkpoints every `every_iters` iterations and/or `every_epochs` epochs and at the end,
    keeping the newest `keep_last`; plus `model_best.pt` whenever `eval_hook` reports a new best.
    """

    def __init__(self, every_iters: int, every_epochs: int, keep_last: int, eval_hook: EvalHook | None):
        self.every_iters = every_iters
        self.every_epochs = every_epochs
        self.keep_last = keep_last
        self.eval_hook = eval_hook
        self._saved_at = -1

    def _save_periodic(self) -> None:
        t = self.trainer
        if self._saved_at == t.iteration:
            return
        state = t.checkpoint_state()  # collective (gathers RNG states): every rank calls it
        if is_main_process():
            atomic_torch_save(state, t.run_dir / periodic_name(t.iteration))
            prune_checkpoints(t.run_dir, self.keep_last)
        self._saved_at = t.iteration
        synchronize()

    def before_train(self) -> None:
        # A resumed run starts exactly at a checkpoint: do not write that one again.
        self._saved_at = self.trainer.iteration if self.trainer.iteration else -1

    def _iteration_due(self) -> bool:
        return bool(self.every_iters) and self.trainer.iteration % self.every_iters == 0

    def after_step(self) -> None:
        # At an epoch end the save waits for after_epoch, so that the checkpoint includes that epoch's
        # evaluation and a resume from it does not repeat or skip the epoch hooks.
        if self._iteration_due() and self.trainer.iteration % self.trainer.iters_per_epoch:
            self._save_periodic()

    def after_epoch(self) -> None:
        t = self.trainer
        if self._iteration_due() or (self.every_epochs and (t.epoch + 1) % self.every_epochs == 0):
            self._save_periodic()
        if self.eval_hook is not None and self.eval_hook.new_best and is_main_process():
            atomic_torch_save(t.model_state(), t.run_dir / BEST_NAME)
        synchronize()

    def after_train(self) -> None:
        if self.trainer.iteration >= self.trainer.max_iter:
            self._save_periodic()


class LossRecorder(HookBase):
    """Keeps every step's loss as a Python float (for tests and short scripted runs)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_step(self) -> None:
        self.losses.append(float(torch.as_tensor(self.trainer.last_loss).item()))


__all__ = ["CheckpointHook", "EvalHook", "HookBase", "LossRecorder", "ProgressBar", "ScalarLogger"]
