"""Full-size DDD17 / DSEC models: CPU forward (slow) and CUDA vs CPU agreement (GPU only)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from mambaseg_core.models import MambaSeg, load_model_config, load_official_checkpoint
from mambaseg_core.ops.selective_scan import available_backends

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "config" / "model"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: compares cuda and CPU logits")
# fp32 on both devices; the GPU uses other kernels (TF32 off) and summation orders.
CUDA_RTOL = 1e-3


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.cpu() - expected.cpu()).norm() / expected.cpu().norm())


def random_inputs(model: MambaSeg, seed: int = 0) -> dict[str, torch.Tensor]:
    cfg = model.config
    generator = torch.Generator().manual_seed(seed)
    return dict(
        image=torch.rand(1, cfg.image_channels, *cfg.image_size, generator=generator),
        events=torch.randn(1, cfg.event_bins, *cfg.image_size, generator=generator),
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddd17", "dsec"])
@torch.no_grad()
def test_fullsize_cpu_forward(name: str):
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(CONFIGS / f"mambaseg_{name}.yaml")).eval()
    inputs = random_inputs(model)
    start = time.perf_counter()
    logits = model(**inputs)
    seconds = time.perf_counter() - start
    print(f"{name}: CPU forward (batch 1, scan backend {available_backends('cpu')[0]!r}) {seconds:.1f} s")
    assert logits.shape == (1, model.config.num_classes, *model.config.image_size)
    assert torch.isfinite(logits).all()


@pytest.fixture
def no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.cuda
@needs_cuda
@torch.no_grad()
def test_cuda_matches_cpu_on_the_official_fixture(reference_dir: Path, tmp_path: Path, no_tf32):
    data = torch.load(reference_dir / "official_small_gray.pt", weights_only=False)
    path = tmp_path / "official.pth"
    torch.save({"epoch": 0, "state_dict": data["state_dict"]}, path)
    model = load_official_checkpoint(path, image_size=(64, 96), device="cuda")
    logits = model(image=data["image"].float().cuda(), events=data["events"].float().cuda())
    error = rel_l2(logits, data["logits"])
    backend = available_backends("cuda")[0]
    print(f"fixture: cuda (scan backend {backend!r}) vs official CPU logits rel L2 {error:.2e}")
    assert error <= CUDA_RTOL


@pytest.mark.cuda
@needs_cuda
@torch.no_grad()
def test_cuda_matches_cpu_at_ddd17_size(no_tf32):
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(CONFIGS / "mambaseg_ddd17.yaml")).eval()
    inputs = random_inputs(model)
    cpu_logits = model(**inputs)
    model.cuda()
    start = time.perf_counter()
    cuda_logits = model(**{k: v.cuda() for k, v in inputs.items()})
    torch.cuda.synchronize()
    error = rel_l2(cuda_logits, cpu_logits)
    seconds = time.perf_counter() - start
    backend = available_backends("cuda")[0]
    print(
        f"DDD17 size: cuda ({backend!r}) vs CPU ({available_backends('cpu')[0]!r}) rel L2 {error:.2e}; "
        f"first cuda forward {seconds:.2f} s"
    )
    assert error <= CUDA_RTOL
