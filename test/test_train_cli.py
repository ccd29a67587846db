"""The real pipeline: `mambaseg-train` and `mambaseg-eval` on generated DDD17 fixtures with a tiny MambaSeg,
and the real (tiny) MambaSeg learning an in-memory task.

The fixture frames are 200x346; a tiny model at that size is too slow for CPU tests, so the model here is
locked to 32x48, training crops come from the augmentation (crop = model size) and evaluation uses
`data.eval_center_crop` (a smoke-test option; the official protocol evaluates full frames).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_train_support import single_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

from mambaseg_core.cli import eval as eval_cli
from mambaseg_core.cli import train as train_cli
from mambaseg_core.data.classes import DDD17
from mambaseg_core.data.fixtures import write_ddd17_fixture
from mambaseg_core.models import MambaSeg, load_model, load_model_config, to_official_state_dict
from mambaseg_core.train import LossRecorder, Trainer
from mambaseg_core.train.builders import build_model
from mambaseg_core.train.config import ModelSection

TINY_MODEL = {
    "image_size": [32, 48],
    "image_channels": 1,
    "num_classes": 6,
    "event_bins": 10,
    "dims": [16, 16, 32, 32],
    "depths": [1, 1, 1, 1],
    "decoder_dim": 16,
    "scan_backend": "torch",
}


@pytest.fixture(scope="module")
def ddd17_root(tmp_path_factory):
    return write_ddd17_fixture(tmp_path_factory.mktemp("ddd17"), seed=0, n_frames=8, num_events=4000)


def _write_configs(tmp_path, root):
    (tmp_path / "tiny_model.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    train = yaml.safe_load(Path("config/train/ddd17.yaml").read_text())  # the shipped config, shrunk
    train["data"].update(root=str(root), batch_size=4, eval_batch_size=2, num_workers=0, eval_center_crop=True)
    train["data"]["augment"]["scale_range"] = [1.0, 1.1]
    train["model"]["config"] = str(tmp_path / "tiny_model.yaml")
    train["schedule"]["epochs"] = 2
    train["logging"].update(progress_bar=False, overlay_images=2, log_every_iters=1)
    train["runtime"].update(output_dir=str(tmp_path / "runs"), run_name="tiny", device="cpu", max_iters=2)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(train))
    return path


def test_train_resume_and_eval_clis_on_ddd17_fixture(tmp_path, ddd17_root):
    config = _write_configs(tmp_path, ddd17_root)
    # 15 train samples / batch 4 = 3 iterations per epoch; max_iters 2 stops mid-epoch 1.
    assert train_cli.main(["--config", str(config)]) == 0
    run = tmp_path / "runs" / "tiny"
    assert [p.name for p in run.glob("checkpoint_*.pt")] == ["checkpoint_00000002.pt"]
    assert not (run / "metrics.json").exists()

    # Resume from the newest checkpoint and finish epoch 1, which ends with an evaluation.
    assert train_cli.main(["--config", str(config), "--resume", "auto", "--set", "runtime.max_iters=3"]) == 0
    state = torch.load(run / "checkpoint_00000003.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3 and state["epoch"] == 1
    summary = json.loads((run / "metrics.json").read_text())
    print("epoch-1 confusion", summary["best"]["splits"]["test"]["confusion"])
    assert summary["best"]["epoch"] == summary["last"]["epoch"] == 1 and summary["selection_split"] == "test"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # Training checkpoints are model checkpoints too.
    model = load_model(run / "model_best.pt")
    assert isinstance(model, MambaSeg) and tuple(model.config.image_size) == (32, 48)
    assert eval_cli.main(["--config", str(config), "--checkpoint", str(run / "checkpoint_00000003.pt")]) == 0
    report = json.loads((run / "metrics_test.json").read_text())
    assert report["samples"] == 3 and len(report["per_class_iou"]) == 6
    assert report["miou"] == pytest.approx(np.mean(list(report["per_class_iou"].values())))
    assert report["pixels"] == int(np.sum(report["confusion"])) > 0
    # The same weights and split as the in-training evaluation of epoch 1: the same matrix.
    assert report["confusion"] == summary["best"]["splits"]["test"]["confusion"]

    # The same weights saved as an official {'epoch', 'state_dict'} checkpoint evaluate identically.
    official = tmp_path / "official.pth"
    torch.save({"epoch": 1, "state_dict": to_official_state_dict(state["state_dict"])}, official)
    assert eval_cli.main(["--config", str(config), "--checkpoint", str(official), "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics_test.json").read_text())["confusion"] == report["confusion"]
    assert (run / "confusion_test.png").is_file()


def test_missing_pretrained_file_is_an_error(tmp_path):
    section = ModelSection(pretrained=str(tmp_path / "vssm1_tiny.pth"))
    with pytest.raises(FileNotFoundError, match=r"model\.pretrained"):
        build_model(section, load_model_config(TINY_MODEL))


class _Learnable(torch.utils.data.Dataset):
    """32x48 samples whose label is the quantised image, so a model can learn it quickly."""

    def __init__(self, length: int):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(length, 1, 4, 6, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
        self.events = torch.randn(length, 10, 32, 48, generator=g)
        self.labels = (self.images[:, 0] * 6).long().clamp_max(5)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "events": self.events[i], "label": self.labels[i]}


def test_tiny_mambaseg_loss_goes_down(tmp_path):
    cfg = tiny_config(tmp_path / "run", optim={"lr": 3e-3}, schedule={"epochs": 4}, runtime={"eval_every_epochs": 0})
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(TINY_MODEL))
    recorder = LossRecorder()
    Trainer(cfg, model, _Learnable(8), {}, DDD17.names, DDD17.palette, extra_hooks=[recorder]).train()
    first, last = np.mean(recorder.losses[:2]), np.mean(recorder.losses[-2:])
    print(f"real tiny MambaSeg: loss {first:.4f} -> {last:.4f} over {len(recorder.losses)} steps")
    assert np.isfinite(recorder.losses).all() and last < 0.8 * first


def test_dsec_builder_with_a_custom_validation_split(tmp_path):
    """DSEC splits by name: the official train split and a validation split carved from train/ by sequence."""
    from mambaseg_core.data.fixtures import write_dsec_fixture
    from mambaseg_core.train.builders import build_dataset, dataset_class_set
    from mambaseg_core.train.config import load_train_config

    sequences = {"train": ["zurich_city_00_a", "zurich_city_01_a"], "test": ["zurich_city_13_a"]}
    root = write_dsec_fixture(tmp_path / "dsec", n_labels=8, num_events=5000, sequences=sequences)
    data = {
        "dataset": "dsec",
        "root": str(root),
        "train_split": "train_part",
        "val_split": "val_part",
        "splits": {
            "train_part": {"folder": "train", "sequences": ["zurich_city_00_a"]},
            "val_part": {"folder": "train", "sequences": ["zurich_city_01_a"]},
        },
        "options": {"num_events": 1000},
    }
    cfg = load_train_config({"data": data}).data
    train, val, test = (build_dataset(cfg, s) for s in ("train_part", "val_part", "test"))
    # 8 labels, the first 6 skipped, every second kept: 1 sample per sequence.
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    assert [s.name for s in val.sequences] == ["zurich_city_01_a"]
    sample = val[0]
    assert sample["image"].shape == (3, 440, 640) and sample["events"].shape == (10, 440, 640)
    assert sample["label"].dtype == torch.int64 and dataset_class_set(cfg).num_classes == 11
    with pytest.raises(ValueError, match=r"not a key of data\.splits"):
        build_dataset(cfg, "holdout")  # neither an official split (train/test/val) nor a custom one
