"""MambaSeg on small random configs: gradients, configs, our checkpoint format, VMamba pretrained loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mambaseg_core.config import ConfigError
from mambaseg_core.models import (
    MambaSeg,
    ModelConfig,
    layers,
    load_model,
    load_model_config,
    load_vmamba_pretrained,
    save_checkpoint,
)
from mambaseg_core.models.ddim import DDIM
from mambaseg_core.models.layers import Linear2d, ProjectionLayout, conv1x1, linear_gelu, project_and_add
from mambaseg_core.models.official import ENCODER_KEYS
from mambaseg_core.models.ssm import DirectionalSSM

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "config" / "model"
# Stage grids 6x10, 3x5, 2x3, 1x2: every stage scans >= 2 steps, so every A gets a gradient.
SMALL = dict(image_size=(24, 40), dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), decoder_dim=32)


def small_model(seed: int = 0, **overrides) -> MambaSeg:
    torch.manual_seed(seed)
    config = load_model_config({**SMALL, "image_channels": 1, "num_classes": 3, **overrides})
    return MambaSeg(config)


def inputs_for(model: MambaSeg, batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    cfg = model.config
    generator = torch.Generator().manual_seed(seed)
    return dict(
        image=torch.rand(batch, cfg.image_channels, *cfg.image_size, generator=generator),
        events=torch.randn(batch, cfg.event_bins, *cfg.image_size, generator=generator),
    )


@torch.no_grad()
def randomise_non_default_parameters(model: MambaSeg, seed: int = 2) -> None:
    """Perturb what the official init leaves constant (norm weights/biases, biases, D) so no symmetry hides bugs."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith(("bias", ".D")) or "norm" in name:
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


def test_every_parameter_gets_a_finite_nonzero_gradient():
    model = small_model().eval()
    randomise_non_default_parameters(model)
    logits = model(**inputs_for(model))
    assert logits.shape == (2, 3, 24, 40)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
    (logits * weights).sum().backward()
    bad = {}
    for name, param in model.named_parameters():
        grad = param.grad
        if grad is None or not torch.isfinite(grad).all() or grad.abs().max() == 0:
            bad[name] = None if grad is None else grad.abs().max().item()
    print(f"{len(bad)} parameters without a usable gradient: {list(bad)[:10]}")
    assert bad == {}


def test_batch_items_are_independent():
    model = small_model().eval()
    randomise_non_default_parameters(model)
    inputs = inputs_for(model, batch=2)
    with torch.no_grad():
        both = model(**inputs)
        second = model(**{k: v[1:] for k, v in inputs.items()})
    print("max diff", (both[1:] - second).abs().max().item())
    torch.testing.assert_close(both[1:], second, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("modality", ["fused", "events_only", "image_only"])
def test_the_image_stage_0_made_ahead_gives_the_logits_of_the_whole_forward(modality):
    """The image's stem and stage-0 encoder need no events: made first (what the node runs while the frame's last
    events arrive), then the rest, the logits are those of one forward, bit for bit."""
    model = small_model(modality=modality).eval()
    randomise_non_default_parameters(model)
    inputs = inputs_for(model)
    with torch.no_grad():
        whole = model(**inputs)
        ahead = model.image_stage0(inputs["image"])
        split = model(image=None, events=inputs["events"], image_stage0=ahead)
        other = model(image=None, events=inputs["events"], image_stage0=model.image_stage0(inputs["image"].flip(-1)))
    assert torch.equal(split, whole)
    assert torch.equal(other, whole) == (modality == "events_only")  # the stage 0 given is the image that counts
    with pytest.raises(ValueError, match="image or its stage 0"):
        model(image=None, events=inputs["events"])
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(image=None, events=inputs["events"][:1], image_stage0=ahead)


def test_own_checkpoint_round_trip(tmp_path: Path):
    model = small_model().eval()
    randomise_non_default_parameters(model)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, epoch=4, metrics={"miou": 0.5})
    checkpoint = torch.load(path, weights_only=True)
    assert (checkpoint["format"], checkpoint["version"], checkpoint["epoch"]) == ("mambaseg", 1, 4)
    assert load_model(path, scan_backend="reference").config.scan_backend == "reference"
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config.image_size == model.config.image_size
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    inputs = inputs_for(model, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), model(**inputs), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, path, state_dict={})


