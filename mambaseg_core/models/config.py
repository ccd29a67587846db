"""ModelConfig: every hyper-parameter of MambaSeg, loaded from YAML with `load_model_config`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mambaseg_core.config import ConfigError, load_config
from mambaseg_core.ops.cross_scan import CHANNEL_MERGES

SCAN_BACKENDS = ("auto", "reference", "torch", "cuda", "mamba_ssm")
# Which inputs the model sees: both, or one with the other replaced by zeros (the modality ablation).
MODALITIES = ("fused", "image_only", "events_only")


@dataclass
class EncoderSSMConfig:
    """VMamba-T encoder block settings (upstream "vmambav2v_tiny")."""

    d_state: int = 1
    ssm_ratio: float = 1.0
    dt_rank: int | Literal["auto"] = "auto"
    conv_bias: bool = False
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2

    def validate(self) -> None:
        _check_ssm(self.d_state, self.ssm_ratio, self.dt_rank)
        if self.mlp_ratio <= 0:
            raise ConfigError("mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError("drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")


@dataclass
class FusionSSMConfig:
    """SSM settings of the DDIM fusion modules (the DDIM defaults, not the encoder's)."""

    d_state: int = 16
    ssm_ratio: float = 2.0
    conv_bias: bool = True

    def validate(self) -> None:
        _check_ssm(self.d_state, self.ssm_ratio, "auto")


def _check_ssm(d_state: int, ssm_ratio: float, dt_rank: int | str) -> None:
    if d_state < 1:
        raise ConfigError("d_state", f"must be >= 1, got {d_state}")
    if ssm_ratio <= 0:
        raise ConfigError("ssm_ratio", f"must be > 0, got {ssm_ratio}")
    if dt_rank != "auto" and int(dt_rank) < 1:
        raise ConfigError("dt_rank", f"must be 'auto' or >= 1, got {dt_rank}")


@dataclass
class ModelConfig:
    """MambaSeg hyper-parameters. Defaults are the official DSEC-style model except the data-dependent keys."""

    image_size: tuple[int, int]
    image_channels: int = 3
    num_classes: int = 11
    event_bins: int = 10
    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 2, 8, 2)
    encoder: EncoderSSMConfig = field(default_factory=EncoderSSMConfig)
    fusion: FusionSSMConfig = field(default_factory=FusionSSMConfig)
    decoder_dim: int = 768
    decoder_dropout: float = 0.1
    scan_backend: Literal["auto", "reference", "torch", "cuda", "mamba_ssm"] = "auto"
    ctim_merge: Literal["official", "intended"] = "official"
    # "image_only" / "events_only": the other input is replaced by zeros inside MambaSeg (same architecture).
    modality: Literal["fused", "image_only", "events_only"] = "fused"

    def validate(self) -> None:
        height, width = self.image_size
        if height < 1 or width < 1:
            raise ConfigError("image_size", f"must be positive (H, W), got {self.image_size}")
        for key in ("image_channels", "num_classes", "event_bins", "decoder_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")
        if len(self.dims) != 4 or len(self.depths) != 4:
            raise ConfigError("dims", f"dims and depths need 4 stages each, got {self.dims} and {self.depths}")
        for i, dim in enumerate(self.dims):
            # The fusion gates reduce channels by 4 and 16; the stem halves dims[0].
            if dim < 16 or dim % 2:
                raise ConfigError(f"dims[{i}]", f"must be even and >= 16, got {dim}")
        for i, depth in enumerate(self.depths):
            if depth < 1:
                raise ConfigError(f"depths[{i}]", f"must be >= 1, got {depth}")
        if not 0.0 <= self.decoder_dropout < 1.0:
            raise ConfigError("decoder_dropout", f"must be in [0, 1), got {self.decoder_dropout}")
        if self.scan_backend not in SCAN_BACKENDS:
            raise ConfigError("scan_backend", f"must be one of {list(SCAN_BACKENDS)}, got {self.scan_backend!r}")
        if self.ctim_merge not in CHANNEL_MERGES:
            raise ConfigError("ctim_merge", f"must be one of {list(CHANNEL_MERGES)}, got {self.ctim_merge!r}")
        if self.modality not in MODALITIES:
            raise ConfigError("modality", f"must be one of {list(MODALITIES)}, got {self.modality!r}")
        self.encoder.validate()
        self.fusion.validate()

    @property
    def stage_grids(self) -> list[tuple[int, int]]:
        """(H_i, W_i) of every stage: ceil(H/4), then halved (ceil) per stage."""
        return stage_grids(self.image_size, len(self.dims))

    @property
    def stage_tokens(self) -> list[int]:
        """H_i * W_i per stage; these size the TSSM weights."""
        return [h * w for h, w in self.stage_grids]


def stage_grids(image_size: tuple[int, int], stages: int = 4) -> list[tuple[int, int]]:
    """Feature-map sizes per stage for an (H, W) input: every stride-2 k3 p1 conv gives ceil(in / 2)."""
    grids = [(math.ceil(image_size[0] / 4), math.ceil(image_size[1] / 4))]
    for _ in range(stages - 1):
        grids.append((math.ceil(grids[-1][0] / 2), math.ceil(grids[-1][1] / 2)))
    return grids


def load_model_config(source: str | Path | dict[str, Any] | ModelConfig, **overrides: Any) -> ModelConfig:
    """A validated ModelConfig from a YAML path, a mapping or an existing config, with keyword overrides."""
    if isinstance(source, ModelConfig):
        config = dataclasses.replace(source, **overrides)
        config.validate()
        return config
    return load_config(ModelConfig, source, **overrides)
