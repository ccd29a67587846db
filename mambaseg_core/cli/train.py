"""`mambaseg-train --config config/train/dsec.yaml [--resume auto|PATH] [--set key=value ...]`.

One GPU: run it directly. Several GPUs (or nodes): `torchrun --nproc_per_node=N -m mambaseg_core.cli.train ...`;
`data.batch_size` stays the global batch, split over the ranks.
"""

from __future__ import annotations

import argparse

from mambaseg_core.config import to_dict
from mambaseg_core.train.builders import (
    CenterCrop,
    build_dataset,
    build_model,
    build_model_config,
    build_train_augment,
    dataset_class_set,
)
from mambaseg_core.train.checkpoint import resolve_resume, seed_everything
from mambaseg_core.train.config import load_train_config
from mambaseg_core.train.distributed import broadcast_object, destroy_distributed, init_distributed, is_main_process
from mambaseg_core.train.trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaseg-train", description=__doc__)
    parser.add_argument("--config", required=True, help="train config YAML (config/train/*.yaml)")
    parser.add_argument("--resume", help="'auto' (newest checkpoint in the run dir, if any) or a checkpoint path")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=1e-4 --set data.root=/data/dsec (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    init_distributed()
    try:
        cfg = load_train_config(args.config, args.set)
        model_config = build_model_config(cfg.model)
        classes = dataset_class_set(cfg.data)
        if classes.num_classes != model_config.num_classes:
            raise ValueError(
                f"{cfg.model.config}: num_classes {model_config.num_classes} does not match the "
                f"{classes.num_classes} classes of data.dataset {cfg.data.dataset!r}"
            )
        seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)  # identical init on every rank
        model = build_model(cfg.model, model_config)
        data = cfg.data
        eval_splits = [s for s in (data.val_split, data.test_split) if s is not None]
        trainer = Trainer(
            cfg,
            model,
            build_dataset(data, data.train_split),
            {split: build_dataset(data, split) for split in dict.fromkeys(eval_splits)},
            classes.names,
            classes.palette,
            augment=build_train_augment(data, model_config.image_size),
            eval_transform=CenterCrop(model_config.image_size) if data.eval_center_crop else None,
            model_config=to_dict(model_config),
        )
        resume = resolve_resume(args.resume, cfg.run_dir) if is_main_process() else None
        resume = broadcast_object(resume)
        if resume is not None:
            trainer.resume(resume)
            if is_main_process():
                print(f"resumed from {resume} at iteration {trainer.iteration}/{trainer.max_iter}")
        elif args.resume == "auto" and is_main_process():
            print(f"--resume auto: no checkpoint in {cfg.run_dir}, starting from scratch")
        trainer.train()
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