def test_half_precision_checkpoint_loads_into_a_float32_model(tmp_path: Path):
    model = small_model().eval()
    randomise_non_default_parameters(model)
    save_checkpoint(model, tmp_path / "full.pt")
    save_checkpoint(model, tmp_path / "half.pt", weights_dtype=torch.float16)
    stored = torch.load(tmp_path / "half.pt", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    loaded = load_model(tmp_path / "half.pt")
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == value.dtype, key
        torch.testing.assert_close(loaded.state_dict()[key], value.half().to(value.dtype), rtol=0, atol=0)
    inputs = inputs_for(model, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), model(**inputs), rtol=2e-2, atol=2e-3)
    with pytest.raises(ValueError, match="floating-point"):
        save_checkpoint(model, tmp_path / "int.pt", weights_dtype=torch.int8)


def test_own_checkpoint_errors(tmp_path: Path):
    model = small_model()
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["decoder.classifier.bias"] = torch.zeros(7)
    del checkpoint["state_dict"]["fusion.0.image_norm.weight"]
    torch.save(checkpoint, path)
    expected = r"(?s)missing keys \(1\).*fusion.0.image_norm.weight.*decoder.classifier.bias"
    with pytest.raises(ValueError, match=expected):
        load_model(path)
    checkpoint["version"] = 99
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="version 99"):
        load_model(path)


@pytest.mark.parametrize(
    ("name", "size", "channels", "classes"), [("ddd17", (200, 346), 1, 6), ("dsec", (440, 640), 3, 11)]
)
def test_shipped_configs(name, size, channels, classes):
    path = CONFIGS / f"mambaseg_{name}.yaml"
    config = load_model_config(path)
    assert (config.image_size, config.image_channels, config.num_classes, config.event_bins) == (
        size,
        channels,
        classes,
        10,
    )
    assert config.dims == (96, 192, 384, 768) and config.depths == (2, 2, 8, 2)
    assert (config.encoder.d_state, config.encoder.ssm_ratio, config.encoder.conv_bias) == (1, 1.0, False)
    assert (config.fusion.d_state, config.fusion.ssm_ratio, config.fusion.conv_bias) == (16, 2.0, True)
    assert (config.scan_backend, config.ctim_merge, config.decoder_dim) == ("auto", "official", 768)
    for line in path.read_text().splitlines():
        if line.strip():
            assert "#" in line, f"uncommented config line in {path.name}: {line!r}"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dims": [96, 8, 384, 768]}, "dims[1]"),
        ({"depths": [2, 2, 8]}, "dims"),
        ({"ctim_merge": "fixed"}, "ctim_merge"),
        ({"scan_backend": "fast"}, "scan_backend"),
        ({"encoder": {"d_state": 0}}, "encoder.d_state"),
        ({"image_size": [0, 10]}, "image_size"),
        ({"colour": True}, "colour"),
    ],
)
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_model_config({"image_size": [64, 96], **overrides})
    print(info.value)
    assert info.value.key == key


def _synthetic_vssm_checkpoint(path: Path, seed: int = 5) -> dict[str, torch.Tensor]:
    """A VMamba ImageNet checkpoint in the VSSM layout (spec §8) for SMALL's encoder: 3-channel stem,
    classifier head, no outnorms."""
    with torch.device("meta"):
        reference = MambaSeg(ModelConfig(**SMALL, image_channels=3)).image_encoder
    generator = torch.Generator().manual_seed(seed)
    vssm = {}
    for key, value in reference.state_dict().items():
        vssm_key = ENCODER_KEYS.to_official(key)
        if vssm_key is not None and not vssm_key.startswith("outnorm"):
            vssm[vssm_key] = torch.randn(value.shape, generator=generator)
    dim = SMALL["dims"][-1]
    vssm.update(
        {
            "classifier.norm.weight": torch.ones(dim),
            "classifier.norm.bias": torch.zeros(dim),
            "classifier.head.weight": torch.randn(1000, dim, generator=generator),
            "classifier.head.bias": torch.zeros(1000),
        }
    )
    torch.save({"model": vssm, "epoch": 264, "max_accuracy": 82.5}, path)
    return vssm


