"""Steps of the demo-model recipes (`tools/train_demo_model.sh`, `tools/train_demo_gpu.sh`) that have no console
script of their own.

    python tools/demo_model.py generate --root data/synthetic_demo [--train 8 --val 1 --test 2 --seconds 8 --jobs 2]
    python tools/demo_model.py export --checkpoint runs/mambaseg_demo/model_best.pt --out models/demo/mambaseg_demo.pt
    python tools/demo_model.py conditions --config config/train/synthetic_demo.yaml --checkpoint CKPT [--split test]
    python tools/demo_model.py ablation --runs runs/demo_gpu --out RESULTS_DIR [--timings timings.json]
    python tools/demo_model.py ceiling [--sizes 128x96 192x144 256x192]

`ceiling` bounds the mIoU of a stride-4 head by the label resolution alone (block-mode oracle);
`generate` writes the seeded synthetic world (mambaseg_core.synthetic) in the DSEC layout at the demo resolution,
sequences in parallel over `--jobs` processes, and reuses a complete dataset written with the same arguments;
`export` keeps only the weights and model config; `conditions` reports mIoU per lighting condition
(normal | dark | hdr_bright, read from each sequence's `semantic/conditions.txt`); `ablation` tabulates the
fused / image-only / events-only runs of the GPU recipe (ablation.md + ablation.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mambaseg_core.data.classes import class_set
from mambaseg_core.data.dsec import DsecSemantic
from mambaseg_core.models import load_model, save_checkpoint
from mambaseg_core.models.config import MODALITIES
from mambaseg_core.synthetic import SceneConfig, SequenceConfig, dataset_plan, write_dsec_sequence
from mambaseg_core.synthetic.scene import Scene
from mambaseg_core.train.builders import build_dataset, dataset_class_set
from mambaseg_core.train.config import load_train_config
from mambaseg_core.train.metrics import ConfusionMatrix
from mambaseg_core.train.trainer import resolve_device


def _write_one(job: tuple[Path, str, SequenceConfig]) -> str:
    folder, name, config = job
    torch.set_num_threads(1)
    return str(write_dsec_sequence(folder, name, config))


GENERATED_SPLITS = ("train", "val", "test")
COMPLETE_MARKER = ".complete"  # JSON of the generation arguments, written last


def generate(args: argparse.Namespace) -> None:
    """The seeded split of `dataset_plan`, written with the labels covering the whole frame (no hood crop).

    A dataset completed with the same arguments is reused; otherwise the split folders are rewritten.
    """
    root = Path(args.root)
    recipe = {key: getattr(args, key) for key in ("seed", "height", "width", "seconds", "train", "val", "test")}
    marker = root / COMPLETE_MARKER
    if marker.is_file() and marker.read_text() == json.dumps(recipe):
        print(f"reusing the complete dataset in {root} ({recipe})")
        return
    marker.unlink(missing_ok=True)
    for split in GENERATED_SPLITS:  # only what this command writes: a partial or different dataset
        shutil.rmtree(root / split, ignore_errors=True)
    for split in ("train", "test"):  # the DSEC provider layout expects both folders
        (root / split).mkdir(parents=True, exist_ok=True)
    base = SequenceConfig(scene=SceneConfig(height=args.height, width=args.width, duration_s=args.seconds))
    counts = {"train": args.train, "val": args.val, "test": args.test}
    jobs = [(root / split, name, config) for split, name, config in dataset_plan(base, counts, seed=args.seed)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for path in pool.map(_write_one, jobs):
            print("wrote", path, flush=True)
    wall = time.perf_counter() - start
    video_s = len(jobs) * args.seconds
    print(
        f"generated {len(jobs)} sequences ({video_s:.0f} s of {args.width}x{args.height} video) in {wall:.1f} s "
        f"with {args.jobs} processes: {wall * args.jobs / video_s:.2f} process-seconds per video second"
    )
    marker.write_text(json.dumps(recipe))  # compared as text: an older or hand-made marker never matches


def export(args: argparse.Namespace) -> None:
    """Model-only checkpoint (weights + ModelConfig) from a training checkpoint; the scan backend is reset to
    "auto" so that a model trained with the CUDA kernels runs on a CPU."""
    model = load_model(args.checkpoint, "cpu", scan_backend="auto")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out, weights_dtype=torch.float16 if args.half else None)
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
    only the classes that occur in that subset's labels, which is fairer for small subsets. The forward runs
    in fp32 (as the CPU demo runs it) in batches of data.eval_batch_size.
    """
    cfg = load_train_config(args.config, args.set)
    device = resolve_device(cfg.runtime.device)
    model = load_model(args.checkpoint, device)
    classes = dataset_class_set(cfg.data)
    split = args.split or cfg.data.test_split
    dataset = build_dataset(cfg.data, split)
    if not isinstance(dataset, DsecSemantic):
        raise TypeError(f"split {split!r} is not a DSEC dataset; conditions need DSEC-layout sequences")
    # The tag of every sample, in the dataset's order (the concatenation of its sequences).
    sample_tags = []
    for sequence in dataset.sequences:
        tags = read_conditions(sequence.files.path)
        sample_tags += [tags[int(k)] for k in sequence.label_indices]
    loader = DataLoader(dataset, batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.num_workers)
    matrices: dict[str, ConfusionMatrix] = defaultdict(lambda: ConfusionMatrix(classes.num_classes, device=device))
    frames: dict[str, int] = defaultdict(int)
    first = 0
    for batch in loader:
        logits = model(image=batch["image"].to(device), events=batch["events"].to(device))
        predictions, labels = logits.argmax(dim=1), batch["label"].to(device)
        for i, tag in enumerate(sample_tags[first : first + len(labels)]):
            for key in ("all", tag):
                matrices[key].update(predictions[i : i + 1], labels[i : i + 1])
                frames[key] += 1
        first += len(labels)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


