"""Shared plumbing for benchmark scripts: a printed table and a dated section in docs/benchmarks.md."""

from __future__ import annotations

import datetime
import platform
import re
from collections.abc import Sequence
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def device_name() -> str:
    """The accelerator (or CPU) the numbers were measured on."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
        cpu = platform.processor() or platform.machine()
        return f"CPU {cpu} x{torch.get_num_threads()} threads (torch {torch.__version__})"
    except ImportError:
        return f"CPU {platform.machine()}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats are printed with 4 significant digits."""

    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md, stamped with device and date."""
    stamp = f"_Measured on {device_name()}, {datetime.date.today().isoformat()}._"
    section = f"<!-- {name}:begin -->\n## {name}\n\n{stamp}\n\n{body.strip()}\n<!-- {name}:end -->"
    header = "# Benchmarks\n\nEach section is written by a script in `benchmarks/`.\n"
    text = doc.read_text() if doc.exists() else header
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
