"""The shipped train configs load, comment every key and encode the official recipe; overrides and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mambaseg_core.config import ConfigError
from mambaseg_core.train.config import load_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_comments_every_key(path):
    cfg = load_train_config(path)
    assert Path(cfg.model.config).name.startswith("mambaseg_")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped.split("#")[0]:
            assert "#" in line, f"{path.name}:{number} has a key without a comment: {line!r}"


def test_official_recipes():
    ddd17 = load_train_config(CONFIGS[0].with_name("ddd17.yaml"))
    dsec = load_train_config(CONFIGS[0].with_name("dsec.yaml"))
    assert (ddd17.optim.lr, ddd17.data.batch_size, ddd17.runtime.seed) == (2e-4, 12, 1)
    assert (dsec.optim.lr, dsec.data.batch_size, dsec.runtime.seed) == (3e-5, 4, 2)
    for cfg in (ddd17, dsec):
        assert cfg.schedule.policy == "fixed" and cfg.schedule.epochs == 60 and cfg.schedule.warmup_iters == 0
        assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.eps == 1e-8 and cfg.optim.weight_decay == 0.01
        assert cfg.runtime.precision == "fp32" and cfg.ema is None and cfg.optim.grad_clip_norm is None
        assert cfg.data.val_split is None  # official: "best" on the test split


def test_dotted_overrides_and_errors_name_the_key():
    path = CONFIGS[0].with_name("dsec.yaml")
    cfg = load_train_config(path, ["optim.lr=1e-4", "ema={decay: 0.999}", "data.root=/data/x"])
    assert cfg.optim.lr == 1e-4 and cfg.ema is not None and cfg.ema.decay == 0.999 and cfg.data.root == "/data/x"
    with pytest.raises(ConfigError, match=r"'optim\.lrr' in .*dsec\.yaml: unknown key"):
        load_train_config(path, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"runtime\.precision.*one of"):
        load_train_config(path, ["runtime.precision=fp8"])
    with pytest.raises(ConfigError, match=r"data\.splits"):
        load_train_config({"data": {"dataset": "ddd17", "root": "x", "splits": {"val": {"sequences": ["a"]}}}})


def test_errors_inside_an_optional_section_name_the_inner_key():
    path = CONFIGS[0].with_name("dsec.yaml")
    # `ema` is `EmaConfig | None`: the error must reach into the section, not just say "matches none of".
    with pytest.raises(ConfigError, match=r"'ema\.decya'.*unknown key"):
        load_train_config(path, ["ema={decya: 0.9}"])
