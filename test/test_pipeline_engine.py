"""InferenceEngine: half precision stays close to fp32 on the official fixture; CUDA-graph replay equals eager."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from seg_harness import TINY_MODEL

from mambaseg_core.config import ConfigError, load_config
from mambaseg_core.models import MambaSeg, load_model_config, load_official_checkpoint
from mambaseg_core.models.branches import distinct_streams, parallel_branches, run_branches
from mambaseg_core.pipeline import InferenceEngine, Segmenter, SegmenterConfig
from mambaseg_core.pipeline.engine import cast_matmul_weights

FIXTURE_SIZE = (64, 96)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA graphs and GPU autocast")


@pytest.fixture(scope="module")
def fixture(reference_dir: Path, tmp_path_factory) -> tuple[MambaSeg, dict]:
    data = torch.load(reference_dir / "official_small_gray.pt", weights_only=False)
    path = tmp_path_factory.mktemp("official") / "best_model.pth"
    torch.save({"epoch": 1, "state_dict": data["state_dict"]}, path)
    return load_official_checkpoint(path, image_size=FIXTURE_SIZE), data


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def test_fp32_engine_reproduces_the_official_logits(fixture):
    model, data = fixture
    logits = InferenceEngine(copy.deepcopy(model)).logits(data["image"].float(), data["events"].float())
    error = rel_l2(logits, data["logits"])
    print(f"fp32 engine vs official logits: rel L2 {error:.2e}")
    assert error < 1e-4


def test_bf16_engine_on_cpu_is_close_to_fp32_and_keeps_the_argmax(fixture):
    model, data = fixture
    image, events = data["image"].float(), data["events"].float()
    engine = InferenceEngine(copy.deepcopy(model), precision="bf16")
    logits = engine.logits(image, events)
    error = rel_l2(logits, data["logits"])
    agreement = float((logits.argmax(1) == data["logits"].argmax(1)).float().mean())
    print(f"bf16 engine vs official fp32 logits: rel L2 {error:.2e}, argmax agreement {agreement:.4f}")
    assert logits.dtype == torch.float32
    assert 1e-5 < error < 3e-2  # bf16 really ran (not identical) and stayed close
    assert agreement > 0.98


def test_class_ids_are_the_argmax_of_the_full_resolution_logits(fixture):
    model, data = fixture
    engine = InferenceEngine(copy.deepcopy(model))
    image, events = data["image"].float(), data["events"].float()
    ids = engine.class_ids(image, events)
    assert ids.dtype == torch.uint8 and ids.shape == (image.shape[0], *image.shape[-2:])
    assert torch.equal(ids, engine.logits(image, events).argmax(1).to(torch.uint8))


def test_cast_matmul_weights_keeps_norms_and_ssm_parameters_in_fp32():
    model = MambaSeg(load_model_config(dict(TINY_MODEL)))
    cast_matmul_weights(model, torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all(dtypes[n] == torch.bfloat16 for n in dtypes if n.endswith(("x_proj_weight", "dt_proj_weight")))
    assert all(dtypes[n] == torch.float32 for n in dtypes if n.endswith(("A_log", ".D", "dt_proj_bias")))
    assert all(dtypes[n] == torch.float32 for n in dtypes if "norm" in n)
    conv_weights = [m.weight.dtype for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv_weights and set(conv_weights) == {torch.bfloat16}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_cuda])])
def test_engine_stores_kxk_convolution_weights_channels_last_on_cuda_only(device):
    model = MambaSeg(load_model_config(dict(TINY_MODEL))).to(device)
    InferenceEngine(model, precision="fp16" if device == "cuda" else "fp32")
    kxk = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    multi_channel = [w for w in kxk if w.shape[1] > 1]
    assert multi_channel  # the stems and downsamples
    channels_last = [w.is_contiguous(memory_format=torch.channels_last) for w in multi_channel]
    assert all(channels_last) if device == "cuda" else not any(channels_last)
    assert all(w.is_contiguous() for w in kxk if w.shape[1] == 1)  # depthwise: the same memory either way


def test_engine_rejects_bad_settings():
    model = MambaSeg(load_model_config(dict(TINY_MODEL)))
    with pytest.raises(ValueError, match="precision"):
        InferenceEngine(model, precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cuda_graph needs"):
        InferenceEngine(model, cuda_graph=True)
    with pytest.raises(ConfigError, match="precision"):
        load_config(SegmenterConfig, {"precision": "fp64"})
    with pytest.raises(ValueError, match="parallel_branches needs"):
        InferenceEngine(model, parallel_branches=True)


def test_compiled_branch_units_compute_the_same_logits():
    torch.manual_seed(0)
    model = MambaSeg(load_model_config({**TINY_MODEL, "scan_backend": "torch"})).eval()  # numba is not traceable
    height, width = TINY_MODEL["image_size"]
    image, events = torch.rand(1, 3, height, width), torch.randn(1, TINY_MODEL["event_bins"], height, width)
    with torch.inference_mode():
        expected = model(image=image, events=events)
        compiled = copy.deepcopy(model)
        compiled.compile_branch_units(backend="eager")  # dynamo traces every unit; no code generation on the CPU
        actual = compiled(image=image, events=events)
    units = [m for m in compiled.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(units) >= 2 * (1 + 4 + 3) + 1  # stems, out-norms, downsamples, decoder
    # The VSS blocks run chained through forward_deferred, which is what gets compiled.
    blocks = [
        m for m in compiled.modules() if hasattr(m.__dict__.get("forward_deferred"), "_torchdynamo_orig_callable")
    ]
    assert len(blocks) == 2 * sum(TINY_MODEL["depths"])
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_whole_model_traces_as_one_graph():
    # torch.compile of the whole forward (the `compile` mode without parallel branches) must see one graph: a
    # break, e.g. at the branch helper's context lookup, splits the fusion and costs GPU time.
    model = MambaSeg(load_model_config({**TINY_MODEL, "scan_backend": "torch"})).eval()  # numba is not traceable
    height, width = TINY_MODEL["image_size"]
    image, events = torch.rand(1, 3, height, width), torch.randn(1, TINY_MODEL["event_bins"], height, width)
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(image=image, events=events)
    print("graphs", explained.graph_count, "breaks", [b.reason for b in explained.break_reasons][:3])
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_run_branches_without_parallel_streams_runs_in_order():
    calls = []
    assert run_branches(lambda: calls.append("a") or 1, lambda: calls.append("b") or 2) == (1, 2)
    assert calls == ["a", "b"]
    with pytest.raises(ValueError, match="CUDA device"), parallel_branches("cpu"):
        pass


def test_segmenter_ignores_cuda_graph_on_cpu_and_runs_bf16():
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(dict(TINY_MODEL))).eval()
    seg = Segmenter(model, load_config(SegmenterConfig, {"cuda_graph": True, "precision": "bf16"}), "cpu")
    assert not seg.engine.cuda_graph and seg.engine.precision == "bf16"
    height, width = TINY_MODEL["image_size"]
    seg.add_events(_events(height, width))
    result = seg.segment(np.zeros((height, width, 3), np.uint8), 10_000)
    assert result is not None and result.class_ids.shape == (height, width)


def _events(height: int, width: int):
    from mambaseg_core.events import EventBatch

    rng = np.random.default_rng(0)
    n = 500
    return EventBatch.from_arrays(
        rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(0, 9_000, n)), rng.integers(0, 2, n)
    )


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_graph_replay_equals_eager_and_recaptures_on_new_shapes(fixture, precision):
    model, data = fixture
    eager = InferenceEngine(copy.deepcopy(model).cuda(), precision=precision)
    graphed = InferenceEngine(copy.deepcopy(model).cuda(), precision=precision, cuda_graph=True)
    for key in ("", "2"):  # batch 2, then batch 1: the second input shape forces a recapture
        image, events = data[f"image{key}"].float().cuda(), data[f"events{key}"].float().cuda()
        expected = eager.class_ids(image, events)
        first = graphed.class_ids(image, events).clone()
        again = graphed.class_ids(image, events)
        assert torch.equal(first, expected) and torch.equal(again, expected)
        logits = eager.logits(image, events).cpu()
        # The ids come from the 1/4-resolution logits through the upsample-argmax kernel: the argmax of the same
        # upsampled logits but at (rare) near-ties.
        assert float((expected.cpu() == logits.argmax(1)).float().mean()) > 0.9999
        error = rel_l2(logits, data[f"logits{key}"])
        agreement = float((logits.argmax(1) == data[f"logits{key}"].argmax(1)).float().mean())
        print(f"{precision} cuda vs official logits{key}: rel L2 {error:.2e}, argmax agreement {agreement:.4f}")
        # fp32 on the GPU: cuDNN convolutions use TF32 by default (torch.backends.cudnn.allow_tf32).
        assert error < (1e-3 if precision == "fp32" else 2e-2)
        assert agreement > (0.999 if precision == "fp32" else 0.98)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_host_inputs_are_copied_to_the_device_first(cuda_graph):
    """Pinned host inputs (what the Segmenter's FramePacker hands over) give the ids of the same inputs on the GPU."""
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(dict(TINY_MODEL))).eval().cuda()
    engine = InferenceEngine(model, precision="fp16", cuda_graph=cuda_graph)
    height, width = TINY_MODEL["image_size"]
    image, events = torch.rand(1, 3, height, width), torch.randn(1, TINY_MODEL["event_bins"], height, width)
    expected = engine.class_ids(image.cuda(), events.cuda()).clone()
    for _ in range(2):  # with cuda_graph: the graph captured for the GPU inputs replays with host ones
        ids = engine.class_ids(image.pin_memory(), events.pin_memory())
        assert ids.is_cuda and torch.equal(ids, expected)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_parallel_branches_give_the_same_result_on_several_streams(precision):
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(dict(TINY_MODEL))).eval().cuda()
    height, width = TINY_MODEL["image_size"]
    image = torch.rand(2, 3, height, width, device="cuda")
    events = torch.randn(2, TINY_MODEL["event_bins"], height, width, device="cuda")
    sequential = InferenceEngine(copy.deepcopy(model), precision=precision)
    branched = InferenceEngine(copy.deepcopy(model), precision=precision, parallel_branches=True)
    expected = sequential.logits(image, events)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        actual = branched.logits(image, events)
        torch.cuda.synchronize()
    streams = {getattr(e, "device_resource_id", None) for e in prof.events() if e.device_type.name == "CUDA"}
    print(f"{precision}: kernels on {len(streams)} streams, max diff {(actual - expected).abs().max().item():.2e}")
    assert len(streams) >= 3  # the stage pairs and the nested CTIM/CSIM forks really ran side by side
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    graphed = InferenceEngine(copy.deepcopy(model), precision=precision, cuda_graph=True, parallel_branches=True)
    ids = graphed.class_ids(image, events).clone()
    assert torch.equal(ids, graphed.class_ids(image, events)) and torch.equal(ids, sequential.class_ids(image, events))


