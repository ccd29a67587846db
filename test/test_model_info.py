"""mambaseg-info: true and paper-style (thop rule) counts."""

from __future__ import annotations

from pathlib import Path

import torch

from mambaseg_core.cli.info import count_parameters, main
from mambaseg_core.models import MambaSeg, load_model_config

CONFIGS = Path(__file__).resolve().parents[1] / "config" / "model"


def test_info_reproduces_the_published_parameter_count(capsys):
    assert main(["--config", str(CONFIGS / "mambaseg_ddd17.yaml")]) == 0
    out = capsys.readouterr().out
    print(out)
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1:] == ["97.549M", "25.441M"]  # true (spec §8) vs the paper's 25.44M (spec §7, §9.1)
    thop_macs = float(next(line for line in out.splitlines() if line.startswith("thop-rule MACs")).split()[2][:-1])
    assert abs(thop_macs - 15.59) < 0.1  # the paper's 15.59G under the same counting rule
    true_macs = float(next(line for line in out.splitlines() if line.startswith("true MACs")).split()[2][:-1])
    assert 30 < true_macs < 40  # spec §9.1 estimates ~35G


def test_dsec_true_parameter_count():
    with torch.device("meta"):
        model = MambaSeg(load_model_config(CONFIGS / "mambaseg_dsec.yaml"))
    true_counts, thop_counts = count_parameters(model)
    assert sum(true_counts.values()) == 256_181_331  # official_keys_dsec.tsv
    assert sum(thop_counts.values()) < sum(true_counts.values())
