"""MAMBASEG_PYTORCH_OPS (ops/triton_support): named inference fast paths sent back to their PyTorch form."""

from __future__ import annotations

import pytest
import torch

from mambaseg_core.models.layers import LayerNorm2d
from mambaseg_core.ops import triton_support
from mambaseg_core.ops.layer_norm import norm_twice


def test_the_variable_names_fast_paths_and_an_unknown_name_fails_naming_it():
    assert triton_support.pytorch_ops_from("") == frozenset()
    assert triton_support.pytorch_ops_from(" norm_twice, joint_spatial_gate ,") == {"norm_twice", "joint_spatial_gate"}
    with pytest.raises(ValueError, match=r"unknown fast path\(s\) \['norm_twise'\]"):
        triton_support.pytorch_ops_from("norm_twice,norm_twise")
    with pytest.raises(ValueError, match="unknown fast path 'layernorm'"):
        triton_support.fast_path("layernorm")


def test_a_named_fast_path_is_off_and_the_others_stay_on(triton_device, monkeypatch):
    x = torch.randn(1, 8, 3, 4, device=triton_device)
    monkeypatch.setattr(triton_support, "PYTORCH_OPS", frozenset({"joint_spatial_gate", "norm_twice"}))
    assert not triton_support.kernels_apply("joint_spatial_gate", x)
    assert triton_support.kernels_apply("layer_norm", x) and triton_support.kernels_apply("channel_gate", x)
    assert not triton_support.fast_path("norm_twice") and triton_support.fast_path("project_and_add")


@torch.no_grad()
def test_norm_twice_off_makes_each_norm_on_its_own_with_the_same_result(triton_device, monkeypatch):
    from mambaseg_core.ops import layer_norm

    torch.manual_seed(0)
    first, second = LayerNorm2d(16).to(triton_device), LayerNorm2d(16).to(triton_device)
    for norm in (first, second):
        norm.weight.normal_()
        norm.bias.normal_()
    x, delta = (torch.randn(2, 16, 5, 7, device=triton_device) for _ in range(2))
    seconds: list[bool] = []  # per kernel launch: with a second norm?
    record = layer_norm._second_norm_args

    def recording(y, then):
        seconds.append(then is not None)
        return record(y, then)

    monkeypatch.setattr(layer_norm, "_second_norm_args", recording)
    fused = norm_twice(x, delta, first.params(), second.params())
    assert seconds == [True]
    seconds.clear()
    monkeypatch.setattr(triton_support, "PYTORCH_OPS", frozenset({"norm_twice"}))
    separate = norm_twice(x, delta, first.params(), second.params())
    assert seconds == [False, False]  # the sum and first norm, then the second norm: two launches
    for a, b in zip(fused, separate, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