def test_side_streams_are_distinct_and_never_the_callers():
    """A round-robin pool of 4 handles, the caller on handle 2: every draw skips it and the repeats."""

    class FakeStream:
        def __init__(self, handle: int):
            self.cuda_stream = handle

    handles = iter(range(10**6))
    new_stream = lambda: FakeStream(next(handles) % 4)  # noqa: E731
    streams = distinct_streams(3, [FakeStream(2)], new_stream)
    assert [s.cuda_stream for s in streams] == [0, 1, 3]
    with pytest.raises(RuntimeError, match="could not get 4 distinct CUDA streams"):
        distinct_streams(4, [FakeStream(2)], new_stream)


def test_a_stream_given_back_by_a_nested_fork_is_lent_last():
    """The DDIM's pattern: fork (CSIM on side A: fork (event path on side C)), then CTIM forks from the caller's stream.
    C still holds the CSIM event path, which only A has joined: CTIM's side must not be C."""
    from mambaseg_core.models.branches import _StreamPool

    pool = _StreamPool(torch.device("cuda"), ["s1", "s2", "s3"])
    (csim,) = pool.take(1)
    (csim_event,) = pool.take(1)
    pool.give_back([csim_event])
    (ctim_event,) = pool.take(1)
    assert (csim, csim_event, ctim_event) == ("s1", "s2", "s3")
    pool.give_back([ctim_event])
    pool.give_back([csim])
    assert pool.free == ["s2", "s3", "s1"]


