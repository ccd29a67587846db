"""Event simulator against analytic cases: moving edges, refractory period, noise rates, static scenes."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg_core.events.batch import EventBatch
from mambaseg_core.synthetic.event_simulator import EventSimulator, EventSimulatorConfig

EXACT = EventSimulatorConfig(contrast_on=0.25, contrast_off=0.25, contrast_sigma=0.0, refractory_us=0)


def _edge_frames(width: int, delta_l: float, speed_px_per_ms: float, direction: int, t_us: np.ndarray) -> np.ndarray:
    """(T, 2, W) log frames of a box-filtered step edge (bright behind it) entering from the left (direction +1)
    or leaving toward the left (-1); pixel x's log intensity ramps linearly while the edge covers it."""
    x = np.arange(width, dtype=np.float64)
    edge = 2.0 + speed_px_per_ms * t_us[:, None] * 1e-3  # edge position (px) at each time
    coverage = np.clip(edge - (x[None, :] - 0.5), 0.0, 1.0)  # bright fraction of pixel x
    if direction < 0:
        coverage = 1.0 - coverage
    return np.repeat((delta_l * coverage)[:, None, :], 2, axis=1)


def _run(sim: EventSimulator, frames: np.ndarray, t_us: np.ndarray, is_log: bool = True) -> EventBatch:
    return EventBatch.concatenate([sim.step(f, int(t), is_log=is_log) for f, t in zip(frames, t_us)])


@pytest.mark.parametrize("direction", [1, -1])
def test_moving_edge_counts_times_and_polarity(direction):
    delta_l, speed, width = 1.1, 0.5, 24  # 1.1 / 0.25 → 4 crossings per pixel; 0.5 px/ms → 2 ms per pixel
    t_us = np.arange(0, 50_001, 100, dtype=np.int64)  # 10 kHz steps
    sim = EventSimulator(2, width, EXACT, seed=0)
    events = _run(sim, _edge_frames(width, delta_l, speed, direction, t_us), t_us)
    crossed = np.arange(3, width - 1)  # pixels the edge fully crossed inside the 50 ms
    crossed = crossed[2.0 + speed * 50 > crossed + 0.5]
    counts = np.bincount(events.x[events.y == 0], minlength=width)
    print("counts per pixel", counts)
    assert np.all(counts[crossed] == int(np.floor(delta_l / 0.25)))
    assert np.all(events.p == (1 if direction > 0 else 0))
    # The k-th crossing of pixel x happens when the edge has covered k·C/ΔL of it.
    step = 0.25 / delta_l
    for x in crossed:
        times = np.sort(events.t[(events.x == x) & (events.y == 0)])
        enter_us = ((x - 0.5) - 2.0) / speed * 1e3
        expected = enter_us + np.arange(1, 5) * step / speed * 1e3
        print(x, times, expected)
        np.testing.assert_allclose(times, expected, atol=1.0)  # exact up to µs rounding: the ramp is linear
    assert np.all(np.diff(events.t) >= 0)


def test_multiple_crossings_in_one_interval_get_interpolated_times():
    sim = EventSimulator(1, 1, EXACT, seed=0)
    sim.step(np.zeros((1, 1)), 0, is_log=True)
    events = sim.step(np.full((1, 1), 1.0), 1000, is_log=True)  # +1.0 in one step: 4 crossings at 250 µs spacing
    print(events.t)
    np.testing.assert_array_equal(events.t, [250, 500, 750, 1000])
    assert np.all(events.p == 1)


def test_refractory_period_suppresses_close_events():
    config = EventSimulatorConfig(contrast_on=0.1, contrast_off=0.1, contrast_sigma=0.0, refractory_us=300)
    t_us = np.arange(0, 10_001, 1000, dtype=np.int64)
    ramp = np.linspace(0.0, 4.95, len(t_us))[:, None, None] * np.ones((1, 3, 3))  # ~5 crossings per ms
    fast = _run(EventSimulator(3, 3, config, seed=0), ramp, t_us)
    free = _run(EventSimulator(3, 3, EventSimulatorConfig(0.1, 0.1, 0.0, refractory_us=0), seed=0), ramp, t_us)
    pixel = fast.y.astype(np.int64) * 3 + fast.x
    gaps = [np.diff(fast.t[pixel == k]) for k in range(9)]
    min_gap = min(int(g.min()) for g in gaps)
    print("events with / without refractory", len(fast), len(free), "min gap", min_gap)
    assert min_gap >= 300
    assert len(free) == 9 * 49  # floor(4.95 / 0.1) crossings per pixel
    assert len(fast) < len(free)


def test_static_scene_without_noise_is_silent():
    rng = np.random.default_rng(0)
    frame = rng.random((16, 16)) * 10
    sim = EventSimulator(16, 16, EventSimulatorConfig(), seed=1)
    events = _run(sim, np.repeat(frame[None], 20, 0), np.arange(20) * 1000, is_log=False)
    assert len(events) == 0


def test_noise_rates_match_configuration():
    size, seconds, step_us = 32, 2.0, 1000
    t_us = np.arange(0, int(seconds * 1e6) + 1, step_us, dtype=np.int64)
    static = np.zeros((len(t_us), size, size))
    shot = _run(EventSimulator(size, size, EventSimulatorConfig(shot_noise_hz=5.0), seed=2), static, t_us)
    expected_shot = 5.0 * seconds * size * size
    print("shot", len(shot), expected_shot, "ON fraction", shot.p.mean())
    assert abs(len(shot) - expected_shot) < 0.05 * expected_shot
    assert abs(shot.p.mean() - 0.5) < 0.03
    leak = _run(EventSimulator(size, size, EventSimulatorConfig(leak_hz=2.0), seed=3), static, t_us)
    expected_leak = 2.0 * seconds * size * size
    print("leak", len(leak), expected_leak)
    assert abs(len(leak) - expected_leak) < 0.05 * expected_leak
    assert np.all(leak.p == 1)  # leak drives the reference down: ON events only
    assert np.all(np.diff(leak.t) >= 0)


def test_thresholds_vary_per_pixel_and_seed_is_deterministic():
    config = EventSimulatorConfig(contrast_sigma=0.05, shot_noise_hz=50.0)
    a, b, c = (EventSimulator(8, 8, config, seed=s) for s in (4, 4, 5))
    assert a.c_on.std() > 0.02
    frames = np.random.default_rng(0).random((5, 8, 8)) * 3
    t_us = np.arange(5) * 1000
    ea, eb, ec = (_run(sim, frames, t_us) for sim in (a, b, c))
    for field in "xytp":
        np.testing.assert_array_equal(getattr(ea, field), getattr(eb, field))
    assert len(ea) != len(ec) or not np.array_equal(ea.t, ec.t)


def test_rejects_bad_input():
    sim = EventSimulator(4, 4, seed=0)
    with pytest.raises(ValueError, match="frame must be"):
        sim.step(np.zeros((4, 5)), 0)
    sim.step(np.zeros((4, 4)), 10)
    with pytest.raises(ValueError, match="must increase"):
        sim.step(np.zeros((4, 4)), 10)
