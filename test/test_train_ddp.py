"""DDP (2 CPU processes, gloo) after N steps equals 1 process on the combined batch.

The stand-in model has no BatchNorm, so per-rank statistics cannot differ (MambaSeg's decoder BN would
need SyncBatchNorm, which PyTorch supports on CUDA only; the GPU run covers that). The labels have no
ignored pixels, so every rank's mean loss averages the same number of pixels and the DDP gradient
average equals the gradient of the combined batch.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from test_train_support import BlobDataset, TinySegNet, single_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

from mambaseg_core.data.classes import DDD17
from mambaseg_core.train import Trainer
from mambaseg_core.train.distributed import destroy_distributed, init_distributed

STEPS = 6  # 1.5 epochs of 16 samples with a global batch of 4: crosses an epoch boundary mid-run


def _run(rank: int, world_size: int, port: int, out_dir: str) -> None:
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
        os.environ["LOCAL_RANK"] = str(rank)
        torch.set_num_threads(1)
        assert init_distributed("gloo")
    try:
        cfg = tiny_config(
            Path(out_dir) / "run",
            schedule={"epochs": 2},
            runtime={"max_iters": STEPS, "eval_every_epochs": 1},
            checkpoint={"every_epochs": 0},
        )
        torch.manual_seed(0)
        trainer = Trainer(
            cfg, TinySegNet(), BlobDataset(16, seed=1), {"test": BlobDataset(7, seed=2)}, DDD17.names, DDD17.palette
        )
        trainer.train()
        if rank == 0:
            torch.save(trainer.model.state_dict(), Path(out_dir) / "params.pt")
    finally:
        destroy_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tmp_path):
    _run(0, 1, 0, str(tmp_path / "single"))
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)

    single = torch.load(tmp_path / "single" / "params.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp" / "params.pt", weights_only=True)
    for name in single:
        diff = (single[name] - ddp[name]).abs().max().item()
        print(f"{name}: max |1 process - 2 processes| = {diff:.3g}")
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-5, atol=1e-6)
    # The epoch-1 evaluation (7 samples sharded 4 + 3 over the ranks) all-reduces to the same matrix.
    metrics = [json.loads((tmp_path / d / "run" / "metrics.json").read_text()) for d in ("single", "ddp")]
    assert metrics[0]["last"]["splits"]["test"]["confusion"] == metrics[1]["last"]["splits"]["test"]["confusion"]
    assert metrics[0]["last"]["splits"]["test"]["pixels"] == 7 * 16 * 24