@pytest.mark.cuda
@needs_cuda
def test_nested_forks_put_the_four_ddim_paths_on_four_streams():
    """A DDIM-shaped fork (two branches, each forking two paths): the four paths run on four distinct streams, so no
    path is queued behind another (the forks' waits are then the only order between them, also in a CUDA graph)."""
    streams: list[int] = []

    def path():
        streams.append(torch.cuda.current_stream().cuda_stream)
        torch.cuda._sleep(1000)

    with parallel_branches("cuda"):
        for _ in range(3):  # the pool's order after a few forward passes
            streams.clear()
            run_branches(lambda: run_branches(path, path), lambda: run_branches(path, path))
            assert len(set(streams)) == 4, streams
    torch.cuda.synchronize()


@pytest.mark.cuda
@needs_cuda
def test_parallel_branches_never_lend_the_current_stream():
    """Around the pool's 32 streams many times: a fork's side streams never include the stream it runs on."""
    from mambaseg_core.models import branches

    caller = torch.cuda.Stream()
    with torch.cuda.stream(caller):
        for _ in range(40):
            with parallel_branches("cuda"):
                pool = branches._POOL.get()
                assert pool is not None
                assert caller.cuda_stream not in {s.cuda_stream for s in pool.free}
                assert len({s.cuda_stream for s in pool.free}) == len(pool.free) == 6
