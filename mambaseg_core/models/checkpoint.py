"""Checkpoint I/O: our own format, the official MambaSeg checkpoints, and the VMamba-T ImageNet weights.

Our format: {"format": "mambaseg", "version": 1, "model_config": <ModelConfig as a dict>,
"state_dict": <our names>, ...extra}. Official: {"epoch": int, "state_dict": <official names>} or a bare
state dict. Everything is loaded strictly; errors list missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mambaseg_core.config import to_dict
from mambaseg_core.models.config import EncoderSSMConfig, FusionSSMConfig, ModelConfig, load_model_config, stage_grids
from mambaseg_core.models.mambaseg import MambaSeg
from mambaseg_core.models.official import ENCODER_KEYS, MODEL_KEYS, rename_keys

FORMAT = "mambaseg"
VERSION = 1

# Published input sizes, used to infer image_size from an official checkpoint's token counts.
KNOWN_IMAGE_SIZES: dict[str, tuple[int, int]] = {"DDD17": (200, 346), "DSEC": (440, 640)}


def _read(path: str | Path, allow_unsafe_pickle: bool) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_unsafe_pickle:
            raise ValueError(
                f"torch.load(weights_only=True) cannot read {path}: {exc}. If it is a trusted checkpoint that also "
                "holds other Python objects, pass allow_unsafe_pickle=True"
            ) from exc
    return torch.load(path, map_location="cpu", weights_only=False)


def _check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    names: Callable[[str], str] = str,
    unknown: Sequence[str] = (),
) -> None:
    """Raise ValueError listing missing, unexpected (incl. `unknown`) and mis-shaped keys, named by `names`."""
    expected = model.state_dict()
    missing = sorted(names(k) for k in expected.keys() - state_dict.keys())
    unexpected = sorted([*unknown, *(names(k) for k in state_dict.keys() - expected.keys())])
    misshaped = sorted(
        f"{names(k)}: checkpoint {tuple(state_dict[k].shape)}, model expects {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    )
    problems = [
        f"{title} ({len(items)}):\n    " + "\n    ".join(items)
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped))
        if items
    ]
    if problems:
        raise ValueError("state dict does not match the model:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------
# Official checkpoints


def _official_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("not an official MambaSeg checkpoint: expected {'epoch', 'state_dict'} or a bare state dict")
    return dict(state_dict)


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"official state dict lacks {key!r}, needed to infer the architecture")
    return tuple(sd[key].shape)


def official_stage_tokens(official_sd: Mapping[str, torch.Tensor]) -> list[int]:
    """Token count H_i*W_i per stage, read from the TSSM skip parameters `ccbs.{i}.ssm_i.Ds` (2P,)."""
    return [_shape(official_sd, f"ccbs.{i}.ssm_i.Ds")[0] // 2 for i in range(4)]


def infer_official_config(official_sd: Mapping[str, torch.Tensor], image_size: tuple[int, int]) -> ModelConfig:
    """Architecture of an official state dict, from its tensor shapes; image_size must match its token counts."""
    dims = tuple(_shape(official_sd, f"encoder_img.outnorm{i}.weight")[0] for i in range(4))
    block = re.compile(r"encoder_img\.layers\.(\d)\.blocks\.(\d+)\.norm\.weight")
    depths = [0] * 4
    for key in official_sd:
        match = block.fullmatch(key)
        if match:
            depths[int(match[1])] = max(depths[int(match[1])], int(match[2]) + 1)
    enc = "encoder_img.layers.0.blocks.0.op."
    enc_rank = _shape(official_sd, enc + "dt_projs_weight")[2]
    fusion = "ccbs.0.ss2d_i."
    config = ModelConfig(
        image_size=(int(image_size[0]), int(image_size[1])),
        image_channels=_shape(official_sd, "encoder_img.patch_embed.0.weight")[1],
        num_classes=_shape(official_sd, "decoder.linear_pred.weight")[0],
        event_bins=_shape(official_sd, "encoder_ev.patch_embed.0.weight")[1],
        dims=dims,
        depths=tuple(depths),
        encoder=EncoderSSMConfig(
            d_state=_shape(official_sd, enc + "A_logs")[1],
            ssm_ratio=_shape(official_sd, enc + "in_proj.weight")[0] / dims[0],
            dt_rank="auto" if enc_rank == math.ceil(dims[0] / 16) else enc_rank,
            conv_bias=enc + "conv2d.bias" in official_sd,
        ),
        fusion=FusionSSMConfig(
            d_state=_shape(official_sd, fusion + "A_logs")[1],
            ssm_ratio=_shape(official_sd, fusion + "in_proj.weight")[0] / dims[0],
            conv_bias=fusion + "conv2d.bias" in official_sd,
        ),
        decoder_dim=_shape(official_sd, "decoder.linear_fuse.0.weight")[0],
    )
    tokens = official_stage_tokens(official_sd)
    if config.stage_tokens != tokens:
        raise ValueError(
            f"image_size {tuple(image_size)} gives stage token counts {config.stage_tokens}, but the checkpoint's "
            f"TSSM weights are sized for {tokens} (token grid {_describe_tokens(tokens)}); pass the resolution "
            "the model was trained at"
        )
    return config


def _describe_tokens(tokens: list[int]) -> str:
    grids = _token_grids(tokens)
    if not grids:
        return "unknown"
    return " or ".join(f"{h}x{w} (H in {4 * h - 3}..{4 * h}, W in {4 * w - 3}..{4 * w})" for h, w in grids)


def _tokens(image_size: tuple[int, int]) -> list[int]:
    return [h * w for h, w in stage_grids(image_size)]


def _token_grids(tokens: list[int]) -> list[tuple[int, int]]:
    """Stage-0 grids (h, w) whose halving chain reproduces every stage's token count."""
    return [
        (h, tokens[0] // h)
        for h in range(1, tokens[0] + 1)
        if tokens[0] % h == 0 and _tokens((4 * h, 4 * (tokens[0] // h))) == tokens
    ]


def infer_official_image_size(official_sd: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """The published resolution whose token counts match the TSSM shapes; ValueError if none or several do."""
    tokens = official_stage_tokens(official_sd)
    matches = {name: size for name, size in KNOWN_IMAGE_SIZES.items() if _tokens(size) == tokens}
    if len(matches) != 1:
        raise ValueError(
            f"cannot infer image_size: the TSSM weights fit stage token counts {tokens} (stage-0 grid "
            f"{_describe_tokens(tokens)}), which match {len(matches)} of the published sizes {KNOWN_IMAGE_SIZES}; "
            "pass image_size=(H, W)"
        )
    return next(iter(matches.values()))


def load_official_checkpoint(
    path: str | Path,
    image_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    scan_backend: str | None = None,
    allow_unsafe_pickle: bool = False,
) -> MambaSeg:
    """Build a MambaSeg from an official checkpoint, load it strictly, return it in eval mode.

    image_size (H, W) must be the training resolution (200x346 DDD17, 440x640 DSEC); when None it is
    inferred from the TSSM shapes if exactly one published size fits.
    """
    return _model_from_official(_read(path, allow_unsafe_pickle), image_size, device, scan_backend)


def _model_from_official(
    checkpoint: Any, image_size: tuple[int, int] | None, device: str | torch.device, scan_backend: str | None
) -> MambaSeg:
    official_sd = _official_state_dict(checkpoint)
    if image_size is None:
        image_size = infer_official_image_size(official_sd)
    config = infer_official_config(official_sd, image_size)
    if scan_backend is not None:
        config = load_model_config(config, scan_backend=scan_backend)
    state_dict, unknown = rename_keys(official_sd, MODEL_KEYS.to_ours)
    with torch.device("meta"):
        model = MambaSeg(config)
    _check_state_dict(model, state_dict, lambda key: f"{MODEL_KEYS.to_official(key)} (ours: {key})", unknown)
    return _materialise(model, state_dict, device)


def _materialise(model: MambaSeg, state_dict: Mapping[str, torch.Tensor], device: str | torch.device) -> MambaSeg:
    """Allocate a meta-device model on `device` and copy `state_dict` in (casting, e.g. fp16 storage, to fp32)."""
    model = model.to_empty(device=device)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# Our format


def save_checkpoint(
    model: MambaSeg, path: str | Path, *, weights_dtype: torch.dtype | None = None, **extra: Any
) -> None:
    """Write {"format", "version", "model_config", "state_dict", **extra} to `path`.

    `weights_dtype` (e.g. torch.float16) stores the floating-point tensors in that type, about half the file for a
    deployed model; `load_model` casts them back into the float32 model.
    """
    reserved = {"format", "version", "model_config", "state_dict"} & extra.keys()
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved by the checkpoint format")
    state_dict = model.state_dict()
    if weights_dtype is not None:
        if not weights_dtype.is_floating_point:
            raise ValueError(f"weights_dtype must be a floating-point type, got {weights_dtype}")
        state_dict = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": to_dict(model.config),
        "state_dict": state_dict,
        **extra,
    }
    torch.save(checkpoint, Path(path))


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    scan_backend: str | None = None,
    image_size: tuple[int, int] | None = None,
    allow_unsafe_pickle: bool = False,
) -> MambaSeg:
    """A MambaSeg in eval mode from our checkpoint format or an official checkpoint.

    scan_backend overrides the stored one. image_size is only used for official checkpoints (which do not
    record it); when None it is inferred from the TSSM shapes if unambiguous.
    """
    checkpoint = _read(path, allow_unsafe_pickle)
    if not (isinstance(checkpoint, Mapping) and checkpoint.get("format") == FORMAT):
        return _model_from_official(checkpoint, image_size, device, scan_backend)
    if checkpoint.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {checkpoint.get('version')!r}, this code reads {VERSION}")
    overrides = {} if scan_backend is None else {"scan_backend": scan_backend}
    config = load_model_config(dict(checkpoint["model_config"]), **overrides)
    with torch.device("meta"):
        model = MambaSeg(config)
    _check_state_dict(model, checkpoint["state_dict"])
    return _materialise(model, checkpoint["state_dict"], device)


# ---------------------------------------------------------------------------------------------------
# VMamba-T ImageNet weights


@dataclass
class PretrainedReport:
    """What `load_vmamba_pretrained` did, per encoder-prefixed key of our model."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> reason
    not_in_checkpoint: list[str] = field(default_factory=list)  # our keys left at their init


def load_vmamba_pretrained(model: MambaSeg, path: str | Path, allow_unsafe_pickle: bool = False) -> PretrainedReport:
    """Load the VMamba-T ImageNet checkpoint (`['model']`, VSSM keys) into both encoders, as official training does.

    Skipped: `classifier.*` (the ImageNet head, deleted by the backbone); the event stem always (it is
    replaced by a fresh one with event_bins inputs); the image stem unless image_channels == 3. outnorms
    are not in the checkpoint and keep their init. Any other unknown or mis-shaped key raises ValueError.
    """
    checkpoint = _read(path, allow_unsafe_pickle)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise ValueError(f"{path} is not a VMamba checkpoint: expected a dict with a 'model' state dict")
    vssm_sd: Mapping[str, torch.Tensor] = checkpoint["model"]
    report = PretrainedReport()
    ours = model.state_dict()
    updates: dict[str, torch.Tensor] = {}
    unknown, misshaped = [], []
    for branch, encoder_prefix in (("image", "image_encoder."), ("event", "event_encoder.")):
        for key, value in vssm_sd.items():
            label = f"{branch}:{key}"
            if key.startswith("classifier."):
                report.skipped[label] = "ImageNet classifier, not part of the backbone"
                continue
            if key.startswith("patch_embed.") and (branch == "event" or model.config.image_channels != 3):
                report.skipped[label] = "stem re-initialised for this branch's input channels"
                continue
            our_key = ENCODER_KEYS.to_ours(key)
            if our_key is None or encoder_prefix + our_key not in ours:
                unknown.append(key)
                continue
            target = encoder_prefix + our_key
            if tuple(value.shape) != tuple(ours[target].shape):
                misshaped.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(ours[target].shape)}")
                continue
            updates[target] = value
            report.loaded.append(target)
    if unknown or misshaped:
        raise ValueError(
            f"{path} does not fit the encoders: unknown keys {sorted(set(unknown))[:10]}, "
            f"mis-shaped {sorted(set(misshaped))[:10]}"
        )
    with torch.no_grad():
        for key, value in updates.items():
            ours[key].copy_(value)
    report.not_in_checkpoint = sorted(
        key for key in ours if key.startswith(("image_encoder.", "event_encoder.")) and key not in updates
    )
    return report
