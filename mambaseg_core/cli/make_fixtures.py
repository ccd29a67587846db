"""`mambaseg-make-fixtures OUT --kind dsec|ddd17|dsec-download`: write a tiny synthetic dataset."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mambaseg_core.data.fixtures import write_ddd17_fixture, write_dsec_download_fixture, write_dsec_fixture

WRITERS: dict[str, Callable[..., Path]] = {
    "dsec": write_dsec_fixture,
    "ddd17": write_ddd17_fixture,
    "dsec-download": write_dsec_download_fixture,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaseg-make-fixtures", description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write into (created)")
    parser.add_argument("--kind", choices=sorted(WRITERS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    WRITERS[args.kind](args.out, seed=args.seed)
    print(f"wrote a {args.kind} fixture to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
