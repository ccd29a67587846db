"""The typed training config: one dataclass per concern, loaded with `mambaseg_core.config.load_config`.

Defaults are the official MambaSeg recipe (spec model.md §6) where one exists; every YAML in
`config/train/` comments each key. `TrainConfig.VERSION` is bumped whenever a key changes meaning.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import ConfigError, load_config


@dataclass
class AugmentConfig:
    """Joint RandomScale → RandomCrop(model image size) → HorizontalFlip on the training split only."""

    scale_range: tuple[float, float] = (1.0, 1.8)
    flip_probability: float = 0.5


@dataclass
class SplitConfig:
    """A DSEC split made of chosen sequences of one split folder (e.g. a validation split carved from train/)."""

    folder: Literal["train", "test"] = "train"
    sequences: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.sequences:
            raise ConfigError("sequences", "must list at least one sequence name")


@dataclass
class DataConfig:
    """Which dataset, where, and how it is split and batched."""

    dataset: Literal["dsec", "ddd17"] = "ddd17"
    root: str = ""
    train_split: str = "train"
    val_split: str | None = None
    test_split: str = "test"
    splits: dict[str, SplitConfig] = field(default_factory=dict)
    batch_size: int = 12
    eval_batch_size: int = 16
    num_workers: int = 4
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    eval_center_crop: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.root:
            raise ConfigError("root", "must name the dataset directory")
        if self.splits and self.dataset != "dsec":
            raise ConfigError("splits", "custom splits are only supported for DSEC (sequence folders)")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch_size", "batch sizes must be >= 1")
        if self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass
class ModelSection:
    """The network: a model YAML (`config/model/*.yaml`), optional overrides, and its initialisation."""

    config: str = "config/model/mambaseg_ddd17.yaml"
    overrides: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    scan_backend: str | None = None
    gradient_checkpointing: bool = False


@dataclass
class OptimConfig:
    """AdamW over all parameters in one group (the official code decays norms, biases and SSM params too)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip_norm: float | None = None

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ConfigError("grad_clip_norm", f"must be > 0 or null, got {self.grad_clip_norm}")


@dataclass
class ScheduleConfig:
    """Epoch count and the per-iteration LR factor (see `schedules.LRFactor`)."""

    epochs: int = 60
    policy: Literal["fixed", "poly", "cosine"] = "fixed"
    warmup_iters: int = 0
    warmup_factor: float = 1e-3
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("epochs", f"must be >= 1, got {self.epochs}")
        if self.warmup_iters < 0:
            raise ConfigError("warmup_iters", f"must be >= 0, got {self.warmup_iters}")


