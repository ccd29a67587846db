"""Pure key converters between our parameter names and the official MambaSeg / VMamba ones.

Every parameter keeps the official layout (shape and memory order), so converting is renaming only.
A rule pairs an official and an ours template; `{i}`/`{j}` match indices and `{p}` a parameter or
buffer name (weight, bias, running_mean, ...), and rules apply in both directions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

V = TypeVar("V")

# Inner names of an SS2D / TSSM module (the same in the encoder blocks, CSIM and CTIM).
_SSM_RULES = (
    ("in_proj.{p}", "in_proj.{p}"),
    ("conv2d.{p}", "conv.{p}"),
    ("x_proj_weight", "scan.x_proj_weight"),
    ("dt_projs_weight", "scan.dt_proj_weight"),
    ("dt_projs_bias", "scan.dt_proj_bias"),
    ("A_logs", "scan.A_log"),
    ("Ds", "scan.D"),
    ("out_norm.{p}", "out_norm.{p}"),
    ("out_proj.{p}", "out_proj.{p}"),
)

# A VMamba encoder (Backbone_VSSM), relative to its prefix. Also the VSSM ImageNet checkpoint layout.
ENCODER_RULES = (
    ("patch_embed.0.{p}", "stem.conv1.{p}"),
    ("patch_embed.2.{p}", "stem.norm1.{p}"),
    ("patch_embed.5.{p}", "stem.conv2.{p}"),
    ("patch_embed.7.{p}", "stem.norm2.{p}"),
    ("layers.{i}.blocks.{j}.norm.{p}", "stages.{i}.{j}.ssm_norm.{p}"),
    *((f"layers.{{i}}.blocks.{{j}}.op.{off}", f"stages.{{i}}.{{j}}.ssm.{ours}") for off, ours in _SSM_RULES),
    ("layers.{i}.blocks.{j}.norm2.{p}", "stages.{i}.{j}.mlp_norm.{p}"),
    ("layers.{i}.blocks.{j}.mlp.fc1.{p}", "stages.{i}.{j}.mlp.fc1.{p}"),
    ("layers.{i}.blocks.{j}.mlp.fc2.{p}", "stages.{i}.{j}.mlp.fc2.{p}"),
    ("layers.{i}.downsample.1.{p}", "downsamples.{i}.conv.{p}"),
    ("layers.{i}.downsample.3.{p}", "downsamples.{i}.norm.{p}"),
    *((f"outnorm{i}.{{p}}", f"out_norms.{i}.{{p}}") for i in range(4)),
)

# A DDIM (`ccbs.{i}` officially, `fusion.{i}` here), relative to its prefix.
_FUSION_RULES = (
    ("norm_i.{p}", "image_norm.{p}"),
    ("norm_e.{p}", "event_norm.{p}"),
    ("cca.shared_fc.1.{p}", "ctim.channel_gate.reduce.{p}"),
    ("cca.shared_fc.3.{p}", "ctim.channel_gate.expand.{p}"),
    *((f"ssm_i.{off}", f"ctim.image_tssm.{ours}") for off, ours in _SSM_RULES),
    *((f"ssm_e.{off}", f"ctim.event_tssm.{ours}") for off, ours in _SSM_RULES),
    ("conv_i1.{p}", "ctim.image_skip.{p}"),
    ("conv_e1.{p}", "ctim.event_skip.{p}"),
    ("ca1.fc.0.{p}", "ctim.image_attention.reduce.{p}"),
    ("ca1.fc.2.{p}", "ctim.image_attention.expand.{p}"),
    ("ca2.fc.0.{p}", "ctim.event_attention.reduce.{p}"),
    ("ca2.fc.2.{p}", "ctim.event_attention.expand.{p}"),
    ("csa.mlp.0.{p}", "csim.spatial_gate.hidden.{p}"),
    ("csa.mlp.2.{p}", "csim.spatial_gate.out.{p}"),
    *((f"ss2d_i.{off}", f"csim.image_ss2d.{ours}") for off, ours in _SSM_RULES),
    *((f"ss2d_e.{off}", f"csim.event_ss2d.{ours}") for off, ours in _SSM_RULES),
    ("conv_i2.{p}", "csim.image_skip.{p}"),
    ("conv_e2.{p}", "csim.event_skip.{p}"),
    ("sa1.conv1.{p}", "csim.image_attention.conv.{p}"),
    ("sa2.conv1.{p}", "csim.event_attention.conv.{p}"),
    ("conv_i3.{p}", "image_out.{p}"),
    ("conv_e3.{p}", "event_out.{p}"),
)


def _prefixed(official_prefix: str, ours_prefix: str, rules: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(official_prefix + off, ours_prefix + ours) for off, ours in rules]


MODEL_RULES = (
    *_prefixed("encoder_img.", "image_encoder.", ENCODER_RULES),
    *_prefixed("encoder_ev.", "event_encoder.", ENCODER_RULES),
    *_prefixed("ccbs.{i}.", "fusion.{i}.", _FUSION_RULES),
    ("out_convs.{i}.{p}", "decoder_proj.{i}.{p}"),
    # The official head numbers its projections c1..c4 from 1; ours index stages from 0.
    *((f"decoder.linear_c{i + 1}.proj.{{p}}", f"decoder.proj.{i}.{{p}}") for i in range(4)),
    ("decoder.linear_fuse.0.{p}", "decoder.fuse_conv.{p}"),
    ("decoder.linear_fuse.1.{p}", "decoder.fuse_norm.{p}"),
    ("decoder.linear_pred.{p}", "decoder.classifier.{p}"),
)

_PLACEHOLDERS = {"{i}": r"(?P<i>\d+)", "{j}": r"(?P<j>\d+)", "{p}": r"(?P<p>[A-Za-z_]+)"}


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for placeholder, group in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape(placeholder), group)
    return re.compile(pattern)


class KeyMap:
    """A bidirectional renaming defined by (official template, ours template) rules."""

    def __init__(self, rules: Iterable[tuple[str, str]]):
        self._rules = [(_compile(off), off, _compile(ours), ours) for off, ours in rules]

    def to_ours(self, official_key: str) -> str | None:
        """Our name for `official_key`, or None if no rule knows it."""
        for pattern, _, _, target in self._rules:
            match = pattern.fullmatch(official_key)
            if match:
                return target.format(**match.groupdict())
        return None

    def to_official(self, our_key: str) -> str | None:
        """The official name for `our_key`, or None if no rule knows it."""
        for _, target, pattern, _ in self._rules:
            match = pattern.fullmatch(our_key)
            if match:
                return target.format(**match.groupdict())
        return None


MODEL_KEYS = KeyMap(MODEL_RULES)
ENCODER_KEYS = KeyMap(ENCODER_RULES)


def rename_keys(mapping: Mapping[str, V], rename: Callable[[str], str | None]) -> tuple[dict[str, V], list[str]]:
    """(mapping with renamed keys, keys that `rename` does not know)."""
    renamed: dict[str, V] = {}
    unknown = []
    for key, value in mapping.items():
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = value
    return renamed, unknown


def _rename_all(mapping: Mapping[str, V], rename: Callable[[str], str | None], what: str) -> dict[str, V]:
    renamed, unknown = rename_keys(mapping, rename)
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise KeyError(f"no {what} name for these keys: {shown}")
    return renamed


def convert_official_state_dict(official_sd: Mapping[str, V]) -> dict[str, V]:
    """Official MambaSeg state dict (keys `encoder_img.`, `ccbs.`, ...) -> ours. Unknown keys raise KeyError.

    Nothing is ignored: the official model has no parameter or buffer that ours lacks (`augs` is empty).
    """
    return _rename_all(official_sd, MODEL_KEYS.to_ours, "MambaSeg")


def to_official_state_dict(our_mapping: Mapping[str, V]) -> dict[str, V]:
    """Any mapping keyed by our parameter/buffer names (weights, gradients, ...) -> official names."""
    return _rename_all(our_mapping, MODEL_KEYS.to_official, "official")