CONDITION_COLUMNS = ("all", "normal", "dark", "hdr_bright")
HARD_CONDITIONS = ("dark", "hdr_bright")  # where the fused model must beat both single-input variants (issue #10)
TARGET_MIOU = 60.0  # issue #10: fused mIoU (%) on held-out synthetic sequences


def _variant_summary(run_dir: Path, split: str) -> dict[str, Any]:
    """One variant's training record (metrics.json) and its per-condition metrics on `split`."""
    training = json.loads((run_dir / "metrics.json").read_text())
    conditions_path = run_dir / f"metrics_{split}_conditions.json"
    best, last, selection = training["best"], training["last"], training["selection_split"]
    return {
        "run_dir": str(run_dir),
        "best_epoch": best["epoch"],
        "last_epoch": last["epoch"],
        "iterations": last["iteration"],
        f"best_{selection}_miou": best["splits"][selection]["miou"],
        f"{selection}_miou_per_epoch": [record["splits"][selection]["miou"] for record in training["history"]],
        split: json.loads(conditions_path.read_text()),
    }


def _ablation_markdown(report: dict[str, Any], split: str) -> str:
    variants = report["variants"]
    subsets = [c for c in CONDITION_COLUMNS if all(c in v[split] for v in variants.values())]
    frames = next(iter(variants.values()))[split]
    lines = [
        f"mIoU (%) on the {split} split (best-on-val checkpoints, fp32; frames per subset: "
        + ", ".join(f"{c} {frames[c]['frames']}" for c in subsets)
        + ").",
        "",
        "| variant | " + " | ".join(subsets) + " | best epoch / epochs | iterations |",
        "|---|" + "---|" * (len(subsets) + 2),
    ]
    for name, v in variants.items():
        scores = " | ".join(f"{v[split][c]['miou']:.2f}" for c in subsets)
        lines.append(f"| {name} | {scores} | {v['best_epoch']} / {v['last_epoch']} | {v['iterations']} |")
    if report["missing"]:
        lines += ["", f"**Missing variants (failed runs): {', '.join(report['missing'])}.**"]
    if "fused_meets_target" in report:
        verdict = "yes" if report["fused_meets_target"] else "NO"
        lines += ["", f"Fused mIoU over all {split} frames >= {TARGET_MIOU:.0f}: {verdict}."]
    lines += [
        "",
        "Fused beats image-only and events-only: "
        + ", ".join(f"{c}: {'yes' if ok else 'NO'}" for c, ok in report["fused_beats_both"].items())
        + ".",
    ]
    if "fused" in variants:
        fused = variants["fused"][split]
        lines += ["", "Per-class IoU (%) of the fused model:", "", "| class | " + " | ".join(subsets) + " |"]
        lines.append("|---|" + "---|" * len(subsets))
        for name in fused["all"]["per_class_iou"]:
            lines.append(f"| {name} | " + " | ".join(f"{fused[c]['per_class_iou'][name]:.1f}" for c in subsets) + " |")
    if report.get("timings"):
        lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items()) + "."]
    return "\n".join(lines) + "\n"


