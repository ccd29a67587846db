"""`mambaseg-eval --config config/train/ddd17.yaml --checkpoint ckpt.pt [--split test]`: metrics of one split.

Reads our checkpoints (training or model-only) and the official `{'epoch', 'state_dict'}` ones. Writes
`metrics_<split>.json` (mIoU, pixel accuracy, per-class IoU, the confusion matrix) and
`confusion_<split>.png` to `--output` (default: next to the checkpoint). Runs under torchrun as well.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mambaseg_core.models import load_model
from mambaseg_core.train.builders import CenterCrop, build_dataset, build_model_config, dataset_class_set
from mambaseg_core.train.config import load_train_config
from mambaseg_core.train.distributed import (
    destroy_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from mambaseg_core.train.evaluation import evaluate
from mambaseg_core.train.metrics import render_confusion_png, write_png
from mambaseg_core.train.sampling import AugmentedDataset, ShardSampler
from mambaseg_core.train.trainer import resolve_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaseg-eval", description=__doc__)
    parser.add_argument("--config", required=True, help="train config YAML: dataset, root, precision, model YAML")
    parser.add_argument("--checkpoint", required=True, type=Path, help="our checkpoint or an official one")
    parser.add_argument("--split", help="split to evaluate (default: data.test_split)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a training checkpoint")
    parser.add_argument("--output", type=Path, help="folder for the JSON and PNG (default: the checkpoint's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    init_distributed()
    try:
        cfg = load_train_config(args.config, args.set)
        device = resolve_device(cfg.runtime.device)
        model_config = build_model_config(cfg.model)
        # image_size only matters for official checkpoints, which do not record it.
        model = load_model(args.checkpoint, device, cfg.model.scan_backend, image_size=model_config.image_size)
        if args.ema:
            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
            ema = state.get("trainer", {}).get("ema")
            if ema is None:
                raise ValueError(f"--ema: {args.checkpoint} holds no EMA weights")
            model.load_state_dict(ema["module"])
        classes = dataset_class_set(cfg.data)
        split = args.split or cfg.data.test_split
        height, width = model.config.image_size
        size = (int(height), int(width))
        dataset = AugmentedDataset(
            build_dataset(cfg.data, split), CenterCrop(size) if cfg.data.eval_center_crop else None, cfg.runtime.seed
        )
        loader = DataLoader(
            dataset,
            batch_size=cfg.data.eval_batch_size,
            sampler=ShardSampler(len(dataset), get_world_size(), get_rank()),
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
        )
        metrics, _ = evaluate(model, loader, classes.num_classes, device, cfg.runtime.precision, progress=True)
        if is_main_process():
            out = args.output or args.checkpoint.parent
            out.mkdir(parents=True, exist_ok=True)
            report = {
                "checkpoint": str(args.checkpoint),
                "weights": "ema" if args.ema else "model",
                "dataset": cfg.data.dataset,
                "split": split,
                "samples": len(dataset),
                **metrics.as_dict(classes.names),
            }
            (out / f"metrics_{split}.json").write_text(json.dumps(report, indent=2))
            write_png(out / f"confusion_{split}.png", render_confusion_png(metrics.confusion, classes.names))
            print(
                f"{cfg.data.dataset} {split}: mIoU {report['miou']:.2f}  pixel accuracy {report['pixel_accuracy']:.2f}"
            )
            for name, iou in report["per_class_iou"].items():
                print(f"  {name:>14s}  IoU {iou:6.2f}")
            print(f"wrote {out / f'metrics_{split}.json'} and confusion_{split}.png")
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
