"""ESIM / v2e-style event camera simulator: intensity frames in, `EventBatch` out.

Model (per pixel, all pixels independent):
- The pixel sees the log intensity `L = log(eps + radiance)`, linearly interpolated in time between two
  consecutive input frames (so an input at 1 kHz gives ~1 ms motion-blur-free timing).
- It remembers a reference level `ref`. Whenever `L - ref` reaches `+C_on` an ON event fires and `ref += C_on`;
  whenever it reaches `-C_off` an OFF event fires and `ref -= C_off`. Several crossings per interval are allowed,
  each stamped with its own interpolated time. `C_on`, `C_off` vary per pixel (Gaussian, fixed at construction).
- Refractory period: a crossing less than `refractory_us` after the pixel's last emitted event is not emitted,
  but `ref` still moves (the change during the dead time is lost, as on a real sensor).
- Leak noise: `ref` drifts down at `leak_hz · C_on` per second (per-pixel rate spread), which makes a static
  pixel emit ON events at about `leak_hz`. The drift is part of the linear model, so leak events get exact times.
- Shot noise: Poisson events at `shot_noise_hz` per pixel with random polarity, uniform in time; they do not
  move `ref` (an approximation; v2e resets the pixel).
The crossing loop is a numba kernel; noise generation and the final time sort are numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from mambaseg_core.events.batch import EventBatch


@dataclass(frozen=True)
class EventSimulatorConfig:
    """Sensor parameters. Contrast thresholds are in log-intensity units (natural log)."""

    contrast_on: float = 0.2  # mean ON threshold C_on
    contrast_off: float = 0.2  # mean OFF threshold C_off
    contrast_sigma: float = 0.03  # per-pixel standard deviation of both thresholds
    contrast_min: float = 0.01  # thresholds are clipped below at this value
    refractory_us: int = 100  # minimum time between two events of one pixel
    shot_noise_hz: float = 0.0  # mean shot-noise event rate per pixel
    leak_hz: float = 0.0  # mean leak (ON) event rate per pixel of a static scene
    leak_spread: float = 0.3  # relative per-pixel standard deviation of the leak rate
    log_eps: float = 1e-3  # L = log(log_eps + radiance); keeps black pixels finite

    def __post_init__(self) -> None:
        if min(self.contrast_on, self.contrast_off) < self.contrast_min or self.contrast_min <= 0:
            raise ValueError(f"contrast thresholds must be >= contrast_min > 0, got {self}")
        if self.refractory_us < 0 or self.shot_noise_hz < 0 or self.leak_hz < 0 or self.log_eps <= 0:
            raise ValueError(f"refractory_us, shot_noise_hz, leak_hz must be >= 0 and log_eps > 0, got {self}")


@numba.njit(cache=True, nogil=True)
def _threshold_crossings(
    l_prev: np.ndarray,
    l_new: np.ndarray,
    ref: np.ndarray,
    last_event_t: np.ndarray,
    c_on: np.ndarray,
    c_off: np.ndarray,
    leak_drift: np.ndarray,
    t_prev: int,
    dt: int,
    refractory_us: int,
):
    """All crossings of one interval. Arrays are flat (P,) over pixels; `ref`, `last_event_t` are updated.

    Returns (pixel index int64, t int64, p uint8), each (N,), grouped by pixel, time-ordered within a pixel.
    """
    capacity = 1024
    out_pix = np.empty(capacity, np.int64)
    out_t = np.empty(capacity, np.int64)
    out_p = np.empty(capacity, np.uint8)
    n = 0
    for i in range(l_prev.shape[0]):
        # diff(s) = L(s) - ref(s) = a + b·s for s in [0, 1]; leak lowers ref, i.e. raises diff.
        a = l_prev[i] - ref[i]
        b = (l_new[i] - l_prev[i]) + leak_drift[i]
        if -c_off[i] < a + b < c_on[i]:  # no crossing: the common case, kept branch-light
            ref[i] -= leak_drift[i]
            continue
        if b > 0.0:
            step = c_on[i]
            polarity = 1
        else:
            step = -c_off[i]
            polarity = 0
        while (b > 0.0 and a + b >= step) or (b < 0.0 and a + b <= step):
            s = (step - a) / b
            a -= step
            t = max(t_prev + int(np.rint(s * dt)), t_prev + 1)  # keep every event inside (t_prev, t_prev + dt]
            if t - last_event_t[i] >= refractory_us:
                if n == capacity:
                    capacity *= 2
                    grown_pix = np.empty(capacity, np.int64)
                    grown_t = np.empty(capacity, np.int64)
                    grown_p = np.empty(capacity, np.uint8)
                    grown_pix[:n] = out_pix[:n]
                    grown_t[:n] = out_t[:n]
                    grown_p[:n] = out_p[:n]
                    out_pix, out_t, out_p = grown_pix, grown_t, grown_p
                out_pix[n] = i
                out_t[n] = t
                out_p[n] = polarity
                n += 1
                last_event_t[i] = t
        ref[i] = l_new[i] - (a + b)
    return out_pix[:n], out_t[:n], out_p[:n]


class EventSimulator:
    """Stateful per-pixel simulator for an (H, W) sensor.

    Feed frames in increasing time order with `step(frame, t_us)`; each call returns the events in
    `(t_prev, t_us]` sorted by time. The first call only initialises the reference levels and returns nothing.
    """

    def __init__(self, height: int, width: int, config: EventSimulatorConfig | None = None, seed: int = 0):
        if height <= 0 or width <= 0:
            raise ValueError(f"sensor size must be positive, got {height}x{width}")
        self.height, self.width = height, width
        self.config = config or EventSimulatorConfig()
        cfg = self.config
        self._rng = np.random.default_rng(seed)
        num_pixels = height * width
        sigma = cfg.contrast_sigma
        self.c_on = np.maximum(cfg.contrast_on + sigma * self._rng.standard_normal(num_pixels), cfg.contrast_min)
        self.c_off = np.maximum(cfg.contrast_off + sigma * self._rng.standard_normal(num_pixels), cfg.contrast_min)
        spread = 1.0 + cfg.leak_spread * self._rng.standard_normal(num_pixels)
        self._leak_per_s = np.maximum(cfg.leak_hz * spread, 0.0) * self.c_on  # ref drift, log units per second
        self._ref: np.ndarray | None = None
        self._l_prev: np.ndarray | None = None
        self._t_prev = 0
        self._last_event_t = np.full(num_pixels, np.iinfo(np.int64).min // 2, np.int64)

    def log_intensity(self, radiance: np.ndarray) -> np.ndarray:
        """(H, W) radiance (linear, >= 0) → (H, W) float64 log intensity as the pixels see it."""
        return np.log(self.config.log_eps + np.asarray(radiance, np.float64))

    def step(self, frame: np.ndarray, t_us: int, *, is_log: bool = False) -> EventBatch:
        """Advance the sensor to `t_us` (int µs) given the (H, W) frame seen at that instant.

        `frame` is linear radiance (grayscale; use luminance for colour scenes) or, with `is_log=True`,
        log intensity already. Returns the events in `(t_prev, t_us]`, sorted by time (stable).
        """
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width):
            raise ValueError(f"frame must be ({self.height}, {self.width}), got {frame.shape}")
        log_frame = np.asarray(frame, np.float64) if is_log else self.log_intensity(frame)
        log_frame = log_frame.ravel()
        t_us = int(t_us)
        if self._l_prev is None:
            self._l_prev = log_frame.copy()
            self._ref = log_frame.copy()
            if self.config.leak_hz > 0:
                # Random leak phase, or every pixel would fire its first leak event at the same instant.
                self._ref -= self._rng.random(log_frame.size) * self.c_on
            self._t_prev = t_us
            return EventBatch.empty()
        if t_us <= self._t_prev:
            raise ValueError(f"t_us must increase: got {t_us} after {self._t_prev}")
        assert self._ref is not None
        dt = t_us - self._t_prev
        pix, t, p = _threshold_crossings(
            self._l_prev,
            log_frame,
            self._ref,
            self._last_event_t,
            self.c_on,
            self.c_off,
            self._leak_per_s * (dt * 1e-6),
            self._t_prev,
            dt,
            self.config.refractory_us,
        )
        noise = self._shot_noise(dt)
        if noise is not None:
            pix = np.concatenate([pix, noise[0]])
            t = np.concatenate([t, noise[1]])
            p = np.concatenate([p, noise[2]])
        # Times lie in (t_prev, t_us]; as 16-bit offsets numpy sorts them with a (stable) radix sort.
        offsets = t - self._t_prev
        order = np.argsort(offsets.astype(np.uint16) if dt < 2**16 else offsets, kind="stable")
        pix, t, p = pix[order], t[order], p[order]
        self._l_prev = log_frame.copy()
        self._t_prev = t_us
        y, x = np.divmod(pix, self.width)
        return EventBatch.from_arrays(x, y, t, p)

    def _shot_noise(self, dt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Poisson shot-noise events in (t_prev, t_prev + dt]: (pixel index, t, p) or None."""
        rate = self.config.shot_noise_hz
        if rate <= 0:
            return None
        num_pixels = self.height * self.width
        count = self._rng.poisson(rate * num_pixels * dt * 1e-6)
        pix = self._rng.integers(0, num_pixels, count, dtype=np.int64)
        t = self._t_prev + self._rng.integers(1, dt + 1, count, dtype=np.int64)
        p = self._rng.integers(0, 2, count, dtype=np.uint8)
        return pix, t, p
