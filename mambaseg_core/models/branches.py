"""Independent branches of a forward pass, optionally on parallel CUDA streams.

Between the fusion points the image and event paths of MambaSeg never read each other (the encoder stages, the
halves of CTIM and CSIM, and CTIM beside CSIM). `run_branches(f, g, ...)` returns `(f(), g(), ...)`. Inside
`parallel_branches(device)` it runs `f` on the current stream and every other function on a side stream that
first waits for the current one; the current stream then waits for all of them before it returns. The kernels are
the same, so are the results. Captured in a CUDA graph the branches become parallel paths of the graph, so that
the small kernels of the deeper stages share the GPU instead of running one after the other. Outside the context
(CPU, training, a whole-model torch.compile) the functions simply run in order.

Side streams are never the caller's stream. PyTorch hands streams out round-robin from a pool of 32: a new one
can be the stream already running the forward (e.g. the CUDA-graph capture stream, itself a pool stream), and a
branch put there runs in series with the others, and worse, orders the graph's paths through that stream. This
made every sixth engine captured in one process replay ~0.9 ms slower (DDD17, H100; docs/benchmarks.md run H4).

A side stream goes back to the pool behind the others: it still holds its branch's work, which a nested fork
joined into its own stream but its caller's stream may not have reached yet. Enqueued behind that work, a sibling
fork's branch would wait for it: the first pool handed the stream just given back out first, which put each DDIM's
CTIM event path behind its CSIM event path (a CUDA-graph edge between them: in an H100 trace of the DSEC
graph the stage-0 TSSM event path started 0.8 ms late, when the CSIM event path ended).

Memory stays stream-ordered: the caching allocator reuses a block only for its own stream, every fork starts with
its side streams waiting for the current stream and ends with them joined back, and a branch's inputs stay
referenced by the caller until the join.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def distinct_streams(count: int, avoid: Sequence[Any], new_stream: Callable[[], Any]) -> list[Any]:
    """`count` streams from `new_stream()`, distinct from each other and from `avoid` (by their CUDA handles)."""
    handles = {stream.cuda_stream for stream in avoid}
    streams: list[Any] = []
    for _ in range(count + 64):  # the pool has 32 streams per priority: a few extra draws always suffice
        if len(streams) == count:
            break
        stream = new_stream()
        if stream.cuda_stream not in handles:
            handles.add(stream.cuda_stream)
            streams.append(stream)
    if len(streams) < count:
        raise RuntimeError(f"could not get {count} distinct CUDA streams besides the {len(avoid)} in use")
    return streams


class _StreamPool:
    """Side streams of one device, lent to forks (nested forks take more of them), the longest-returned first."""

    def __init__(self, device: torch.device, streams: list[Any]):
        self.device = device
        self.free = list(streams)

    def take(self, count: int) -> list[Any]:
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    def give_back(self, streams: list[Any]) -> None:
        self.free = self.free + streams  # behind the others (module docstring)


_POOL: contextvars.ContextVar[_StreamPool | None] = contextvars.ContextVar("mambaseg_branch_streams", default=None)


@contextlib.contextmanager
def parallel_branches(device: torch.device | str, streams: int = 6) -> Iterator[None]:
    """Run the `run_branches` calls of this thread on parallel CUDA streams of `device` (a CUDA device).

    `streams` side streams are created up front (not during a graph capture); a fork that finds none free runs
    its remaining branches on the current stream.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"parallel branches need a CUDA device, got {device}")
    current = torch.cuda.current_stream(device)
    token = _POOL.set(_StreamPool(device, distinct_streams(streams, [current], lambda: torch.cuda.Stream(device))))
    try:
        yield
    finally:
        _POOL.reset(token)


def run_branches(*branches: Callable[[], Any]) -> tuple[Any, ...]:
    """(branches[0](), branches[1](), ...), on parallel streams inside `parallel_branches` (module docstring)."""
    # Under torch.compile the branches are traced in order (Dynamo cannot trace ContextVar.get: a graph break).
    pool = None if torch.compiler.is_compiling() else _POOL.get()
    if pool is None or len(branches) < 2:
        return tuple(branch() for branch in branches)
    current = torch.cuda.current_stream(pool.device)  # the model's device, whichever device is current
    sides = pool.take(len(branches) - 1)
    results: list[Any] = [None] * len(branches)
    try:
        for index, side in enumerate(sides, start=1):
            side.wait_stream(current)
            with torch.cuda.stream(side):
                results[index] = branches[index]()
        for index in range(len(sides) + 1, len(branches)):
            results[index] = branches[index]()
        results[0] = branches[0]()
    finally:
        for side in sides:
            current.wait_stream(side)
        pool.give_back(sides)
    return tuple(results)
