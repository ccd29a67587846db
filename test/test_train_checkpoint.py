"""Atomic checkpoint writes, keep-last-k rotation, "auto" resume lookup and RNG capture."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mambaseg_core.train import checkpoint as ck


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_00000010.pt"
    ck.atomic_torch_save({"step": torch.tensor(1)}, path)

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # bytes reach the disk, then the process "dies"
        raise OSError("simulated crash during torch.save")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated crash"):
        ck.atomic_torch_save({"step": torch.tensor(2)}, path)
    monkeypatch.setattr(torch, "save", real_save)

    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "the temporary file must be removed"


def test_keep_last_k_and_auto_resume(tmp_path):
    for iteration in (4, 12, 8, 16):
        ck.atomic_torch_save({"iteration": iteration}, tmp_path / ck.periodic_name(iteration))
    (tmp_path / ck.BEST_NAME).write_bytes(b"best")
    assert ck.resolve_resume("auto", tmp_path) == tmp_path / "checkpoint_00000016.pt"
    deleted = ck.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in deleted] == ["checkpoint_00000004.pt", "checkpoint_00000008.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_00000012.pt",
        "checkpoint_00000016.pt",
        ck.BEST_NAME,
    ]
    assert ck.resolve_resume("auto", tmp_path / "missing") is None
    assert ck.resolve_resume(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        ck.resolve_resume(str(tmp_path / "nope.pt"), tmp_path)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    ck.seed_everything(7, deterministic=True)
    ck.atomic_torch_save({"rng": ck.capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.seed_everything(99, deterministic=True)
    ck.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
