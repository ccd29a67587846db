"""The inference engine: network inputs -> class ids, in fp32 (the accuracy reference) or bf16/fp16, eager or
compiled, optionally as one CUDA graph replayed per frame.

- Precision `bf16`/`fp16`: the weights of every matrix product (convolutions, linears, the SSM projections) are
  cast once and the forward runs under autocast; norms, the SSM's A, D and dt bias, and the selective-scan state
  stay float32. Logits come back float32.
- `compile`: the forward goes through torch.compile (TorchInductor fuses the many small memory-bound kernels
  around the matrix products and scans; the scan is one opaque custom op). Compilation happens on the first
  frame of each input shape and takes minutes; Inductor caches it on disk for the next start.
- `parallel_branches` (CUDA): the image and event branches run on parallel streams (models/branches.py); under
  a CUDA graph they become parallel graph paths. With `compile` too, every unit inside a branch is compiled on its
  own (`MambaSeg.compile_branch_units`) instead of the whole forward, whose trace would hold the stream switches.
- `cuda_graph`: the first frame of a given input shape is run twice eagerly on a side stream (kernel selection,
  allocator warm-up), then the forward and the argmax are captured; every later frame copies its inputs into the
  captured buffers and replays the graph (one launch instead of ~2,000, no host work in between). A new input
  shape recaptures. `class_ids_from` captures the making of the network inputs too (e.g. the voxel grid and the
  image of a packed frame, pipeline/network_inputs.py, read in place in pinned host memory): the graph is then kept
  per input-making function and input shapes (and, read in place, the inputs' addresses).
- Image ahead (`image_stage0_from`, then `class_ids_after`): the image's stem and stage-0 encoder, which need no
  events, run first (the Segmenter queues them while the frame's last events arrive), then the rest of the forward
  from the voxel grid on; with `cuda_graph` each part is a graph of its own (the rest reads the first's outputs).
The engine owns the model: a half-precision engine casts the model's weights in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn

from mambaseg_core.models.branches import parallel_branches
from mambaseg_core.models.mambaseg import ImageStage0
from mambaseg_core.ops.selective_scan import available_backends
from mambaseg_core.ops.upsample_argmax import upsample_argmax

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class EngineMode(NamedTuple):
    """InferenceEngine settings under one name (the benchmarks compare these)."""

    precision: Precision
    cuda_graph: bool
    compile: bool
    parallel_branches: bool = False


ENGINE_MODES: dict[str, EngineMode] = {
    "fp32 eager": EngineMode("fp32", False, False),
    "fp32 graph": EngineMode("fp32", True, False),
    "bf16 eager": EngineMode("bf16", False, False),
    "bf16 graph": EngineMode("bf16", True, False),
    "bf16 graph branches": EngineMode("bf16", True, False, True),
    "bf16 compiled graph": EngineMode("bf16", True, True),
    "bf16 compiled graph branches": EngineMode("bf16", True, True, True),
    "fp16 eager": EngineMode("fp16", False, False),
    "fp16 graph branches": EngineMode("fp16", True, False, True),
}

# (named input tensors) -> (image (B, C, H, W), events (B, bins, H, W)) network inputs (InferenceEngine.class_ids_from).
MakeInputs = Callable[..., tuple[torch.Tensor, torch.Tensor]]
# The same, of one of the two (InferenceEngine.image_stage0_from, class_ids_after).
MakeImage = Callable[..., torch.Tensor]
MakeEvents = Callable[..., torch.Tensor]


def network_inputs_as_given(image: torch.Tensor, events: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MakeInputs of inputs that already are the network's."""
    return image, events


# Parameters of matrix products that the SSM applies with einsum rather than through nn.Linear/nn.Conv2d.
_SSM_PROJECTIONS = ("x_proj_weight", "dt_proj_weight")


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast in place the weights and biases of convolutions and linears, and the SSM projection weights."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(dtype)
        for name in _SSM_PROJECTIONS:
            weight = getattr(module, name, None)
            if isinstance(weight, nn.Parameter):
                weight.data = weight.data.to(dtype)


