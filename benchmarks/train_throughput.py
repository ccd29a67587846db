"""Training throughput (images/s) of MambaSeg: the real `Trainer.run_step` (forward, CE loss, backward,
AdamW step) on random inputs at the model's size, per precision.

    python benchmarks/train_throughput.py --preset dsec --precision fp32 bf16 --batch 4 --write
    torchrun --nproc_per_node=2 benchmarks/train_throughput.py --preset dsec --precision fp32 bf16 --batch 8 --write
    python benchmarks/train_throughput.py --preset tiny --write          # CPU smoke run

`--batch` is the global batch (split over torchrun ranks, as in training); images/s counts all ranks.
Inputs are generated per sample by the DataLoader (2 workers on GPU), so host-to-device copies are included
but no disk I/O. Timing: `--warmup` untimed steps, then `--steps` steps between CUDA synchronisations.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import table, write_section  # noqa: E402

from mambaseg_core.config import to_dict  # noqa: E402
from mambaseg_core.data.classes import class_set  # noqa: E402
from mambaseg_core.models import MambaSeg, load_model_config  # noqa: E402
from mambaseg_core.train import Trainer, load_train_config  # noqa: E402
from mambaseg_core.train.distributed import (  # noqa: E402
    destroy_distributed,
    get_world_size,
    init_distributed,
    is_main_process,
)

ROW_PREFIX = "ROW "
PRESETS = {
    "dsec": ROOT / "config/model/mambaseg_dsec.yaml",
    "ddd17": ROOT / "config/model/mambaseg_ddd17.yaml",
    "tiny": {
        "image_size": [32, 48],
        "image_channels": 1,
        "num_classes": 6,
        "event_bins": 10,
        "dims": [16, 16, 32, 32],
        "depths": [1, 1, 1, 1],
        "decoder_dim": 16,
    },
}


class RandomSegmentation(Dataset):
    """Sample i: uniform image, normal events, uniform labels; generated from seed i on demand."""

    def __init__(self, length: int, channels: int, bins: int, classes: int, size: tuple[int, int]):
        self.length, self.channels, self.bins, self.classes, self.size = length, channels, bins, classes, size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(index)
        return {
            "image": torch.rand(self.channels, *self.size, generator=g),
            "events": torch.randn(self.bins, *self.size, generator=g),
            "label": torch.randint(0, self.classes, self.size, generator=g),
        }


def measure(args: argparse.Namespace, batch: int, precision: str) -> dict[str, object]:
    """One (batch, precision) setting; an out-of-memory error gives an "OOM" row instead of a crash."""
    source = PRESETS[args.preset]
    model_config = load_model_config(
        yaml.safe_load(source.read_text()) if isinstance(source, Path) else dict(source), scan_backend=args.scan_backend
    )
    row: dict[str, object] = {"batch": batch, "precision": precision}
    cfg = load_train_config(
        {
            "data": {"root": "unused", "batch_size": batch, "num_workers": 2 if torch.cuda.is_available() else 0},
            "logging": {"tensorboard": False, "progress_bar": False},
            "runtime": {"precision": precision, "output_dir": "/tmp", "run_name": "train_throughput"},
        }
    )
    size = tuple(model_config.image_size)
    dataset = RandomSegmentation(
        (args.warmup + args.steps) * batch,
        model_config.image_channels,
        model_config.event_bins,
        model_config.num_classes,
        size,
    )
    names = tuple(str(k) for k in range(model_config.num_classes))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        torch.manual_seed(0)
        trainer = Trainer(
            cfg,
            MambaSeg(model_config),
            dataset,
            {},
            names,
            class_set("dsec11").palette,
            model_config=to_dict(model_config),
        )
        trainer.begin_epoch()
        for _ in range(args.warmup):
            trainer.run_step()
        float(trainer.last_loss)  # waits for the warm-up steps
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.run_step()
        loss = float(trainer.last_loss)  # synchronises with the device
        seconds = time.perf_counter() - start
    except torch.cuda.OutOfMemoryError:
        return {**row, "images/s": "OOM", "ms/step": "OOM", "peak GiB/GPU": "OOM", "loss": "-"}
    return {
        **row,
        "images/s": args.steps * batch / seconds,
        "ms/step": 1000 * seconds / args.steps,
        "peak GiB/GPU": torch.cuda.max_memory_allocated() / 2**30 if cuda else "-",
        "loss": loss,
    }


def release_memory() -> None:
    """Free the last setting's model and optimiser (the trainer and its hooks form reference cycles)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_in_subprocess(args: argparse.Namespace, batch: int, precision: str) -> dict[str, object]:
    """One setting in a fresh process, so no memory of an earlier setting (or its OOM) can leak into it."""
    command = [sys.executable, __file__, "--preset", args.preset, "--batch", str(batch), "--precision", precision]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--scan-backend", args.scan_backend, "--one"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith(ROW_PREFIX):
            return json.loads(line[len(ROW_PREFIX) :])
    print(result.stdout + result.stderr, file=sys.stderr)
    failed = f"failed (exit {result.returncode})"
    return {
        "batch": batch,
        "precision": precision,
        "images/s": failed,
        "ms/step": "-",
        "peak GiB/GPU": "-",
        "loss": "-",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="dsec")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"])
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[4], help="global batch(es) (official: 4 DSEC, 12 DDD17)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--scan-backend", default="auto")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: one setting, JSON row
    args = parser.parse_args()
    if args.one:
        print(ROW_PREFIX + json.dumps(measure(args, args.batch[0], args.precision[0])))
        return 0
    distributed = init_distributed()
    try:
        rows = []
        for batch in args.batch:
            for precision in args.precision:
                if distributed:  # ranks must stay together: in-process (prefer one setting per torchrun call)
                    rows.append(measure(args, batch, precision))
                    release_memory()
                else:
                    rows.append(measure_in_subprocess(args, batch, precision))
    finally:
        world = get_world_size()
        destroy_distributed()
    if not is_main_process():
        return 0
    headers = ["batch", "precision", "images/s", "ms/step", "peak GiB/GPU", "loss"]
    body = table(headers, [[row[h] for h in headers] for row in rows])
    setup = f"{args.preset} preset, {world} process(es) (batch = global batch), scan backend {args.scan_backend}"
    print(setup)
    print(body)
    if args.write:
        # One section per setup, so the CPU smoke, 1-GPU and DDP runs do not overwrite each other.
        devices = f"{world} GPUs, DDP" if world > 1 else ("1 GPU" if torch.cuda.is_available() else "CPU")
        name = f"Training throughput ({args.preset}, {devices})"
        note = (
            f"{setup}; `Trainer.run_step` (AdamW, CE, official deterministic cuDNN settings) on random inputs, "
            f"{args.warmup} warm-up + {args.steps} timed steps.\n"
            f"`python benchmarks/train_throughput.py {' '.join(sys.argv[1:])}`"
        )
        write_section(name, note + "\n\n" + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
