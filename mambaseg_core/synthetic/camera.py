"""Frame-camera model: auto-exposure with a limited range and lag, sensor noise, saturation, gamma, 8-bit RGB.

Linear signal = radiance · exposure, where exposure = exposure time (s) · gain · `sensitivity`. The camera
clips the signal at full well (1.0) and at black (0), so in a dark stretch (night, tunnel) it runs out of
exposure and the frame goes near black, and at a tunnel exit or facing a low sun it saturates; the event
camera, which sees log radiance, keeps its edges in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONDITION_TAGS = ("normal", "dark", "hdr_bright")
"""Per-frame tags of how the frame camera copes (see `frame_condition`)."""


@dataclass(frozen=True)
class FrameCameraConfig:
    """Exposure range, auto-exposure behaviour and noise of the frame camera (linear signal units: full well = 1)."""

    sensitivity: float = 50.0  # signal per unit radiance per second of exposure at gain 1
    exposure_time_s: tuple[float, float] = (1e-4, 0.03)  # shutter range; the longest also bounds motion blur
    gain: tuple[float, float] = (1.0, 2.0)  # analogue gain range, used once the shutter is at its longest
    ae_target: float = 0.12  # auto-exposure aims the median linear signal a little below middle grey
    ae_time_constant_s: float = 0.5  # exposure follows its target with this first-order lag
    read_noise: float = 3e-4  # std of additive noise (linear units)
    shot_noise: float = 2e-3  # shot noise variance per unit signal
    gamma: float = 2.2


class FrameCamera:
    """Stateful camera: call `capture(radiance, dt_s)` once per frame; the exposure adapts between frames."""

    def __init__(self, config: FrameCameraConfig | None = None, seed: int = 0, initial_exposure: float | None = None):
        self.config = config or FrameCameraConfig()
        self._rng = np.random.default_rng(seed)
        lo, hi = self.exposure_range
        self.exposure = float(np.sqrt(lo * hi) if initial_exposure is None else np.clip(initial_exposure, lo, hi))

    @property
    def exposure_range(self) -> tuple[float, float]:
        """(min, max) exposure = time · gain · sensitivity."""
        cfg = self.config
        return cfg.exposure_time_s[0] * cfg.gain[0] * cfg.sensitivity, cfg.exposure_time_s[1] * cfg.gain[
            1
        ] * cfg.sensitivity

    @property
    def exposure_time_s(self) -> float:
        """Shutter time of the next frame: gain stays at its minimum until the shutter is at its longest."""
        cfg = self.config
        return float(np.clip(self.exposure / (cfg.gain[0] * cfg.sensitivity), *cfg.exposure_time_s))

    def meter(self, radiance: np.ndarray) -> float:
        """Exposure that would put the frame's median luminance at `ae_target` (clipped to the range).

        Median metering ignores small very bright areas (sun, lamps), so they saturate rather than darken the
        whole frame, as with a typical automotive auto-exposure.
        """
        median = float(np.median(radiance.mean(axis=-1))) + 1e-9
        return float(np.clip(self.config.ae_target / median, *self.exposure_range))

    def capture(self, radiance: np.ndarray, dt_s: float) -> np.ndarray:
        """(H, W, 3) linear radiance (averaged over the exposure) → (H, W, 3) uint8 RGB; then adapt the exposure.

        `dt_s` is the time since the previous capture (drives the auto-exposure lag).
        """
        cfg = self.config
        clean = radiance * np.float32(self.exposure)
        noise_std = np.sqrt(cfg.read_noise**2 + cfg.shot_noise * np.maximum(clean, 0.0))
        signal = clean + noise_std * self._rng.standard_normal(clean.shape, np.float32)
        encoded = np.clip(signal, 0.0, 1.0) ** (1.0 / cfg.gamma)
        frame = np.rint(encoded * 255.0).astype(np.uint8)
        # First-order lag in log exposure: tunnel exits stay washed out for a few frames, as on a real car.
        alpha = 1.0 - np.exp(-dt_s / cfg.ae_time_constant_s)
        target = self.meter(radiance)
        self.exposure = float(np.exp((1 - alpha) * np.log(self.exposure) + alpha * np.log(target)))
        return frame


def frame_condition(rgb: np.ndarray, dark_level: int = 40, saturated_fraction: float = 0.04) -> str:
    """Tag a uint8 (H, W, 3) frame: "hdr_bright" if more than `saturated_fraction` of the pixels have a channel
    at 255, else "dark" if the median luma is below `dark_level`, else "normal"."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise TypeError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if float((rgb.max(axis=2) == 255).mean()) > saturated_fraction:
        return "hdr_bright"
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return "dark" if float(np.median(luma)) < dark_level else "normal"
