"""`mambaseg-info`: parameter counts and MACs of a MambaSeg config, true and paper-style (thop rule).

The paper's 25.44M params / 15.59G MACs come from thop, which counts only modules whose exact type is
nn.Conv2d, nn.Linear or nn.BatchNorm2d (spec §9.1). It therefore misses Linear2d (the encoder's block
linears), LayerNorm2d, raw parameters (x_proj, dt_proj, A_log, D) and the scans. We re-state its rule:
  params: every parameter of an exact nn.Conv2d / nn.Linear / nn.BatchNorm2d module;
  MACs:   Conv2d out_numel * C_in/groups * kh*kw; Linear in_features * out_numel;
          BatchNorm2d 4 * in_numel (eval, affine). Pools and activations (a few M) are left out.
Our module types match the official ones (true nn.Linear where the official code has nn.Linear,
Linear2d where it has Linear2d), so the rule applies to our model directly.

True MACs: every matmul/conv/einsum from torch.utils.flop_counter (FLOPs / 2), plus the selective scans
at 3*N MACs per channel and step (exp(dt*A)*h, dt*u*B, <C, h>); norms and element-wise ops are left out.
Everything runs on the meta device: no memory, no weights, no real compute.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from mambaseg_core.models import MambaSeg, ModelConfig, load_model_config
from mambaseg_core.models import ssm as ssm_module

THOP_COUNTED_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


@dataclass
class ModelCounts:
    """Parameter and MAC counts of one model at its configured resolution (batch 1)."""

    params_by_part: dict[str, int]
    thop_params_by_part: dict[str, int]
    linear_macs: int
    scan_macs: int
    thop_macs: int

    @property
    def params(self) -> int:
        return sum(self.params_by_part.values())

    @property
    def thop_params(self) -> int:
        return sum(self.thop_params_by_part.values())


def _part(name: str) -> str:
    """The top-level part a parameter belongs to; encoder stems are reported on their own."""
    head = name.split(".")[0]
    if head.endswith("_encoder"):
        return f"{head}.stem" if name.split(".")[1] == "stem" else f"{head} (w/o stem)"
    if head == "fusion":
        kind = name.split(".")[2]
        return {"ctim": "fusion: CTIM", "csim": "fusion: CSIM"}.get(kind, "fusion: norms + out convs")
    return head


def _is_thop_counted(module: nn.Module) -> bool:
    return type(module) in THOP_COUNTED_TYPES


def count_parameters(model: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    """(true params per part, thop-rule params per part)."""
    true_counts: dict[str, int] = {}
    thop_counts: dict[str, int] = {}
    for name, param in model.named_parameters():
        true_counts[_part(name)] = true_counts.get(_part(name), 0) + param.numel()
    for module_name, module in model.named_modules():
        if _is_thop_counted(module):
            part = _part(module_name + ".")
            thop_counts[part] = thop_counts.get(part, 0) + sum(p.numel() for p in module.parameters(recurse=False))
    return true_counts, thop_counts


def _thop_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 4 * inputs[0].numel()  # BatchNorm2d, eval and affine


@contextlib.contextmanager
def _shape_only_scans(tally: list[int]) -> Iterator[None]:
    """Replace the selective scan by its output shape and add its analytic MACs to `tally`."""

    def fake_scan(
        u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto", *, y_in_input_dtype=False
    ):
        batch, channels, length = u.shape
        tally.append(3 * batch * channels * length * A.shape[1])
        return torch.empty(u.shape, dtype=u.dtype if y_in_input_dtype else torch.float32, device=u.device)

    with mock.patch.object(ssm_module, "selective_scan", fake_scan):
        yield


def count_model(config: ModelConfig) -> ModelCounts:
    """Count a model built from `config` (on the meta device) for one input at config.image_size."""
    with torch.device("meta"):
        model = MambaSeg(config).eval()
        image = torch.empty(1, config.image_channels, *config.image_size)
        events = torch.empty(1, config.event_bins, *config.image_size)
    true_params, thop_params = count_parameters(model)
    thop_macs: list[int] = []
    hooks = [
        module.register_forward_hook(lambda m, i, o: thop_macs.append(_thop_macs(m, i, o)))
        for module in model.modules()
        if _is_thop_counted(module)
    ]
    scan_macs: list[int] = []
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), _shape_only_scans(scan_macs), counter:
            model(image=image, events=events)
    finally:
        for hook in hooks:
            hook.remove()
    return ModelCounts(true_params, thop_params, counter.get_total_flops() // 2, sum(scan_macs), sum(thop_macs))


def format_counts(config: ModelConfig, counts: ModelCounts) -> str:
    """A plain-text report: parameters per part (true vs thop rule) and MACs / FLOPs."""
    height, width = config.image_size
    lines = [
        f"MambaSeg at {height}x{width}, image {config.image_channels} ch, {config.event_bins} event bins, "
        f"{config.num_classes} classes (batch 1)",
        "",
    ]
    lines.append(f"{'part':32s} {'params':>14s} {'thop-rule params':>18s}")
    for part, n in counts.params_by_part.items():
        lines.append(f"{part:32s} {n / 1e6:13.3f}M {counts.thop_params_by_part.get(part, 0) / 1e6:17.3f}M")
    lines.append(f"{'total':32s} {counts.params / 1e6:13.3f}M {counts.thop_params / 1e6:17.3f}M")
    true_macs = counts.linear_macs + counts.scan_macs
    lines += [
        "",
        f"true MACs:       {true_macs / 1e9:8.2f}G  (linear/conv/einsum {counts.linear_macs / 1e9:.2f}G "
        f"+ selective scans {counts.scan_macs / 1e9:.2f}G; FLOPs ~ {2 * true_macs / 1e9:.2f}G)",
        f"thop-rule MACs:  {counts.thop_macs / 1e9:8.2f}G  (paper-style: exact Conv2d/Linear/BatchNorm2d only)",
        f"thop-rule params: {counts.thop_params / 1e6:.2f}M vs true {counts.params / 1e6:.2f}M",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaseg-info", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="model config YAML, e.g. config/model/mambaseg_ddd17.yaml")
    args = parser.parse_args(argv)
    config = load_model_config(args.config)
    print(format_counts(config, count_model(config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