def ablation(args: argparse.Namespace) -> None:
    """ablation.json + ablation.md from `<runs>/<modality>/` run folders (metrics.json and the conditions JSON);
    a modality whose folder lacks them (a failed run) is listed as missing."""
    runs = Path(args.runs)
    evaluated = [m for m in MODALITIES if (runs / m / f"metrics_{args.split}_conditions.json").is_file()]
    if not evaluated:
        raise FileNotFoundError(f"no <modality>/metrics_{args.split}_conditions.json in {runs} for {list(MODALITIES)}")
    variants = {m: _variant_summary(runs / m, args.split) for m in evaluated}
    report: dict[str, Any] = {"split": args.split, "variants": variants, "fused_beats_both": {}}
    report["missing"] = [m for m in MODALITIES if m not in variants]
    if "fused" in variants:
        report["fused_meets_target"] = variants["fused"][args.split]["all"]["miou"] >= TARGET_MIOU
    if set(variants) == set(MODALITIES):
        for condition in HARD_CONDITIONS:
            scores = {m: v[args.split].get(condition, {}).get("miou") for m, v in variants.items()}
            if None not in scores.values():
                report["fused_beats_both"][condition] = scores["fused"] > max(
                    scores["image_only"], scores["events_only"]
                )
    if args.timings:
        report["timings"] = json.loads(Path(args.timings).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    markdown = _ablation_markdown(report, args.split)
    (out / "ablation.md").write_text(markdown)
    print(markdown + f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")


def block_mode_oracle(label: np.ndarray, stride: int, num_classes: int) -> np.ndarray:
    """The best prediction a head at 1/`stride` resolution can make without sub-cell detail: every stride x stride
    cell takes its most frequent class (255 = unlabeled counts as a class of its own), upsampled by repetition."""
    height, width = label.shape
    cells = label[: height - height % stride, : width - width % stride]
    cells = cells.reshape(height // stride, stride, width // stride, stride).transpose(0, 2, 1, 3)
    cells = cells.reshape(height // stride, width // stride, stride * stride)
    classes = np.append(np.arange(num_classes), 255)
    votes = np.stack([(cells == c).sum(-1) for c in classes], -1)
    mode = classes[votes.argmax(-1)].astype(np.uint8)
    oracle = np.full_like(label, 255)
    oracle[: mode.shape[0] * stride, : mode.shape[1] * stride] = mode.repeat(stride, 0).repeat(stride, 1)
    return oracle


def ceiling(args: argparse.Namespace) -> None:
    """mIoU upper bound from label resolution alone: the block-mode oracle at the head's stride, on labels rendered
    for the test scenes of `dataset_plan` at every requested size (no events, no model)."""
    names = class_set("dsec11").names
    num_classes = len(names)
    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        base = SequenceConfig(scene=SceneConfig(height=height, width=width, duration_s=args.seconds))
        matrix = ConfusionMatrix(num_classes)
        for _split, _name, config in dataset_plan(base, {"train": 0, "val": 0, "test": args.test}, seed=args.seed):
            scene = Scene(config.scene)
            for t_s in np.linspace(0.1, args.seconds - 0.1, args.frames):
                label = scene.render(float(t_s)).label
                oracle = block_mode_oracle(label, args.stride, num_classes)
                matrix.update(torch.from_numpy(oracle.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
        metrics = matrix.compute()
        rows.append((f"{width}x{height}", metrics.miou * 100, metrics.iou * 100))
    print(
        f"Label-resolution ceiling: block-mode oracle at stride {args.stride}, {args.test} test scenes x "
        f"{args.frames} frames (dataset_plan seed {args.seed}).\n"
    )
    print("| size | mIoU | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * num_classes)
    for size, miou, iou in rows:
        print(f"| {size} | {miou:.1f} | " + " | ".join(f"{v:.1f}" for v in iou.tolist()) + " |")


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
    gen.add_argument("--jobs", type=int, default=2, help="worker processes: sequences written in parallel")
    gen.set_defaults(func=generate)
    exp = commands.add_parser("export", help="model-only checkpoint from a training checkpoint")
    exp.add_argument("--checkpoint", required=True)
    exp.add_argument("--out", required=True)
    exp.add_argument("--half", action="store_true", help="store the weights in float16 (about half the file)")
    exp.set_defaults(func=export)
    cond = commands.add_parser("conditions", help="metrics per condition tag (normal / dark / hdr_bright)")
    cond.add_argument("--config", required=True)
    cond.add_argument("--checkpoint", required=True)
    cond.add_argument("--split")
    cond.add_argument("--output")
    cond.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cond.set_defaults(func=conditions)
    ceil = commands.add_parser("ceiling", help="mIoU bound of a stride-4 head from the label resolution alone")
    ceil.add_argument("--sizes", nargs="+", default=["128x96", "192x144", "256x192"], metavar="WxH")
    ceil.add_argument("--seed", type=int, default=1, help="dataset_plan seed of the GPU recipe")
    ceil.add_argument("--test", type=int, default=6, help="test scenes")
    ceil.add_argument("--seconds", type=float, default=8.0)
    ceil.add_argument("--frames", type=int, default=12, help="labels rendered per scene")
    ceil.add_argument("--stride", type=int, default=4, help="output stride of the head (SegFormer: 4)")
    ceil.set_defaults(func=ceiling)
    abl = commands.add_parser("ablation", help="table of the fused / image_only / events_only runs")
    abl.add_argument("--runs", required=True, help="folder holding one run folder per modality")
    abl.add_argument("--out", required=True, help="folder for ablation.md and ablation.json")
    abl.add_argument("--split", default="test")
    abl.add_argument("--timings", help="JSON {phase: seconds} of the recipe, copied into the report")
    abl.set_defaults(func=ablation)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
