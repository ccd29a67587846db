"""The training loop: a short `run_step`, epochs of a resumable sampler, and hooks for everything else.

One process or many (torchrun + DistributedDataParallel) run the same code: `data.batch_size` is the
global batch, split evenly over the ranks, so N GPUs follow the same recipe as one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..config import to_dict
from ..models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from ..models.checkpoint import VERSION as CHECKPOINT_VERSION
from .checkpoint import capture_rng_state, restore_rng_state, seed_everything
from .class_frequencies import count_class_pixels
from .config import TrainConfig
from .distributed import (
    all_gather_object,
    broadcast_object,
    get_local_rank,
    get_rank,
    get_world_size,
    is_main_process,
)
from .ema import ModelEma
from .evaluation import autocast_context
from .hooks import CheckpointHook, EvalHook, HookBase, ProgressBar, ScalarLogger
from .losses import build_loss, class_weights_from_counts, format_class_weights
from .sampling import Augment, AugmentedDataset, ResumableDistributedSampler, ShardSampler
from .schedules import build_scheduler, set_horizon


def resolve_device(name: str) -> torch.device:
    """'auto' → this rank's GPU if CUDA is available, else CPU; 'cuda' → this rank's GPU; else as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", get_local_rank())
    return torch.device(name)


class Trainer:
    """Trains `model` on `train_set` with the optimiser, schedule, precision and hooks of `cfg`.

    Args:
        model: takes `image` (B, C, H, W) and `events` (B, bins, H, W) keywords, returns logits (B, K, H, W).
        train_set / eval_sets: datasets whose items hold image, events and label (H, W) int64 (255 = ignore).
            `eval_sets` maps split names (e.g. "val", "test") to datasets, evaluated after each epoch.
        class_names / palette: K names and a (K, 3) uint8 RGB palette for reports and overlays.
        augment: joint train-time augmentation (None for none), seeded per sample.
        eval_transform: deterministic transform for the eval sets (None: full frames, the official protocol).
        model_config: plain dict stored in checkpoints so that they rebuild the model on their own.
        extra_hooks: appended after the default hooks.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train_set: Dataset,
        eval_sets: Mapping[str, Dataset],
        class_names: Sequence[str],
        palette: Any,
        augment: Augment | None = None,
        eval_transform: Augment | None = None,
        model_config: dict[str, Any] | None = None,
        extra_hooks: Sequence[HookBase] = (),
    ):
        self.cfg = cfg
        self.rank, self.world_size = get_rank(), get_world_size()
        self.device = resolve_device(cfg.runtime.device)
        self.run_dir = Path(cfg.run_dir)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.palette = palette
        self.model_config = model_config
        # Different streams per rank (dropout, drop-path); restored exactly on resume.
        seed_everything(cfg.runtime.seed + self.rank, cfg.runtime.deterministic)

        if self.world_size > 1 and cfg.runtime.sync_batchnorm and self.device.type == "cuda":
            # BN statistics over the global batch, as on one GPU (the decoder has a BatchNorm).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.ddp_model: nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.model.train()

        self.train_set = train_set
        self.per_rank_batch = self._per_rank_batch(cfg.data.batch_size)
        self.sampler = ResumableDistributedSampler(train_set, self.world_size, self.rank, seed=cfg.runtime.seed)
        self.train_loader = self._loader(AugmentedDataset(train_set, augment, cfg.runtime.seed), self.per_rank_batch)
        self.iters_per_epoch = len(self.sampler) // self.per_rank_batch
        if self.iters_per_epoch == 0:
            raise ValueError(
                f"the train split has {len(self.sampler)} samples per rank, "
                f"fewer than one batch of {self.per_rank_batch}"
            )
        self.epochs = cfg.schedule.epochs
        self.max_iter = self.epochs * self.iters_per_epoch
        if cfg.runtime.max_iters is not None:
            self.max_iter = min(self.max_iter, cfg.runtime.max_iters)
        self.eval_loaders = {
            split: self._loader(
                AugmentedDataset(dataset, eval_transform, cfg.runtime.seed),
                cfg.data.eval_batch_size,
                ShardSampler(len(dataset), self.world_size, self.rank),  # type: ignore[arg-type]
                drop_last=False,
            )
            for split, dataset in eval_sets.items()
        }

        # One parameter group with weight decay on everything, as the official code does.
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.optim.lr,
            betas=cfg.optim.betas,
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.max_iter)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.runtime.precision == "fp16")
        self.ema = ModelEma(self.model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema is not None else None
        self.loss_fn = build_loss(cfg.loss, self.num_classes).to(self.device)

        self.iteration = 0
        self.epoch = 0
        self.clock: Callable[[], float] = time.monotonic  # seconds; the runtime.max_minutes budget reads it
        self._started_at = 0.0  # clock() when train() began: the budget covers one call
        self._pace_mark: tuple[float, int] | None = None  # (clock(), iteration) after this call's first step
        self.last_loss = torch.zeros(())
        self.writer: Any = None
        self.hooks: list[HookBase] = []
        self.register_hooks(self._default_hooks(eval_sets))
        self.register_hooks(extra_hooks)

    # ----------------------------------------------------------------- setup helpers
    def _per_rank_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ValueError(
                f"data.batch_size {global_batch} (the global batch) must be divisible by the {self.world_size} ranks"
            )
        return global_batch // self.world_size

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Any = None, drop_last: bool = True) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler if sampler is None else sampler,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            # A private generator: creating loader iterators must not advance the global torch RNG,
            # or a resumed run would drift from an uninterrupted one.
            generator=torch.Generator(),
        )

    def _default_hooks(self, eval_sets: Mapping[str, Dataset]) -> list[HookBase]:
        cfg = self.cfg
        hooks: list[HookBase] = []
        if cfg.logging.progress_bar:
            hooks.append(ProgressBar())
        hooks.append(ScalarLogger(cfg.logging.log_every_iters))
        eval_hook = None
        if eval_sets and cfg.runtime.eval_every_epochs:
            selection = cfg.data.val_split if cfg.data.val_split is not None else cfg.data.test_split
            if selection not in eval_sets:
                raise ValueError(f"the selection split {selection!r} is not among the eval sets {sorted(eval_sets)}")
            eval_hook = EvalHook(
                cfg.runtime.eval_every_epochs,
                selection,
                cfg.logging.overlay_images,
                selection_only=cfg.runtime.eval_splits == "selection",
            )
            hooks.append(eval_hook)
        ck = cfg.checkpoint
        hooks.append(CheckpointHook(ck.every_iters, ck.every_epochs, ck.keep_last, eval_hook if ck.save_best else None))
        return hooks

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    # ----------------------------------------------------------------- properties used by hooks
    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and kept as "best": the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    # ----------------------------------------------------------------- the loop
    def train(self) -> None:
        """Run from `self.iteration` (0, or where `resume` left off) to `max_iter`, which a runtime.max_minutes
        budget re-plans at every epoch end (`_fit_to_budget`)."""
        self._started_at, self._pace_mark = self.clock(), None
        self._open_run_dir()
        self.prepare_class_weights()
        for hook in self.hooks:
            hook.before_train()
        try:
            while self.iteration < self.max_iter:
                done = self.begin_epoch()
                for hook in self.hooks:
                    hook.before_epoch()
                for _ in range(done, self.iters_per_epoch):
                    if self.iteration >= self.max_iter:
                        break
                    self.run_step()
                    self.iteration += 1
                    for hook in self.hooks:
                        hook.after_step()
                    self._check_budget_after_step()
                if self.iteration % self.iters_per_epoch == 0:
                    self._fit_to_budget()  # before the hooks, so that the evaluation knows whether this epoch is last
                    for hook in self.hooks:
                        hook.after_epoch()
        finally:
            for hook in self.hooks:
                hook.after_train()
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    def begin_epoch(self) -> int:
        """Position the data stream at `self.iteration`; return the iterations already done in this epoch."""
        self.epoch, done = divmod(self.iteration, self.iters_per_epoch)
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(done * self.per_rank_batch)  # mid-epoch resume skips the consumed batches
        self._batches = iter(self.train_loader)
        return done

    def run_step(self) -> None:
        """One optimiser step on the next batch: forward, loss (`losses.SegmentationLoss`), backward, (clip), step,
        LR, EMA."""
        assert self.ddp_model.training, "the model was left in eval mode"
        batch = next(self._batches)
        image = batch["image"].to(self.device, non_blocking=True)
        events = batch["events"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        with autocast_context(self.device, self.cfg.runtime.precision):
            logits = self.ddp_model(image=image, events=events)
        loss = self.loss_fn(logits.float(), label)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.last_loss = loss.detach()

    def prepare_class_weights(self) -> None:
        """Count the train labels' class frequencies and set the loss weights, when loss.class_weights names a
        method and no resumed checkpoint already set them. Rank 0 counts (inside the time budget); every rank
        gets the same weights. The counts and weights are printed and written to class_weights.json."""
        cfg = self.cfg.loss
        if not isinstance(cfg.class_weights, str) or self.loss_fn.class_weights is not None:
            return
        counted: tuple[list[int], int] | None = None
        if is_main_process():
            print(f"class weights ({cfg.class_weights}): counting the train labels", flush=True)
            counts, samples = count_class_pixels(
                self.train_set,
                self.num_classes,
                cfg.frequency_samples,
                self.cfg.data.num_workers,
                self.cfg.logging.progress_bar,
            )
            counted = (counts.tolist(), samples)
        counts_list, samples = broadcast_object(counted)
        counts = torch.tensor(counts_list, dtype=torch.int64)
        weights = class_weights_from_counts(counts, cfg.class_weights, cfg.class_weight_range)
        self.loss_fn.class_weights = weights.to(self.device)
        if is_main_process():
            print(
                f"class weights from {samples} of {len(self.train_set)} train samples (evenly spaced), clipped to "  # type: ignore[arg-type]
                f"{list(cfg.class_weight_range)}:\n" + format_class_weights(self.class_names, counts, weights),
                flush=True,
            )
            record = {
                "method": cfg.class_weights,
                "samples": samples,
                "weight_range": list(cfg.class_weight_range),
                "classes": list(self.class_names),
                "pixel_counts": counts_list,
                "weights": weights.tolist(),
            }
            (self.run_dir / "class_weights.json").write_text(json.dumps(record, indent=1) + "\n")

    # ----------------------------------------------------------------- wall-clock budget (runtime.max_minutes)
    def _fit_to_budget(self) -> None:
        """At an epoch end: plan the whole epochs that fit in the rest of the budget at the pace so far.

        The pace is the wall time per epoch since this call's first step (start-up excluded; evaluations and
        checkpoints included), and half an epoch stays in reserve for the final evaluation of every split. The
        plan may shrink or grow as the pace changes, within schedule.epochs and runtime.max_iters; the LR
        schedule's horizon follows it, so that the decay completes at the planned end. Rank 0 decides.
        """
        if self.cfg.runtime.max_minutes is None or self._pace_mark is None:
            return
        now, budget = self.clock(), 60.0 * self.cfg.runtime.max_minutes
        mark_time, mark_iteration = self._pace_mark
        if self.iteration > mark_iteration:
            pace = (now - mark_time) * self.iters_per_epoch / (self.iteration - mark_iteration)
        else:  # one-step epochs: nothing measured since the mark yet
            pace = now - self._started_at
        left = budget - (now - self._started_at)
        more = max(0, int(left / max(pace, 1e-9) - 0.5))
        epochs = int(broadcast_object(min(self.cfg.schedule.epochs, self.iteration // self.iters_per_epoch + more)))
        max_iter = epochs * self.iters_per_epoch
        if self.cfg.runtime.max_iters is not None:
            max_iter = min(max_iter, self.cfg.runtime.max_iters)
        if is_main_process():
            change = "" if max_iter == self.max_iter else f", was {self.max_iter}"
            print(
                f"time budget: epoch {self.iteration // self.iters_per_epoch} done, {pace:.1f} s per epoch "
                f"({self.iters_per_epoch / pace:.1f} it/s), {left:.0f} s of {budget:.0f} s left; the run ends after "
                f"epoch {epochs} (iteration {max_iter}{change})",
                flush=True,
            )
        if (epochs, max_iter) != (self.epochs, self.max_iter):
            self.epochs, self.max_iter = epochs, max_iter
            set_horizon(self.scheduler, max_iter)

    def _check_budget_after_step(self) -> None:
        """Mark where the pace is measured from (this call's first step) and, as a safety net when an epoch
        overruns the plan, end the run once the budget is spent (the unfinished epoch is not evaluated;
        model_best.pt stays the best evaluated so far)."""
        if self.cfg.runtime.max_minutes is None:
            return
        now = self.clock()
        if self._pace_mark is None:
            self._pace_mark = (now, self.iteration)
        spent = now - self._started_at >= 60.0 * self.cfg.runtime.max_minutes
        if broadcast_object(spent) and self.iteration < self.max_iter:
            if is_main_process():
                print(f"time budget: {self.cfg.runtime.max_minutes} min spent, stopping at iteration {self.iteration}")
            self.max_iter = self.iteration

    def _open_run_dir(self) -> None:
        if not is_main_process():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        if self.cfg.logging.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.iteration)

    # ----------------------------------------------------------------- checkpoints
    def model_state(self) -> dict[str, Any]:
        """The evaluated weights in the `models.save_checkpoint` layout, so `load_model` reads the file."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model_config": self.model_config,
            "state_dict": self.eval_model.state_dict(),
            "epoch": self.iteration // self.iters_per_epoch,
        }

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to resume exactly. Collective under DDP: gathers every rank's RNG state."""
        rng_states = all_gather_object(capture_rng_state())
        hook_states = {
            f"{i}:{type(h).__name__}": h.state_dict() for i, h in enumerate(self.hooks) if hasattr(h, "state_dict")
        }
        return {
            **self.model_state(),
            "state_dict": self.model.state_dict(),  # the live weights; the EMA copy is in trainer.ema
            "trainer": {
                "iteration": self.iteration,
                "world_size": self.world_size,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "class_weights": None if self.loss_fn.class_weights is None else self.loss_fn.class_weights.cpu(),
                "rng": rng_states,
                "hooks": hook_states,
                "config": to_dict(self.cfg),
            },
        }

    def resume(self, path: str | Path) -> None:
        """Restore model, optimiser, scheduler, scaler, EMA, loss class weights, hooks, iteration and this rank's
        RNG state."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "trainer" not in state:
            raise ValueError(f"{path}: a model-only checkpoint (no 'trainer' state); cannot resume from it")
        trainer = state["trainer"]
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.scaler.load_state_dict(trainer["scaler"])
        if (self.ema is None) != (trainer["ema"] is None):
            raise ValueError(
                f"{path}: EMA is {'on' if trainer['ema'] else 'off'} in the checkpoint but not in the config"
            )
        if self.ema is not None:
            self.ema.load_state_dict(trainer["ema"])
        class_weights = trainer.get("class_weights")  # absent from checkpoints older than loss.class_weights
        if (class_weights is None) != (self.cfg.loss.class_weights is None):
            raise ValueError(
                f"{path}: loss class weights are {'on' if class_weights is not None else 'off'} in the checkpoint "
                "but not in the config"
            )
        if class_weights is not None:  # the run's own weights, not a recount or an edited list
            self.loss_fn.class_weights = class_weights.to(self.device)
        for i, hook in enumerate(self.hooks):
            key = f"{i}:{type(hook).__name__}"
            if hasattr(hook, "load_state_dict") and key in trainer["hooks"]:
                hook.load_state_dict(trainer["hooks"][key])
        self.iteration = int(trainer["iteration"])
        if trainer["world_size"] == self.world_size:
            restore_rng_state(trainer["rng"][self.rank])
        else:
            # Another GPU count: the data order stays exact (it depends only on seed and epoch), but
            # per-rank random streams cannot be mapped; reseed them from the iteration.
            seed_everything(self.cfg.runtime.seed + self.rank + 1000 * self.iteration, self.cfg.runtime.deterministic)
