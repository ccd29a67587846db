"""Steps of the demo-model recipe (`tools/train_demo_model.sh`) that have no console script of their own.

    python tools/demo_model.py generate --root data/synthetic_demo [--train 8 --val 1 --test 2 --seconds 8]
    python tools/demo_model.py export --checkpoint runs/mambaseg_demo/model_best.pt --out models/demo/mambaseg_demo.pt
    python tools/demo_model.py conditions --config config/train/synthetic_demo.yaml --checkpoint CKPT [--split test]

`generate` writes the seeded synthetic world (mambaseg_core.synthetic) in the DSEC layout at the demo resolution;
`export` keeps only the weights and model config; `conditions` reports mIoU per lighting condition
(normal | dark | hdr_bright, read from each sequence's `semantic/conditions.txt`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from mambaseg_core.data.dsec import DsecSemantic
from mambaseg_core.models import load_model, save_checkpoint
from mambaseg_core.synthetic import SceneConfig, SequenceConfig, dataset_plan, write_dsec_sequence
from mambaseg_core.train.builders import build_dataset, dataset_class_set
from mambaseg_core.train.config import load_train_config
from mambaseg_core.train.metrics import ConfusionMatrix
from mambaseg_core.train.trainer import resolve_device


def _write_one(job: tuple[Path, str, SequenceConfig]) -> str:
    folder, name, config = job
    torch.set_num_threads(1)
    return str(write_dsec_sequence(folder, name, config))


def generate(args: argparse.Namespace) -> None:
    """The seeded split of `dataset_plan`, written with the labels covering the whole frame (no hood crop)."""
    base = SequenceConfig(scene=SceneConfig(height=args.height, width=args.width, duration_s=args.seconds))
    counts = {"train": args.train, "val": args.val, "test": args.test}
    root = Path(args.root)
    for split in ("train", "test"):  # the DSEC provider layout expects both folders
        (root / split).mkdir(parents=True, exist_ok=True)
    jobs = [(root / split, name, config) for split, name, config in dataset_plan(base, counts, seed=args.seed)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for path in pool.map(_write_one, jobs):
            print("wrote", path, flush=True)


def export(args: argparse.Namespace) -> None:
    """Model-only checkpoint (weights + ModelConfig) from a training checkpoint."""
    model = load_model(args.checkpoint, "cpu")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def read_conditions(sequence_dir: Path) -> list[str]:
    path = sequence_dir / "semantic" / "conditions.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: condition tags not found (written by synthetic.write_dsec_sequence)")
    return path.read_text().split()


@torch.no_grad()
def conditions(args: argparse.Namespace) -> None:
    """Metrics per condition tag of the evaluated frames and over all of them (`metrics_<split>_conditions.json`).

    `miou` is the project's metric (mean over all K classes, absent ones count as 0); `miou_present` averages
    only the classes that occur in that subset's labels, which is fairer for small subsets.
    """
    cfg = load_train_config(args.config, args.set)
    device = resolve_device(cfg.runtime.device)
    model = load_model(args.checkpoint, device)
    classes = dataset_class_set(cfg.data)
    split = args.split or cfg.data.test_split
    dataset = build_dataset(cfg.data, split)
    if not isinstance(dataset, DsecSemantic):
        raise TypeError(f"split {split!r} is not a DSEC dataset; conditions need DSEC-layout sequences")
    matrices: dict[str, ConfusionMatrix] = defaultdict(lambda: ConfusionMatrix(classes.num_classes, device=device))
    frames: dict[str, int] = defaultdict(int)
    for sequence in dataset.sequences:
        tags = read_conditions(sequence.files.path)
        for index in range(len(sequence)):
            sample = sequence[index]
            logits = model(image=sample["image"][None].to(device), events=sample["events"][None].to(device))
            prediction, label = logits.argmax(dim=1), sample["label"][None].to(device)
            for key in ("all", tags[int(sequence.label_indices[index])]):
                matrices[key].update(prediction, label)
                frames[key] += 1
    report = {}
    for key, matrix in sorted(matrices.items()):
        metrics = matrix.compute()
        present = metrics.confusion.sum(axis=1) > 0
        summary = metrics.as_dict(classes.names)
        summary.pop("confusion")
        report[key] = {"frames": frames[key], "miou_present": 100.0 * float(metrics.iou[present].mean()), **summary}
        print(
            f"{split} {key:>10s}: {frames[key]:4d} frames  mIoU {summary['miou']:6.2f}  "
            f"mIoU over present classes {report[key]['miou_present']:6.2f}  pixel acc {summary['pixel_accuracy']:6.2f}"
        )
    out = Path(args.output or Path(args.checkpoint).parent) / f"metrics_{split}_conditions.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write the seeded synthetic dataset")
    gen.add_argument("--root", required=True)
    gen.add_argument("--seed", type=int, default=0, help="dataset_plan seed (scene seeds derive from it)")
    gen.add_argument("--height", type=int, default=96)
    gen.add_argument("--width", type=int, default=128)
    gen.add_argument("--seconds", type=float, default=8.0, help="duration of every sequence")
    gen.add_argument("--train", type=int, default=8)
    gen.add_argument("--val", type=int, default=1)
    gen.add_argument("--test", type=int, default=2)
    gen.add_argument("--jobs", type=int, default=2, help="sequences written in parallel")
    gen.set_defaults(func=generate)
    exp = commands.add_parser("export", help="model-only checkpoint from a training checkpoint")
    exp.add_argument("--checkpoint", required=True)
    exp.add_argument("--out", required=True)
    exp.set_defaults(func=export)
    cond = commands.add_parser("conditions", help="metrics per condition tag (normal / dark / hdr_bright)")
    cond.add_argument("--config", required=True)
    cond.add_argument("--checkpoint", required=True)
    cond.add_argument("--split")
    cond.add_argument("--output")
    cond.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cond.set_defaults(func=conditions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
