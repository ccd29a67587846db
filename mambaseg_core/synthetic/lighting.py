"""Lighting conditions of the synthetic world and their schedule over a sequence.

Radiance units are arbitrary but linear and shared by all conditions: a white wall in daylight is ~1.
The frame camera (camera.py) maps them to 8 bits with a limited exposure range; the event simulator sees
their logarithm, so the same scene stays visible to it over many decades.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Lighting:
    """Scalars of one lighting condition (all >= 0)."""

    ambient: float  # irradiance on surfaces outside tunnels (daylight: 1)
    sky: float  # sky radiance scale
    emission: float  # radiance scale of lit windows, lamps and car lights
    headlights: float  # ego headlight strength (irradiance ~ headlights · 30 / depth²)
    sun_glare: float  # peak extra sky radiance around a low sun ahead (0: no sun in view)

    def blend(self, other: Lighting, weight: float) -> Lighting:
        """Geometric interpolation (weight 0 → self, 1 → other); a floor keeps zeros blendable."""
        values = {}
        for field in fields(self):
            a, b = getattr(self, field.name) + 1e-6, getattr(other, field.name) + 1e-6
            values[field.name] = float(np.exp((1 - weight) * np.log(a) + weight * np.log(b))) - 1e-6
        return Lighting(**values)


CONDITIONS: dict[str, Lighting] = {
    "day": Lighting(ambient=1.0, sky=1.2, emission=0.05, headlights=0.0, sun_glare=0.0),
    "overcast": Lighting(ambient=0.45, sky=1.0, emission=0.1, headlights=0.0, sun_glare=0.0),
    "low_sun": Lighting(ambient=0.25, sky=2.0, emission=0.05, headlights=0.0, sun_glare=40.0),
    "dusk": Lighting(ambient=0.05, sky=0.1, emission=0.4, headlights=0.1, sun_glare=0.0),
    "night": Lighting(ambient=0.002, sky=0.001, emission=0.5, headlights=0.15, sun_glare=0.0),
}

TUNNEL_AMBIENT = 0.01
"""Irradiance inside tunnels (tunnel lamps); about 1/70 of daylight, so exits are high-dynamic-range."""
TUNNEL_LAMP_EMISSION = 0.3
"""Extra emission scale of emissive texels inside tunnels (the tunnel lamps are on by day too)."""


@dataclass(frozen=True)
class Scenario:
    """A sequence's lighting: keyframes `(time fraction, condition)` and an optional tunnel (enter, exit fractions)."""

    keyframes: tuple[tuple[float, str], ...]
    tunnel: tuple[float, float] | None = None


SCENARIOS: dict[str, Scenario] = {
    "day": Scenario(((0.0, "day"),)),
    "overcast": Scenario(((0.0, "overcast"),)),
    "tunnel": Scenario(((0.0, "day"),), tunnel=(0.2, 0.7)),
    "low_sun": Scenario(((0.0, "low_sun"),)),
    "dusk_to_night": Scenario(((0.0, "dusk"), (1.0, "night"))),
    "night": Scenario(((0.0, "night"),)),
}
SCENARIO_WEIGHTS = {"day": 0.25, "overcast": 0.1, "tunnel": 0.25, "low_sun": 0.15, "dusk_to_night": 0.1, "night": 0.15}


def lighting_at(scenario: Scenario, fraction: float) -> Lighting:
    """The lighting at `fraction` (0..1) of the sequence, blended between the bracketing keyframes."""
    keys = scenario.keyframes
    if fraction <= keys[0][0] or len(keys) == 1:
        return CONDITIONS[keys[0][1]]
    for (f0, c0), (f1, c1) in itertools.pairwise(keys):
        if fraction <= f1:
            return CONDITIONS[c0].blend(CONDITIONS[c1], (fraction - f0) / max(f1 - f0, 1e-9))
    return CONDITIONS[keys[-1][1]]