@dataclass
class EmaConfig:
    """Exponential moving average of the weights; evaluation and "best" then use the EMA weights."""

    decay: float = 0.9998
    warmup: bool = True

    def validate(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ConfigError("decay", f"must be in (0, 1), got {self.decay}")


@dataclass
class OhemConfig:
    """Online hard example mining: only pixels whose true-class probability is below `thresh` count in the loss,
    and at least the `min_kept` hardest labelled pixels of each rank's batch (all of them if it has fewer)."""

    thresh: float = 0.7
    min_kept: int = 100_000


CLASS_WEIGHT_METHODS = ("median_frequency", "inverse_sqrt_frequency")


@dataclass
class LossConfig:
    """Cross-entropy over the labelled pixels (255 = ignore); the defaults are the official plain CE.

    `class_weights`: null (unweighted), a method computed from the train labels' class frequencies (counted on an
    evenly spaced sample of at most `frequency_samples` train samples, then clipped to `class_weight_range`), or
    one explicit weight per class. See `losses.class_weights_from_counts`.
    """

    class_weights: str | list[float] | None = None
    class_weight_range: tuple[float, float] = (0.1, 10.0)
    frequency_samples: int = 2000
    ohem: OhemConfig | None = None

    def validate(self) -> None:
        weights = self.class_weights
        if isinstance(weights, str) and weights not in CLASS_WEIGHT_METHODS:
            raise ConfigError(
                "class_weights",
                f"must be null, one of {list(CLASS_WEIGHT_METHODS)} or a list of per-class weights, got {weights!r}",
            )
        if isinstance(weights, list) and not all(math.isfinite(w) and w > 0 for w in weights):
            raise ConfigError("class_weights", f"explicit weights must be finite and > 0, got {weights}")
        low, high = self.class_weight_range
        if not 0.0 < low <= high or not math.isfinite(high):
            raise ConfigError("class_weight_range", f"must be [low, high] with 0 < low <= high, got {[low, high]}")
        if self.frequency_samples < 1:
            raise ConfigError("frequency_samples", f"must be >= 1, got {self.frequency_samples}")
        # Checked here, not in an OhemConfig.validate: load_config reports a failure inside an optional section
        # only as "matches none of OhemConfig | None", without the key and the reason.
        if self.ohem is not None and not 0.0 < self.ohem.thresh <= 1.0:
            raise ConfigError("ohem.thresh", f"must be a probability in (0, 1], got {self.ohem.thresh}")
        if self.ohem is not None and self.ohem.min_kept < 0:
            raise ConfigError("ohem.min_kept", f"must be >= 0, got {self.ohem.min_kept}")


@dataclass
class CheckpointConfig:
    """When to write checkpoints and how many to keep."""

    every_epochs: int = 20
    every_iters: int = 0
    keep_last: int = 2
    save_best: bool = True

    def validate(self) -> None:
        if self.keep_last < 1:
            raise ConfigError("keep_last", f"must be >= 1, got {self.keep_last}")
        if self.every_epochs < 0 or self.every_iters < 0:
            raise ConfigError("every_epochs", "checkpoint periods must be >= 0 (0 = off)")


@dataclass
class LoggingConfig:
    """Progress bar, TensorBoard scalars and prediction overlays (rank 0 only)."""

    log_every_iters: int = 20
    tensorboard: bool = True
    overlay_images: int = 4
    progress_bar: bool = True


@dataclass
class RuntimeConfig:
    """Seeds, precision, device and where the run directory goes."""

    seed: int = 1
    deterministic: bool = True
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    output_dir: str = "runs"
    run_name: str = "mambaseg"
    eval_every_epochs: int = 1
    # "all": every eval split at every evaluation (official: the test split every epoch); "selection": only the
    # split that picks "best" until the last evaluation, which scores every split (much cheaper on a CPU).
    eval_splits: Literal["all", "selection"] = "all"
    max_iters: int | None = None
    # Wall-clock budget of one `Trainer.train` call: the run is shortened to the whole epochs that fit (see
    # Trainer._fit_to_budget) and stops mid-epoch if it still overruns. None = no budget.
    max_minutes: float | None = None
    sync_batchnorm: bool = True

    def validate(self) -> None:
        if self.eval_every_epochs < 0:
            raise ConfigError("eval_every_epochs", f"must be >= 0 (0 = off), got {self.eval_every_epochs}")
        if self.max_iters is not None and self.max_iters < 1:
            raise ConfigError("max_iters", f"must be >= 1 or null, got {self.max_iters}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError("max_minutes", f"must be > 0 or null, got {self.max_minutes}")


@dataclass
class TrainConfig:
    """Everything `mambaseg-train` needs; `config/train/*.yaml` are instances of it."""

    VERSION = 1

    version: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        if self.version != self.VERSION:
            raise ConfigError("version", f"this code reads train config version {self.VERSION}, got {self.version}")
        if isinstance(self.loss.class_weights, list):
            from .builders import dataset_class_set  # local: builders imports this module

            classes = dataset_class_set(self.data).num_classes
            if len(self.loss.class_weights) != classes:
                raise ConfigError(
                    "loss.class_weights",
                    f"has {len(self.loss.class_weights)} weights, data.dataset {self.data.dataset!r} has {classes} "
                    "classes",
                )

    @property
    def run_dir(self) -> Path:
        return Path(self.runtime.output_dir) / self.runtime.run_name


def _parse_override(raw: str) -> Any:
    """A YAML scalar/flow value; "1e-4" is a float here although YAML 1.1 reads it as a string."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_train_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a `TrainConfig` from YAML or a mapping, then apply dotted `key=value` overrides (values parsed as YAML).

    Example: `load_train_config("config/train/dsec.yaml", ["optim.lr=1e-4", "data.root=/data/dsec"])`.
    """
    if isinstance(source, dict):
        data: dict[str, Any] = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"train config not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "an override must look like section.key=value")
        node = data
        *parents, leaf = key.split(".")
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parents[: i + 1]), "is not a section, cannot override inside it")
            node = child
        node[leaf] = _parse_override(raw)
    try:
        return load_config(TrainConfig, data)
    except ConfigError as exc:
        if isinstance(source, dict):
            raise
        raise ConfigError(exc.key, str(exc).split(": ", 1)[-1], str(source)) from None
