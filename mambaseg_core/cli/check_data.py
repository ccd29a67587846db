"""`mambaseg-check-data ROOT [--kind dsec|ddd17]`: validate a dataset root and print a summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambaseg_core.data.check import CHECKERS, guess_kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaseg-check-data", description=__doc__)
    parser.add_argument(
        "root", type=Path, help="DSEC-Semantic root (holding train/ and test/) or DDD17 root (holding dir*)"
    )
    parser.add_argument(
        "--kind", choices=sorted(CHECKERS), help="dataset kind (default: ddd17 if ROOT has dir* folders)"
    )
    parser.add_argument("--classes", type=int, choices=(11, 19), default=11, help="DSEC label set to check")
    parser.add_argument(
        "--max-labels", type=int, default=0, help="DSEC: read at most this many labels per sequence (0 = all)"
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    kind = args.kind or guess_kind(args.root)
    if kind == "dsec":
        report = CHECKERS[kind](args.root, classes=args.classes, max_labels=args.max_labels)
    else:
        report = CHECKERS[kind](args.root)
    print(f"{kind} dataset at {args.root}")
    print(report.format())
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
