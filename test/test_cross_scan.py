"""Scan-order permutations against the literal index formulas of the spec (§3 steps 3/6, §4 step 6)."""

from __future__ import annotations

import itertools

import pytest
import torch

from mambaseg_core.ops.cross_scan import channel_merge, channel_scan, cross_merge, cross_scan

SHAPES = [(2, 3, 4), (3, 5, 2), (4, 4, 4), (1, 7, 3)]  # (H, W, D), incl. H=W=D and singleton sides


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


def _vjp(fn, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x), x, cotangent)
    return grad


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_cross_scan_matches_index_formulas(H, W, D):
    torch.manual_seed(0)
    x = torch.randn(2, D, H, W)
    xs = cross_scan(x)
    L = H * W
    assert xs.shape == (2, 4, D, L)
    for h, w in itertools.product(range(H), range(W)):
        torch.testing.assert_close(xs[:, 0, :, h * W + w], x[:, :, h, w], rtol=0, atol=0)
        torch.testing.assert_close(xs[:, 1, :, w * H + h], x[:, :, h, w], rtol=0, atol=0)
        torch.testing.assert_close(xs[:, 2, :, L - 1 - (h * W + w)], x[:, :, h, w], rtol=0, atol=0)
        torch.testing.assert_close(xs[:, 3, :, L - 1 - (w * H + h)], x[:, :, h, w], rtol=0, atol=0)


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_cross_merge_matches_index_formula_and_is_the_adjoint_of_cross_scan(H, W, D):
    torch.manual_seed(1)
    ys = torch.randn(2, 4, D, H * W)
    y = cross_merge(ys, H, W)
    L = H * W
    expected = torch.empty(2, D, H, W)
    for h, w in itertools.product(range(H), range(W)):
        r, c = h * W + w, w * H + h
        expected[:, :, h, w] = ys[:, 0, :, r] + ys[:, 1, :, c] + ys[:, 2, :, L - 1 - r] + ys[:, 3, :, L - 1 - c]
    print("max diff", (y - expected).abs().max().item())
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    x, ys64 = torch.randn(2, D, H, W, dtype=torch.float64), ys.double()  # float64: exact up to 1e-12
    assert _inner(cross_scan(x), ys64) == pytest.approx(_inner(x, cross_merge(ys64, H, W)), rel=1e-10)


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_cross_scan_gradient_is_cross_merge(H, W, D):
    # cross_scan writes into slices of one output: autograd must still return the adjoint, exactly.
    torch.manual_seed(2)
    x = torch.randn(2, D, H, W, dtype=torch.float64)
    cotangent = torch.randn(2, 4, D, H * W, dtype=torch.float64)
    torch.testing.assert_close(_vjp(cross_scan, x, cotangent), cross_merge(cotangent, H, W), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(cross_scan, (x[:1, :2].clone().requires_grad_(True),))


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_channel_scan_matches_index_formula(H, W, D):
    torch.manual_seed(2)
    v = torch.randn(2, D, H, W)
    us = channel_scan(v)
    flat = v.flatten(2)  # (B, D, P)
    assert us.shape == (2, 2, H * W, D)
    for p, l in itertools.product(range(H * W), range(D)):
        assert torch.equal(us[:, 0, p, l], flat[:, l, p])
        assert torch.equal(us[:, 1, p, l], flat[:, D - 1 - l, p])


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_intended_channel_merge_formula_and_adjoint(H, W, D):
    torch.manual_seed(3)
    ys = torch.randn(2, 2, H * W, D)
    y = channel_merge(ys, H, W, "intended").flatten(2)
    for p, l in itertools.product(range(H * W), range(D)):
        torch.testing.assert_close(y[:, l, p], ys[:, 0, p, l] + ys[:, 1, p, D - 1 - l], rtol=1e-6, atol=1e-6)
    v, ys = torch.randn(2, D, H, W, dtype=torch.float64), ys.double()
    assert _inner(channel_scan(v), ys) == pytest.approx(_inner(v, channel_merge(ys, H, W, "intended")), rel=1e-10)


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_official_channel_merge_formula(H, W, D):
    """Spec §4 step 6: S_k = direction k's (P, D) buffer read as (D*H, W); M = S_0 + S_1 with W reversed;
    output flat index n takes M[n mod DH, n div DH]."""
    torch.manual_seed(4)
    ys = torch.randn(2, 2, H * W, D)
    out = channel_merge(ys, H, W, "official").reshape(2, -1)
    buf0, buf1 = ys[:, 0].reshape(2, -1), ys[:, 1].reshape(2, -1)  # row-major memory of each direction
    DH = D * H
    for n in range(D * H * W):
        row, col = n % DH, n // DH
        m = buf0[:, row * W + col] + buf1[:, row * W + (W - 1 - col)]
        torch.testing.assert_close(out[:, n], m, rtol=1e-6, atol=1e-6)


def test_official_channel_merge_differs_from_intended():
    torch.manual_seed(5)
    H, W, D = 2, 3, 4
    ys = torch.randn(1, 2, H * W, D)
    diff = (channel_merge(ys, H, W, "official") - channel_merge(ys, H, W, "intended")).abs().max().item()
    print("official vs intended max diff", diff)
    assert diff > 0.1


@pytest.mark.parametrize(("H", "W", "D"), SHAPES)
def test_official_channel_merge_autograd_is_its_adjoint(H, W, D):
    """<merge(x), y> == <x, merge^T(y)> with merge^T from autograd, and merge^T is the literal transpose."""
    torch.manual_seed(6)
    x = torch.randn(2, 2, H * W, D, dtype=torch.float64)
    y = torch.randn(2, D, H, W, dtype=torch.float64)
    merge_t_y = _vjp(lambda t: channel_merge(t, H, W, "official"), x, y)
    assert _inner(channel_merge(x, H, W, "official"), y) == pytest.approx(_inner(x, merge_t_y), rel=1e-10)
    # Literal transpose: buffer entry (row, col) of direction 0 receives y[n] with n = col*DH + row,
    # direction 1 receives it at the mirrored column.
    DH, flat_y = D * H, y.reshape(2, -1)
    expected = torch.empty(2, 2, DH, W, dtype=torch.float64)
    for row, col in itertools.product(range(DH), range(W)):
        expected[:, 0, row, col] = flat_y[:, col * DH + row]
        expected[:, 1, row, W - 1 - col] = flat_y[:, col * DH + row]
    torch.testing.assert_close(merge_t_y, expected.reshape(2, 2, H * W, D), rtol=0, atol=0)


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(B, 4, D, L=6\)"):
        cross_merge(torch.zeros(1, 4, 2, 5), 2, 3)
    with pytest.raises(ValueError, match=r"\(B, 2, P=6, D\)"):
        channel_merge(torch.zeros(1, 2, 5, 4), 2, 3)
    with pytest.raises(ValueError, match="unknown channel merge"):
        channel_merge(torch.zeros(1, 2, 6, 4), 2, 3, "fixed")  # type: ignore[arg-type]
