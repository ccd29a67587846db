"""From a `TrainConfig` to the real objects: the MambaSeg model (with its initialisation) and the datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
import yaml
from torch.utils.data import Dataset

from ..data.classes import ClassSet, class_set
from ..data.transforms import AugmentParams, JointAugment
from ..models import MambaSeg, ModelConfig, load_model_config, load_vmamba_pretrained
from .config import DataConfig, ModelSection

OFFICIAL_SPLITS = ("train", "test")
DSEC_SPLITS = (*OFFICIAL_SPLITS, "val")  # "val": <root>/val/ if it exists, else the official alias of "test"


def build_model_config(section: ModelSection) -> ModelConfig:
    """The model YAML named by `section.config` with `section.overrides` (and `scan_backend`) applied."""
    path = Path(section.config)
    if not path.is_file():
        raise FileNotFoundError(f"model.config: model config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    data.update(section.overrides)
    if section.scan_backend is not None:
        data["scan_backend"] = section.scan_backend
    return load_model_config(data)


def build_model(section: ModelSection, config: ModelConfig) -> nn.Module:
    """MambaSeg(config), initialised from the VMamba-T ImageNet checkpoint when `section.pretrained` is set."""
    model = MambaSeg(config)
    if section.pretrained is not None:
        if not Path(section.pretrained).is_file():
            raise FileNotFoundError(f"model.pretrained: VMamba checkpoint not found: {section.pretrained}")
        report = load_vmamba_pretrained(model, section.pretrained)
        print(
            f"VMamba ImageNet init: {len(report.loaded)} tensors loaded, {len(report.skipped)} checkpoint keys "
            f"skipped, {len(report.not_in_checkpoint)} encoder tensors keep their init"
        )
    if section.gradient_checkpointing:
        enable = getattr(model, "set_gradient_checkpointing", None)
        if enable is None:
            raise ValueError(
                "model.gradient_checkpointing: this MambaSeg has no set_gradient_checkpointing(enabled) method yet"
            )
        enable(True)
    return model


def dataset_class_set(data: DataConfig) -> ClassSet:
    """DDD17 → 6 classes; DSEC → 11 classes, or 19 with `options: {classes: 19}`."""
    if data.dataset == "ddd17":
        return class_set("ddd17")
    return class_set("dsec19" if data.options.get("classes", 11) == 19 else "dsec11")


def build_dataset(data: DataConfig, split: str) -> Dataset:
    """The un-augmented dataset of `split`: an official split name or a key of `data.splits` (DSEC)."""
    options: dict[str, Any] = dict(data.options)
    root = Path(data.root)
    if data.dataset == "ddd17":
        from ..data.ddd17 import Ddd17Segmentation

        if split not in OFFICIAL_SPLITS:
            raise ValueError(f"DDD17 split {split!r}: only {OFFICIAL_SPLITS} exist")
        return Ddd17Segmentation(root, split, augment=None, **options)
    from ..data.dsec import DsecSemantic

    if split in data.splits:
        custom = data.splits[split]
        return DsecSemantic(root, custom.folder, sequences=tuple(custom.sequences), augment=None, **options)
    if split not in DSEC_SPLITS:
        raise ValueError(f"DSEC split {split!r}: not {DSEC_SPLITS} and not a key of data.splits")
    return DsecSemantic(root, split, augment=None, **options)


def build_train_augment(data: DataConfig, image_size: tuple[int, int]) -> JointAugment | None:
    """Joint scale/crop/flip with the crop at the model's input size (the model is resolution-locked)."""
    if data.augment is None:
        return None
    return JointAugment(image_size[0], image_size[1], data.augment.scale_range, data.augment.flip_probability)


class CenterCrop:
    """A fixed centre crop to the model size for evaluation (`data.eval_center_crop`, smoke tests only)."""

    PARAMS = AugmentParams(scale=1.0, crop_top_fraction=0.5, crop_left_fraction=0.5, flip=False)

    def __init__(self, image_size: tuple[int, int]):
        self.crop = JointAugment(image_size[0], image_size[1], (1.0, 1.0), 0.0)

    def sample(self, rng: Any) -> AugmentParams:
        return self.PARAMS

    def __call__(self, params: AugmentParams, image: Any, label: Any, events: Any) -> Any:
        return self.crop(params, image, label, events)
