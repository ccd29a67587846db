"""`mambaseg-prepare-dsec SOURCE OUTPUT`: turn the DSEC-Semantic download into the layout the loader reads.

Labels are copied, events are symlinked (or hard-linked / copied), and each labelled rectified frame is
warped into the event camera's view (`images/left/ev_inf`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mambaseg_core.data.errors import DatasetError
from mambaseg_core.data.prepare_dsec import prepare_dsec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaseg-prepare-dsec", description=__doc__)
    parser.add_argument("source", type=Path, help="folder with the unpacked download: {train,test}/<seq>/...")
    parser.add_argument("output", type=Path, help="folder to write {train,test}/<seq>/... into")
    parser.add_argument(
        "--link",
        choices=("symlink", "hardlink", "copy"),
        default="symlink",
        help="how to place events.h5 and rectify_map.h5",
    )
    parser.add_argument("--overwrite", action="store_true", help="re-warp ev_inf images that already exist")
    parser.add_argument("--workers", type=int, default=4, help="threads warping images")
    args = parser.parse_args(argv)
    try:
        prepare_dsec(args.source, args.output, link=args.link, overwrite=args.overwrite, workers=args.workers)
    except DatasetError as err:
        print(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