@dataclass
class _GraphSlot:
    """One captured CUDA graph: the key it was captured for, its input buffers and its output."""

    graph: torch.cuda.CUDAGraph | None = None
    key: tuple = ()
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    output: Any = None
    pool: tuple | None = None  # the memory pool it captures into (None: its own)


class InferenceEngine:
    """model(image=(B, C, H, W), events=(B, bins, H, W)) -> logits or (B, H, W) uint8 class ids."""

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: Precision = "fp32",
        cuda_graph: bool = False,
        compile: bool = False,
        parallel_branches: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph needs the model on a CUDA device, it is on {self.device}")
        if parallel_branches and self.device.type != "cuda":
            raise ValueError(f"parallel_branches needs the model on a CUDA device, it is on {self.device}")
        self.parallel_branches = parallel_branches
        self.precision = precision
        self.cuda_graph = cuda_graph
        if precision != "fp32":
            cast_matmul_weights(model, PRECISIONS[precision])
        if self.device.type == "cuda":
            # The activations are channels-last, so cuDNN runs the convolutions channels-last and would copy every
            # NCHW kxk weight into that layout on every call.
            model.to(memory_format=torch.channels_last)
        self.compile = compile
        self._forward: Callable[..., torch.Tensor] = model
        if compile:
            available_backends(self.device)  # load the scan backends now, outside the traced code
            if parallel_branches:
                compile_units = getattr(model, "compile_branch_units", None)
                if compile_units is None:
                    raise ValueError(f"compile with parallel_branches needs a MambaSeg, got {type(model).__name__}")
                compile_units(dynamic=False)
            else:
                self._forward = torch.compile(model, dynamic=False)
        # The captured graphs: the whole forward, and its two parts for frames whose image runs ahead.
        self._graphs = {name: _GraphSlot() for name in ("whole", "image", "rest")}
        if cuda_graph:
            # The rest reads the image part's outputs, which stay allocated, and the two replay in that order: they
            # can share one pool, so running ahead costs about one forward's activations, not two.
            self._graphs["image"].pool = self._graphs["rest"].pool = torch.cuda.graph_pool_handle()
        self.captures = 0  # CUDA graphs captured (a new input shape or input-making function recaptures)

    def _branches(self) -> contextlib.AbstractContextManager:
        return parallel_branches(self.device) if self.parallel_branches else contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        # No cast cache: the weights are already cast, and a CUDA graph must not capture cache lookups.
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], cache_enabled=False)

    def logits(self, image: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) float32 logits, never through the CUDA graph (it holds only the class ids)."""
        with torch.inference_mode(), self._autocast(), self._branches():
            return self._forward(image=image, events=events).float()

    def _class_ids_eager(self, make_inputs: MakeInputs, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            image, events = make_inputs(**inputs)  # outside autocast: the input conversions stay float32
            with self._autocast(), self._branches():
                logits = self._forward(image=image, events=events, upsample=False)
            # The argmax of the bilinearly upsampled logits, without writing them out at full size.
            return upsample_argmax(logits, tuple(image.shape[-2:]))

    def class_ids(self, image: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(B, H, W) uint8 class ids on the model's device. With `cuda_graph` the returned tensor is the graph's
        output buffer: it is overwritten by the next call, so copy it (e.g. to the host) before calling again."""
        return self.class_ids_from(network_inputs_as_given, image=image, events=events)

    def class_ids_from(self, make_inputs: MakeInputs, **inputs: torch.Tensor) -> torch.Tensor:
        """As `class_ids`, of the network inputs (image, events) = make_inputs(**inputs), which must be a value
        (equal settings compare equal: the graph is recaptured when it or the inputs' shapes change) and, for
        `cuda_graph`, capturable: no host synchronisation, shapes fixed by the inputs' shapes. Inputs on the host are
        copied to the model's device first (asynchronously from pinned memory; with `cuda_graph` straight into the
        graph's input buffers): the caller keeps them unchanged until the result has been read. A make_inputs whose
        `reads_inputs_in_place` is true reads them where they lie (e.g. pinned host memory, by Triton kernels): no
        copy, and the CUDA graph binds their addresses, so the caller refills the same buffers every frame."""
        return self._call("whole", make_inputs, (), inputs, partial(self._class_ids_eager, make_inputs))

    def image_stage0_from(self, make_image: MakeImage, **inputs: torch.Tensor) -> ImageStage0:
        """The image's stage 0 (MambaSeg.image_stage0) of make_image(**inputs), queued on the device now, ahead of
        the frame's events (inputs as for `class_ids_from`); then `class_ids_after`. With `cuda_graph` a graph of its
        own, whose outputs the next call overwrites."""
        if not hasattr(self.model, "image_stage0"):
            raise ValueError(f"{type(self.model).__name__} has no image_stage0 to run ahead of the events")
        return self._call("image", make_image, (), inputs, partial(self._image_stage0_eager, make_image))

    def class_ids_after(
        self, image_stage0: ImageStage0, make_events: MakeEvents, **inputs: torch.Tensor
    ) -> torch.Tensor:
        """As `class_ids_from`, for a frame whose image's stage 0 was made ahead (`image_stage0_from`): the rest of
        the forward, from the voxel grid make_events(**inputs) on."""
        bound = tuple(tensor.data_ptr() for tensor in image_stage0)  # a graph reads them where they lie
        run = partial(self._class_ids_after_eager, image_stage0, make_events)
        return self._call("rest", make_events, bound, inputs, run)

    def _call(
        self,
        slot_name: str,
        make: Callable[..., object],
        bound: tuple,
        inputs: dict[str, torch.Tensor],
        run: Callable[[dict[str, torch.Tensor]], Any],
    ) -> Any:
        """run(inputs), eagerly or through the slot's CUDA graph (captured again when `make`, the inputs' shapes, the
        addresses the graph reads in place or `bound` change)."""
        in_place = bool(getattr(make, "reads_inputs_in_place", False))
        if not self.cuda_graph:
            if not in_place:
                inputs = {name: value.to(self.device, non_blocking=True) for name, value in inputs.items()}
            return run(inputs)
        slot = self._graphs[slot_name]
        key = (
            make,
            bound,
            tuple(
                (name, tuple(value.shape), value.dtype, value.data_ptr() if in_place else None)
                for name, value in sorted(inputs.items())
            ),
        )
        if slot.graph is None or key != slot.key:
            self._capture(slot, run, inputs, key, in_place)
        if not in_place:
            for name, value in inputs.items():  # host inputs (pinned: asynchronously) go straight into the graph's
                slot.inputs[name].copy_(value, non_blocking=True)
        assert slot.graph is not None
        slot.graph.replay()
        return slot.output

    def _image_stage0_eager(self, make_image: MakeImage, inputs: dict[str, torch.Tensor]) -> ImageStage0:
        with torch.inference_mode():
            image = make_image(**inputs)
            with self._autocast(), self._branches():
                return self.model.image_stage0(image)  # type: ignore[operator]

    def _class_ids_after_eager(
        self, image_stage0: ImageStage0, make_events: MakeEvents, inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        with torch.inference_mode():
            events = make_events(**inputs)
            with self._autocast(), self._branches():
                logits = self._forward(image=None, events=events, upsample=False, image_stage0=image_stage0)
            return upsample_argmax(logits, tuple(events.shape[-2:]))

    def _capture(
        self,
        slot: _GraphSlot,
        run: Callable[[dict[str, torch.Tensor]], Any],
        inputs: dict[str, torch.Tensor],
        key: tuple,
        in_place: bool,
    ) -> None:
        slot.graph = None
        if in_place:
            slot.inputs = dict(inputs)
        else:
            slot.inputs = {name: value.detach().to(self.device, copy=True) for name, value in inputs.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                run(slot.inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=slot.pool):
            slot.output = run(slot.inputs)
        slot.graph, slot.key = graph, key
        self.captures += 1

    def __repr__(self) -> str:
        return (
            f"InferenceEngine(precision={self.precision!r}, cuda_graph={self.cuda_graph}, compile={self.compile}, "
            f"parallel_branches={self.parallel_branches}, device={self.device})"
        )