@pytest.mark.parametrize("image_channels", [1, 3])
def test_vmamba_pretrained_loads_both_encoders(tmp_path: Path, image_channels: int):
    path = tmp_path / "vssm1_tiny_0230s_ckpt_epoch_264.pth"
    vssm = _synthetic_vssm_checkpoint(path)
    model = small_model(image_channels=image_channels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_vmamba_pretrained(model, path)
    after = model.state_dict()
    for branch, prefix in (("image", "image_encoder."), ("event", "event_encoder.")):
        stem_loaded = branch == "image" and image_channels == 3
        for vssm_key, value in vssm.items():
            if vssm_key.startswith("classifier."):
                assert f"{branch}:{vssm_key}" in report.skipped
                continue
            ours = prefix + ENCODER_KEYS.to_ours(vssm_key)
            if vssm_key.startswith("patch_embed.") and not stem_loaded:
                assert torch.equal(after[ours], before[ours]), f"{ours} should keep its fresh init"
                assert f"{branch}:{vssm_key}" in report.skipped
            else:
                assert torch.equal(after[ours], value), ours
                assert ours in report.loaded
        for i in range(4):
            assert prefix + f"out_norms.{i}.weight" in report.not_in_checkpoint
    untouched = [k for k in after if not k.startswith(("image_encoder.", "event_encoder."))]
    assert all(torch.equal(after[k], before[k]) for k in untouched)


def test_vmamba_pretrained_never_falls_back_silently(tmp_path: Path):
    model = small_model()
    with pytest.raises(FileNotFoundError):
        load_vmamba_pretrained(model, tmp_path / "missing.pth")
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match=r"(?i)pickle|load|invalid|zip"):
        load_vmamba_pretrained(model, path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="'model'"):
        load_vmamba_pretrained(model, path)
    torch.save({"model": {"layers.0.blocks.0.op.Ds": torch.zeros(3), "head.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"(?s)unknown keys \['head.weight'\].*mis-shaped"):
        load_vmamba_pretrained(model, path)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = small_model(encoder={"drop_path_rate": 0.0}, decoder_dropout=0.0).train()
    randomise_non_default_parameters(model)
    inputs = inputs_for(model)
    grads = []
    for enabled in (False, True):
        model.set_gradient_checkpointing(enabled)
        model.zero_grad()
        model(**inputs).square().mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    worst = max(float((grads[1][k] - g).abs().max() / (g.abs().max() + 1e-12)) for k, g in grads[0].items())
    print("max relative gradient difference with checkpointing", worst)
    assert worst < 1e-4


def test_half_precision_y_only_in_inference_on_half_inputs_and_not_in_the_tssm():
    torch.manual_seed(0)
    ss2d_like = DirectionalSSM(4, 6, 4, 2, half_precision_y=True)
    xs = torch.randn(1, 4, 6, 20)
    with torch.no_grad():
        assert ss2d_like(xs).dtype == torch.float32  # float32 inputs: float32 y
        ss2d_like.bfloat16()
        y16 = ss2d_like(xs.bfloat16())
        ss2d_like.half_precision_y = False
        y32 = ss2d_like(xs.bfloat16())
    assert y16.dtype == torch.bfloat16 and y32.dtype == torch.float32 and torch.equal(y16, y32.bfloat16())
    ss2d_like.half_precision_y = True
    assert ss2d_like(xs.bfloat16()).dtype == torch.float32  # with autograd (training): float32 as before
    model = small_model()
    halves = {name for name, m in model.named_modules() if isinstance(m, DirectionalSSM) and m.half_precision_y}
    scans = {name for name, m in model.named_modules() if isinstance(m, DirectionalSSM)}
    assert halves == {name for name in scans if "tssm" not in name} and halves != scans


def test_state_matrix_is_cached_without_autograd_and_follows_a_log():
    ssm = DirectionalSSM(2, 3, 4, 1)
    with torch.no_grad():
        first = ssm.state_matrix()
        assert torch.equal(first, -ssm.A_log.float().exp())
        assert ssm.state_matrix() is first  # no new kernels per forward
        ssm.A_log.add_(0.5)  # in place, as load_state_dict does
        second = ssm.state_matrix()
    assert second is not first and torch.equal(second, -ssm.A_log.float().exp())
    # With autograd a fresh, differentiable A every call.
    trained = ssm.state_matrix()
    assert trained.requires_grad and trained is not second
    trained.sum().backward()
    assert ssm.A_log.grad is not None


@pytest.mark.parametrize("bias", [True, False])
def test_linear2d_takes_channels_last_input_as_one_matrix_product(bias: bool):
    """The channels-last path (F.linear over the pixel rows) and the 1x1 convolution give the same map; the
    channels-last one stays channels-last."""
    torch.manual_seed(0)
    layer = Linear2d(6, 5, bias=bias)
    x = torch.randn(2, 6, 4, 7)
    nchw = layer(x)
    channels_last = layer(x.contiguous(memory_format=torch.channels_last))
    expected = torch.einsum("oc,bchw->bohw", layer.weight, x) + (layer.bias.view(1, -1, 1, 1) if bias else 0)
    torch.testing.assert_close(nchw, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(channels_last, expected, rtol=1e-5, atol=1e-5)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_equals_the_convolution(device: str, bias: bool):
    """On CUDA a channels-last input takes one GEMM (bias inside) and stays channels-last; elsewhere the module runs."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: the GEMM path runs on CUDA tensors")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias).to(device)
    x = torch.randn(2, 6, 4, 7, device=device)
    with torch.no_grad():
        expected = conv(x)
        channels_last = conv1x1(conv, x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(conv1x1(conv, x), expected)
    torch.testing.assert_close(channels_last, expected, rtol=1e-4, atol=1e-4)  # TF32 on the GPU
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="1x1 convolution"):
        conv1x1(torch.nn.Conv2d(6, 5, 3, padding=1), x)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_project_and_add_equals_the_projection_plus_the_residual(device: str):
    """On CUDA, channels-last x and residual take one GEMM that adds into the residual in place; elsewhere the
    module runs, then the sum. Either way the result is residual + projection(x), channels-last for channels-last
    inputs."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: the addmm path runs on CUDA tensors")
    torch.manual_seed(0)
    layer = Linear2d(6, 5, bias=False).to(device)
    x = torch.randn(2, 6, 4, 7, device=device).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 5, 4, 7, device=device).contiguous(memory_format=torch.channels_last)
    calls = []
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        expected = torch.einsum("oc,bchw->bohw", layer.weight, x) + residual
        given = residual.clone()
        y = project_and_add(layer, layer.weight, x, given)
        y_nchw = project_and_add(layer, layer.weight, x.contiguous(), residual.contiguous())
    handle.remove()
    assert (y.data_ptr() == given.data_ptr()) == (device == "cuda")  # in place: no copy of the residual
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)  # TF32 on the GPU
    torch.testing.assert_close(y_nchw, expected, rtol=1e-4, atol=1e-4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert len(calls) == (1 if device == "cuda" else 2)  # the module runs except on the GPU's GEMM path


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@torch.no_grad()
def test_linear_gelu_in_half_precision_is_one_gemm_with_the_tanh_gelu(device: str):
    """On CUDA a half-precision channels-last input takes one GEMM with the tanh GELU in its epilogue; elsewhere the
    module runs, then the exact GELU. Both are channels-last for channels-last inputs."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: the cuBLASLt epilogue runs on CUDA tensors")
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    layer = Linear2d(64, 96).to(device)
    torch.nn.init.normal_(layer.bias)
    layer.to(dtype)
    x = (torch.randn(2, 64, 5, 7, device=device) * 2).to(dtype).contiguous(memory_format=torch.channels_last)
    calls = []
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    y = linear_gelu(layer, x)
    handle.remove()
    pre = torch.einsum("oc,bchw->bohw", layer.weight.double(), x.double()) + layer.bias.double()[:, None, None]
    exact, tanh_form = F.gelu(pre), F.gelu(pre, approximate="tanh")
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert len(calls) == (0 if device == "cuda" else 1)
    if device == "cuda":
        torch.testing.assert_close(y.double(), tanh_form, rtol=2e-3, atol=2e-3)  # fp16 rounding
        assert (y.double() - exact).abs().max() < 3e-3  # the tanh form's own error is under 5e-4
    else:
        torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)
        assert (y.double() - tanh_form).abs().max() > 1e-5  # the exact GELU, not the tanh form


def test_ddim_inference_writes_its_paths_into_the_concatenations_exactly():
    """Without autograd the DDIM's four paths write into the halves of its two concatenations; with autograd they
    return tensors that are concatenated. Both give the same outputs, bit for bit (the same operations; the scan
    backend pinned: on the CPU `auto` takes numba without autograd)."""
    torch.manual_seed(0)
    ddim = DDIM(32, 6 * 5, d_state=4, ssm_ratio=2.0, conv_bias=True, scan_backend="torch").eval()
    for module in ddim.modules():  # non-trivial gates and skips (the default init leaves some at zero)
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, 0, 0.5)
    image, events = torch.randn(2, 32, 6, 5), torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        written = ddim(image, events)
    with torch.enable_grad():
        concatenated = ddim(image, events)
    for a, b in zip(written, concatenated, strict=True):
        assert torch.equal(a, b.detach())
    assert not torch.equal(written[0], written[1])


def _kernel_test_model() -> tuple[MambaSeg, torch.Tensor, torch.Tensor]:
    """A tiny model with non-trivial gates and skips (the default init leaves some at zero), and its inputs."""
    from seg_harness import TINY_MODEL

    torch.manual_seed(0)
    config = dict(TINY_MODEL, dims=[32, 32, 32, 64])  # channel attention reduces by 16
    model = MambaSeg(load_model_config(config)).eval()
    model.set_scan_backend("torch")
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1):
            torch.nn.init.normal_(module.weight, 0, module.weight.shape[1] ** -0.5)
    height, width = config["image_size"]
    return model, torch.rand(1, 3, height, width), torch.randn(1, 10, height, width)


@torch.no_grad()
def test_forward_with_the_triton_kernels_equals_the_pytorch_forward(triton_device, monkeypatch):
    """Every Triton inference kernel of a forward (norms, scan glue, the DDIM's gates and attention writing into its
    concatenations), on the GPU or in the interpreter, against the same forward in PyTorch on the CPU."""
    from mambaseg_core.ops import triton_support

    model, image, events = _kernel_test_model()
    monkeypatch.setattr(triton_support, "RUN_ON_CPU", False)
    expected = model(image=image, events=events)
    monkeypatch.setattr(triton_support, "RUN_ON_CPU", triton_device == "cpu")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model.to(triton_device)
    actual = model(image=image.to(triton_device), events=events.to(triton_device)).cpu()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_half_precision_forward_with_the_triton_kernels_stays_close_to_fp32(triton_device, monkeypatch):
    """The kernels' dtype handling in the engine's half-precision mode (matrix weights cast, autocast: fp16 on the
    GPU, bf16 in the interpreter on the CPU): every kernel takes and returns the dtypes the forward hands it, and the
    logits stay within half-precision error of the fp32 PyTorch forward."""
    from mambaseg_core.ops import triton_support
    from mambaseg_core.pipeline.engine import cast_matmul_weights

    model, image, events = _kernel_test_model()
    monkeypatch.setattr(triton_support, "RUN_ON_CPU", False)
    expected = model(image=image, events=events)
    half = torch.float16 if triton_device == "cuda" else torch.bfloat16
    cast_matmul_weights(model, half)
    model.to(triton_device, memory_format=torch.channels_last)
    monkeypatch.setattr(triton_support, "RUN_ON_CPU", triton_device == "cpu")
    with torch.autocast(triton_device, dtype=half, cache_enabled=False):
        actual = model(image=image.to(triton_device), events=events.to(triton_device)).float().cpu()
    error = float((actual - expected).norm() / expected.norm())
    print(f"{half} kernels vs fp32: rel L2 {error:.2e}")
    assert error < 2e-2


class _CpuTunedLayout(ProjectionLayout):
    """The timing logic of ProjectionLayout on the CPU, with stub timings: column-major costs `column_cost`."""

    def __init__(self, equation: str, column_cost: float):
        self.timed: list[bool] = []  # column-major, per timed call

        def timer(fn) -> float:
            column = len(self.timed) % 2 == 1  # _choose alternates: as is, column-major, as is, ...
            self.timed.append(column)
            fn()
            return column_cost if column else 1.0

        super().__init__(equation, timer)

    @staticmethod
    def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
        return not torch.is_grad_enabled()


@pytest.mark.parametrize("column_cost", [0.5, 2.0])
def test_projection_layout_times_each_shape_once_and_follows_weight_changes(column_cost: float, monkeypatch):
    """The faster storage order is chosen once per input shape, for every layout of the process, and used from
    then on; the column-major copy is kept only where chosen, and follows an in-place change of the weight."""
    monkeypatch.setattr(layers, "_LAYOUT_CHOICES", {})
    torch.manual_seed(0)
    weight = torch.randn(2, 7, 5)
    layout = _CpuTunedLayout("bkrl,kfr->bkfl", column_cost)
    with torch.no_grad():
        for length in (3, 3, 4):
            x = torch.randn(1, 2, 5, length)
            torch.testing.assert_close(layout(x, weight), torch.einsum("bkrl,kfr->bkfl", x, weight))
        assert len(layout.timed) == 8  # two shapes, each order timed twice per shape
        column_chosen = column_cost < 1.0
        assert (layout._column_major._value is not None) == column_chosen
        weight.mul_(-2.0)
        torch.testing.assert_close(layout(x, weight), torch.einsum("bkrl,kfr->bkfl", x, weight))
        if column_chosen:
            assert not layout.column_major(weight).is_contiguous() and torch.equal(layout.column_major(weight), weight)
        # Another layout of the same projection reuses the choice: no timing.
        other = _CpuTunedLayout("bkrl,kfr->bkfl", column_cost)
        torch.testing.assert_close(other(x, weight), torch.einsum("bkrl,kfr->bkfl", x, weight))
        assert other.timed == []
    # With autograd the weight is used as it is, untimed.
    assert layout(x, weight.requires_grad_()).requires_grad and len(layout.timed) == 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the layout is timed on the GPU")
def test_projection_layout_on_the_gpu_matches_einsum_and_replays_in_a_cuda_graph():
    torch.manual_seed(0)
    ssm = DirectionalSSM(2, 300, 16, 19).cuda().eval()
    xs = torch.randn(1, 2, 300, 192, device="cuda")
    with torch.inference_mode():
        expected = torch.einsum("bkfl,kcf->bkcl", xs, ssm.x_proj_weight)
        torch.testing.assert_close(ssm._x_proj(xs, ssm.x_proj_weight), expected)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = ssm._x_proj(xs, ssm.x_proj_weight)
        captured.zero_()
        graph.replay()
    torch.testing.assert_close(captured, expected)
