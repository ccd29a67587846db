"""ModelConfig.modality: the image-only and events-only ablations of MambaSeg see zeros instead of the dropped input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mambaseg_core.config import ConfigError
from mambaseg_core.models import MambaSeg, ModelConfig, load_model, load_model_config, save_checkpoint
from mambaseg_core.train.builders import build_model_config
from mambaseg_core.train.config import load_train_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=(24, 40), dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), decoder_dim=16, num_classes=3)
ATOL = 1e-6  # fp32; the "same output" cases are bit-identical, the "different output" cases differ by ~1e-2


def small_model(modality: str) -> MambaSeg:
    torch.manual_seed(0)
    return MambaSeg(load_model_config({**SMALL, "modality": modality, "scan_backend": "torch"})).eval()


def random_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    height, width = SMALL["image_size"]
    image = torch.rand(2, 3, height, width, generator=generator)
    events = torch.randn(2, 10, height, width, generator=generator)
    return image, events


@torch.no_grad()
def max_change(model: MambaSeg, change: str) -> float:
    """Largest logit change when only `change` ("image" or "events") is replaced by another random input."""
    image, events = random_inputs(seed=1)
    other_image, other_events = random_inputs(seed=2)
    before = model(image=image, events=events)
    if change == "image":
        after = model(image=other_image, events=events)
    else:
        after = model(image=image, events=other_events)
    return float((before - after).abs().max())


@pytest.mark.parametrize(
    ("modality", "ignored", "used"),
    [("image_only", "events", "image"), ("events_only", "image", "events")],
)
def test_ablation_ignores_the_dropped_input(modality, ignored, used):
    model = small_model(modality)
    ignored_change, used_change = max_change(model, ignored), max_change(model, used)
    print(f"{modality}: max logit change {ignored_change:.3g} when {ignored} change, {used_change:.3g} when {used} do")
    assert ignored_change <= ATOL
    assert used_change > 100 * ATOL


def test_fused_model_uses_both_inputs():
    model = small_model("fused")
    image_change, events_change = max_change(model, "image"), max_change(model, "events")
    print(f"fused: max logit change {image_change:.3g} (image), {events_change:.3g} (events)")
    assert image_change > 100 * ATOL and events_change > 100 * ATOL


def test_ablation_is_the_same_architecture_and_survives_a_checkpoint(tmp_path):
    fused, image_only = small_model("fused"), small_model("image_only")
    assert fused.state_dict().keys() == image_only.state_dict().keys()
    save_checkpoint(image_only, tmp_path / "image_only.pt")
    loaded = load_model(tmp_path / "image_only.pt")
    assert loaded.config.modality == "image_only"
    change = max_change(loaded, "events")
    print(f"loaded image_only: max logit change {change:.3g} when the events change")
    assert change <= ATOL


def test_fused_is_the_default():
    assert ModelConfig(image_size=(24, 40)).modality == "fused"


@pytest.mark.parametrize("bad", ["rgb_only", "", None])
def test_unknown_modality_is_a_config_error_naming_the_key(bad):
    with pytest.raises(ConfigError) as info:
        load_model_config({**SMALL, "modality": bad})
    print(info.value)
    assert info.value.key == "modality"
    config = ModelConfig(image_size=(24, 40))
    config.modality = bad  # type: ignore[assignment]
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.key == "modality"


def test_train_override_selects_the_modality():
    """The recipe's `--set model.overrides.modality=...` reaches the model config (no model is built)."""
    cfg = load_train_config(
        REPO_ROOT / "config" / "train" / "synthetic_demo.yaml", ["model.overrides.modality=events_only"]
    )
    cfg.model.config = str(REPO_ROOT / cfg.model.config)
    assert build_model_config(cfg.model).modality == "events_only"
