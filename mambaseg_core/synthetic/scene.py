"""Procedural forward-driving street scenes rendered as linear HDR radiance plus 11-class labels.

The world is 2.5-D: a few textured planes and many upright billboards, painted back to front.
- Planes (textures built once per scene; per frame only the ray-plane intersections are recomputed and the
  textures re-sampled, by a `cv2.remap` for the sky and a numba kernel for the others): sky (at infinity),
  ground (road, markings, sidewalks, grass; a periodic tile), far side planes at `|X| = facade` (buildings,
  tree rows), near side planes at `|X| = sidewalk_edge` (fences, walls, hedges, tunnel walls) and tunnel
  ceilings. Per-pixel mip levels keep distant texture from aliasing into flickering events.
- Billboards (sorted by depth each frame): street lamps, traffic signs and lights, trees, parked, leading and
  oncoming cars, walking and crossing pedestrians, tunnel portals.
World frame: X right, Y up, Z forward (metres); the ego camera drives along +Z in the right lane with slight
lateral sway, vertical bob, yaw and pitch. Painter's order is exact here because every billboard stands
inside the corridor the side planes bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numba
import numpy as np

from . import labels as L
from . import textures as T
from .billboards import BillboardAtlas, draw_billboards
from .lighting import SCENARIO_WEIGHTS, SCENARIOS, TUNNEL_AMBIENT, TUNNEL_LAMP_EMISSION, Lighting, Scenario, lighting_at
from .textures import f32


@dataclass(frozen=True)
class SceneConfig:
    """Everything that defines a synthetic sequence's world; same config → identical renders."""

    height: int = 120  # image rows H
    width: int = 160  # image columns W
    seed: int = 0
    duration_s: float = 10.0
    ego_speed_mps: tuple[float, float] = (8.0, 14.0)  # the ego speed is drawn uniformly from this range
    focal_ratio: float = 0.8  # focal length in pixels / W (DSEC's left event camera: ~0.89)
    horizon_ratio: float = 0.42  # principal point row / H
    camera_height_m: float = 1.4
    sway_m: float = 0.15  # lateral sway amplitude inside the lane
    bob_m: float = 0.02  # vertical bob amplitude
    yaw_rad: float = 0.015  # yaw oscillation amplitude
    pitch_rad: float = 0.006  # pitch oscillation amplitude
    lighting: str = "random"  # a key of lighting.SCENARIOS, or "random" (drawn from the seed)
    car_density: float = 1.0  # multipliers of the default object densities
    pedestrian_density: float = 1.0
    tree_density: float = 1.0
    sign_density: float = 1.0
    draw_distance_m: float = 160.0
    fog_distance_m: float = 220.0  # atmospheric extinction length; softens the far, tiny, flickery detail

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"image must be at least 16x16, got {self.height}x{self.width}")
        if self.lighting != "random" and self.lighting not in SCENARIOS:
            raise ValueError(f"lighting must be 'random' or one of {sorted(SCENARIOS)}, got {self.lighting!r}")
        if self.duration_s <= 0 or not 0 < self.ego_speed_mps[0] <= self.ego_speed_mps[1]:
            raise ValueError(f"need duration_s > 0 and 0 < ego_speed_mps[0] <= [1], got {self}")


@dataclass
class View:
    """One rendered instant: radiance (H, W, 3) float32 linear RGB, label (H, W) uint8 (11-class ids), depth
    (H, W) float32 metres along the optical axis (`SKY_DEPTH_M` on the sky)."""

    radiance: np.ndarray
    label: np.ndarray
    depth: np.ndarray


def luminance(radiance: np.ndarray) -> np.ndarray:
    """(H, W, 3) linear RGB → (H, W) float32 luminance (Rec. 709 weights): what an event pixel integrates."""
    return radiance @ f32([0.2126, 0.7152, 0.0722])


_SKY = L.SKY  # a global: numba freezes it into the kernel
SKY_DEPTH_M = 1e4
"""Depth written for sky pixels."""


@dataclass
class _Actor:
    """A billboard in the world: bottom-centre at (x0 + vx·t, base_y, z0 + vz·t).

    It shows atlas sprites `first_sprite .. first_sprite + num_frames - 1`, cycling once per `cycle_s` (walking).
    """

    first_sprite: int
    x0: float
    z0: float
    vx: float = 0.0
    vz: float = 0.0
    num_frames: int = 1
    cycle_s: float = 1.0
    indoor: bool = True  # lit by the tunnel when inside one (False for portals)


@dataclass
class _Plane:
    """A textured side plane pair (left at -offset, right at +offset); texture rows: left block, then right."""

    texture: T.MipTexture
    offset: float
    top_m: float
    indoor: bool
    rows_per_side: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows_per_side = self.texture.height // 2


class Scene:
    """A seeded street world. `render(t_s)` gives the `View` at time t (seconds from the sequence start)."""

    GROUND_PERIOD_M = 96.0
    TUNNEL_HEIGHT_M = 5.0

    def __init__(self, config: SceneConfig):
        self.config = config
        cfg = config
        rng = np.random.default_rng(cfg.seed)
        self.profile = T.StreetProfile()
        self.speed = float(rng.uniform(*cfg.ego_speed_mps))
        name = cfg.lighting
        if name == "random":
            names = sorted(SCENARIO_WEIGHTS)
            weights = np.array([SCENARIO_WEIGHTS[n] for n in names])
            name = str(rng.choice(names, p=weights / weights.sum()))
        self.scenario_name = name
        self.scenario: Scenario = SCENARIOS[name]
        self.start_z = 10.0
        travel = self.speed * cfg.duration_s
        self.route_m = self.start_z + travel + cfg.draw_distance_m + 20.0
        self.tunnels: list[tuple[float, float]] = []
        if self.scenario.tunnel is not None:
            enter, leave = self.scenario.tunnel
            # The tunnel starts `enter` of the way in (camera crosses the portal then) and ends at `leave`.
            self.tunnels.append((self.start_z + enter * travel, self.start_z + leave * travel))

        h, w = cfg.height, cfg.width
        self.focal = cfg.focal_ratio * w
        self.cx, self.cy = (w - 1) / 2.0, cfg.horizon_ratio * h
        self._u = ((np.arange(w, dtype=np.float32) - self.cx) / self.focal)[None, :]  # (1, W) ray x / z
        self._v = (-(np.arange(h, dtype=np.float32) - self.cy) / self.focal)[:, None]  # (H, 1) ray y / z
        # Ego headlight cone in camera coordinates, fixed to the car.
        self._headlight_cone = np.exp(-((self._u / 0.45) ** 2) - ((self._v + 0.12) / 0.14) ** 2).astype(np.float32)

        self._sky = self._build_sky(rng)
        self._ground = T.MipTexture(T.ground_tile(rng, self.profile, self.GROUND_PERIOD_M, 0.05))
        self._far = self._build_far_planes(rng)
        self._near = self._build_near_planes(rng)
        self._ceiling = self._build_ceiling()
        self._atlas = BillboardAtlas()
        actors = self._build_actors(rng)
        self._atlas.freeze()
        # (N, 8) x0, z0, vx, vz, indoor, first sprite, frames, cycle: places and culls every billboard at once.
        self._actor_table = np.array(
            [[a.x0, a.z0, a.vx, a.vz, a.indoor, a.first_sprite, a.num_frames, a.cycle_s] for a in actors], np.float64
        ).reshape(-1, 8)

    # ------------------------------------------------------------------------------------------------------
    # World construction

    def _build_sky(self, rng: np.random.Generator) -> np.ndarray:
        """Sky albedo (Hs, Ws, 3) over ray tangents u in [-2, 2], v in [-0.2, 1.2]: gradient plus clouds."""
        hs, ws = 256, 512
        v = np.linspace(1.2, -0.2, hs, dtype=np.float32)[:, None]
        zenith, horizon = f32([0.25, 0.45, 0.85]), f32([0.75, 0.82, 0.9])
        mix = np.clip(v / 0.8, 0, 1)[..., None]
        sky = (1 - mix) * horizon + mix * zenith
        clouds = T.fractal_noise(rng, hs, ws, 48.0, octaves=4)
        cover = np.clip((clouds - 0.45) * 3.0, 0, 1)[..., None]
        sky = (1 - cover) * sky + cover * f32([0.9, 0.9, 0.92]) * (0.8 + 0.3 * clouds[..., None])
        self._sky_scale = ((ws - 1) / 4.0, (hs - 1) / 1.4)
        return np.ascontiguousarray(sky, np.float32)

    def _in_tunnel(self, z0: float, z1: float, margin: float = 0.0) -> bool:
        return any(z1 > a - margin and z0 < b + margin for a, b in self.tunnels)

    def _build_far_planes(self, rng: np.random.Generator) -> _Plane:
        res, top = 0.1, 24.0
        rows, cols = int(top / res), int(self.route_m / res)
        tex = T.Texture.blank(2 * rows, cols, res)
        for side in range(2):
            z = 0.0
            while z < self.route_m:
                length = float(rng.uniform(8.0, 30.0))
                sl = slice(int(z / res), min(int((z + length) / res), cols))
                if sl.stop - sl.start > 4:
                    kind = rng.random()
                    if self._in_tunnel(z, z + length, margin=5.0) or kind < 0.2 * self.config.tree_density:
                        T.paint_tree_row(rng, tex, T.StripSegment.of(tex, sl, top, side * rows))
                    elif kind < 0.85:
                        T.paint_building(rng, tex, T.StripSegment.of(tex, sl, top, side * rows))
                    elif kind < 0.93:
                        segment = T.StripSegment.of(tex, sl, top, side * rows)
                        T.paint_wall(rng, tex, segment, height=float(rng.uniform(2.5, 4.0)))
                z += length + (float(rng.uniform(2.0, 12.0)) if rng.random() < 0.3 else 0.0)
        return _Plane(T.MipTexture(tex), self.profile.facade, top, indoor=False)

    def _build_near_planes(self, rng: np.random.Generator) -> _Plane:
        res, top = 0.05, 7.0
        rows, cols = int(top / res), int(self.route_m / res)
        tex = T.Texture.blank(2 * rows, cols, res)
        z_axis = (np.arange(cols, dtype=np.float32) + 0.5) * res
        for side in range(2):
            z = 0.0
            while z < self.route_m:
                length = float(rng.uniform(6.0, 25.0))
                sl = slice(int(z / res), min(int((z + length) / res), cols))
                kind = rng.random()
                if sl.stop - sl.start > 4 and not self._in_tunnel(z, z + length, margin=20.0):
                    if kind < 0.2:
                        T.paint_fence(rng, tex, T.StripSegment.of(tex, sl, top, side * rows))
                    elif kind < 0.35:
                        T.paint_wall(rng, tex, T.StripSegment.of(tex, sl, top, side * rows))
                    elif kind < 0.5:
                        T.paint_hedge(rng, tex, T.StripSegment.of(tex, sl, top, side * rows))
                z += length
            for z0, z1 in self.tunnels:
                # Retaining walls rise over 15 m to the portal, then run through the tunnel at full height.
                sl = slice(max(int((z0 - 15.0) / res), 0), int(z1 / res))
                ramp = np.clip(1.0 + (z_axis[sl] - (z0 - 15.0)) / 15.0 * 5.0, 1.0, top - 0.5)
                height = np.where(z_axis[sl] >= z0, top - 0.5, ramp)[None, :]
                T.paint_tunnel_wall(tex, T.StripSegment.of(tex, sl, top, side * rows), height)
        return _Plane(T.MipTexture(tex), self.profile.sidewalk_edge, top, indoor=True)

    def _build_ceiling(self) -> list[tuple[float, float, T.MipTexture]]:
        half = self.profile.sidewalk_edge
        return [(z0, z1, T.MipTexture(T.tunnel_ceiling(z1 - z0, half, 0.1))) for z0, z1 in self.tunnels]

    def _build_actors(self, rng: np.random.Generator) -> list[_Actor]:
        cfg, prof = self.config, self.profile
        actors: list[_Actor] = []
        add = self._atlas.add
        lamps = {side: add(T.street_lamp(side)) for side in (-1, 1)}
        z_end = self.route_m - 10.0

        def outdoors(z: float) -> bool:
            return not self._in_tunnel(z, z, margin=3.0)

        # Street lamps, staggered on both sides.
        for side in (-1, 1):
            for z in np.arange(rng.uniform(5, 30), z_end, 30.0):
                if outdoors(z):
                    actors.append(_Actor(lamps[side], side * (prof.road_edge + 0.35), float(z)))
        # Traffic lights at every zebra crossing, signs at random spacing.
        zebra = np.arange(0.6 * self.GROUND_PERIOD_M, z_end, self.GROUND_PERIOD_M)
        for z in zebra:
            if outdoors(z):
                for side in (-1, 1):
                    actors.append(
                        _Actor(add(T.traffic_light(rng)), side * (prof.road_edge + 0.5), float(z - side * 2.5))
                    )
        z = float(rng.uniform(5, 20))
        while z < z_end:
            if outdoors(z):
                side = 1 if rng.random() < 0.7 else -1
                actors.append(_Actor(add(T.traffic_sign(rng)), side * (prof.road_edge + 0.6), z))
            z += float(rng.uniform(20.0, 50.0)) / max(cfg.sign_density, 1e-3)
        # Tree avenues on the sidewalks.
        for side in (-1, 1):
            z = float(rng.uniform(0, 10))
            while z < z_end:
                avenue = rng.random() < 0.6 * min(cfg.tree_density, 1.5)
                length = float(rng.uniform(20, 60))
                if avenue:
                    for zt in np.arange(z, min(z + length, z_end), rng.uniform(7.0, 12.0)):
                        if outdoors(zt):
                            xt = side * (prof.sidewalk_edge - rng.uniform(0.6, 1.0))
                            actors.append(_Actor(add(T.tree(rng)), float(xt), float(zt)))
                z += length
        # Parked cars in the parking strips.
        for side in (-1, 1):
            for z in np.arange(rng.uniform(0, 6), z_end, 6.0):
                if rng.random() < 0.35 * cfg.car_density and outdoors(z) and min(abs(z - zebra), default=99) > 6:
                    x = side * (prof.lane_edge + 1.05)
                    actors.append(_Actor(add(T.car(rng, front=side < 0)), float(x), float(z)))
        # Traffic: a leading car in the ego lane and oncoming cars in the left lane.
        duration = cfg.duration_s
        for _ in range(int(rng.poisson(1.2 * cfg.car_density)) + 1):
            vz = self.speed + float(rng.uniform(-0.5, 2.0))
            z0 = self.start_z + float(rng.uniform(15.0, 70.0))
            actors.append(_Actor(add(T.car(rng, front=False)), 1.75, z0, vz=vz))
        n_oncoming = int(rng.poisson(1.0 + duration * 0.8 * cfg.car_density))
        for _ in range(n_oncoming):
            vz = -float(rng.uniform(7.0, 14.0))
            meet = float(rng.uniform(0.0, duration))  # time the oncoming car passes the ego camera
            z_meet = self.start_z + self.speed * meet
            actors.append(_Actor(add(T.car(rng, front=True)), -1.75, z_meet - vz * meet, vz=vz))
        # Pedestrians: walking along the sidewalks and crossing ahead of the ego car.
        n_walkers = int(rng.poisson(self.route_m / 12.0 * cfg.pedestrian_density))
        for _ in range(n_walkers):
            side = 1 if rng.random() < 0.5 else -1
            x = side * float(rng.uniform(prof.road_edge + 0.6, prof.sidewalk_edge - 0.3))
            frames = [add(f) for f in T.pedestrian_frames(rng)]
            speed = float(rng.uniform(0.9, 1.6)) * (1 if rng.random() < 0.5 else -1)
            actors.append(
                _Actor(
                    frames[0],
                    x,
                    float(rng.uniform(0, z_end)),
                    vz=speed,
                    num_frames=len(frames),
                    cycle_s=1.1 / abs(speed),
                )
            )
        for _ in range(int(rng.poisson(0.3 * duration * cfg.pedestrian_density))):
            t_cross = float(rng.uniform(0, duration))  # time the walker is at the road centre, 25-40 m ahead
            z = self.start_z + self.speed * t_cross + float(rng.uniform(25.0, 40.0))
            vx = float(rng.uniform(1.1, 1.6)) * (1 if rng.random() < 0.5 else -1)
            frames = [add(f) for f in T.pedestrian_frames(rng)]
            actors.append(_Actor(frames[0], -vx * t_cross, z, vx=vx, num_frames=len(frames), cycle_s=1.1 / abs(vx)))
        for z0, _ in self.tunnels:
            portal = add(T.tunnel_portal(2 * prof.sidewalk_edge, 3.0), base_y=self.TUNNEL_HEIGHT_M)
            actors.append(_Actor(portal, 0.0, z0, indoor=False))
        return actors

    # ------------------------------------------------------------------------------------------------------
    # Per-frame state

    def ego_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre (3,) and camera-to-world rotation (3, 3) at time t."""
        cfg = self.config
        centre = np.array(
            [
                1.75 + cfg.sway_m * np.sin(2 * np.pi * t / 6.1),
                cfg.camera_height_m + cfg.bob_m * np.sin(2 * np.pi * 1.7 * t),
                self.start_z + self.speed * t,
            ]
        )
        yaw = cfg.yaw_rad * np.sin(2 * np.pi * t / 4.3 + 1.0)
        pitch = cfg.pitch_rad * np.sin(2 * np.pi * 1.3 * t)
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        rot_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rot_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        return centre, rot_yaw @ rot_pitch

    def lighting(self, t: float) -> Lighting:
        return lighting_at(self.scenario, t / self.config.duration_s)

    def in_tunnel(self, t: float) -> bool:
        """Whether the ego camera is inside a tunnel at time t."""
        z = self.start_z + self.speed * t
        return any(a <= z <= b for a, b in self.tunnels)

    def _indoor_weight(self, z: np.ndarray) -> np.ndarray:
        """Tunnel-light weight of a world Z: 1 well inside a tunnel, ramping to 0 over 4 m at the mouths."""
        weight = np.zeros(z.shape, np.float32)
        for a, b in self.tunnels:
            weight = np.maximum(weight, np.clip(np.minimum(z - a, b - z) / 4.0, 0.0, 1.0))
        return weight

    # ------------------------------------------------------------------------------------------------------
    # Rendering

    def render(self, t: float) -> View:
        """Render time `t` (s): radiance (H, W, 3) float32, label (H, W) uint8, depth (H, W) float32."""
        h, w = self.config.height, self.config.width
        centre_arr, rot_arr = self.ego_pose(t)
        # Python floats keep the per-pixel maths in float32 (NumPy 2 promotes with float64 scalars).
        centre, rot = [float(c) for c in centre_arr], rot_arr.tolist()
        # World ray directions of every pixel, scaled so the camera-forward component is 1 (depth = s).
        dx = rot[0][0] * self._u + rot[0][1] * self._v + rot[0][2]
        dy = rot[1][0] * self._u + rot[1][1] * self._v + rot[1][2]
        dz = rot[2][0] * self._u + rot[2][1] * self._v + rot[2][2]
        buf = _Buffers(h, w)
        self._paint_sky(buf, dx, dy, dz)
        self._paint_ground(buf, centre, dx, dy, dz)
        for plane in (self._far, self._near):
            self._paint_plane(buf, plane, centre, dx, dy, dz)
        self._paint_ceilings(buf, centre, dx, dy, dz)
        self._paint_actors(buf, t, centre_arr, rot_arr)
        return View(self._shade(buf, t, dx, dy, dz), buf.label, buf.depth)

    def _paint_sky(self, buf: _Buffers, dx, dy, dz) -> None:
        sx, sy = self._sky_scale
        u = np.broadcast_to((dx / dz + 2.0) * sx, buf.label.shape).astype(np.float32)
        v = np.broadcast_to((1.2 - dy / dz) * sy, buf.label.shape).astype(np.float32)
        buf.albedo[..., :3] = cv2.remap(self._sky, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        buf.albedo[..., 3] = 0.0
        buf.label[:] = L.SKY
        buf.depth[:] = SKY_DEPTH_M

    def _paint_ground(self, buf: _Buffers, centre, dx, dy, dz) -> None:
        below = np.flatnonzero((dy < -1e-4).any(axis=1))
        if len(below) == 0:
            return
        rows = np.s_[int(below[0]) :]
        dx, dy, dz = (np.broadcast_to(d, buf.label.shape)[rows] for d in (dx, dy, dz))
        down = dy < -1e-4
        s = np.where(down, -centre[1] / np.where(down, dy, -1.0), -1.0).astype(np.float32)
        x = centre[0] + s * dx
        z = centre[2] + s * dz
        tex, period = self._ground, self.GROUND_PERIOD_M
        u = ((x + self.profile.ground_half_width) / tex.res - 0.5).astype(np.float32)
        v = ((period - np.mod(z, period)) / tex.res - 0.5).astype(np.float32)
        u[(s <= 0) | (s >= self.config.draw_distance_m)] = -10.0
        indoor = self._indoor_weight(z) * (np.abs(x) < self.profile.sidewalk_edge) if self.tunnels else None
        buf.composite(tex, u, v, s, indoor, rows, wrap_rows=tex.height)

    def _paint_plane(self, buf: _Buffers, plane: _Plane, centre, dx, dy, dz) -> None:
        right = dx > 0
        s = ((np.where(right, plane.offset, -plane.offset) - centre[0]) / np.where(dx == 0, 1e-9, dx)).astype(
            np.float32
        )
        y = centre[1] + s * dy
        z = centre[2] + s * dz
        tex = plane.texture
        u = (z / tex.res - 0.5).astype(np.float32)
        v = ((plane.top_m - y) / tex.res - 0.5 + right * plane.rows_per_side).astype(np.float32)
        valid = (s > 0) & (s < self.config.draw_distance_m) & (y >= 0) & (y < plane.top_m)
        u[~valid] = -10.0
        indoor = self._indoor_weight(z) if plane.indoor and self.tunnels else None
        buf.composite(tex, u, v, s, indoor)

    def _paint_ceilings(self, buf: _Buffers, centre, dx, dy, dz) -> None:
        half = self.profile.sidewalk_edge
        above = np.flatnonzero((dy > 1e-4).any(axis=1))
        if len(above) == 0:
            return
        rows = np.s_[: int(above[-1]) + 1]
        dx, dy, dz = (np.broadcast_to(d, buf.label.shape)[rows] for d in (dx, dy, dz))
        for z0, z1, tex in self._ceiling:
            if z1 < centre[2] or z0 > centre[2] + self.config.draw_distance_m:
                continue
            up = dy > 1e-4
            s = np.where(up, (self.TUNNEL_HEIGHT_M - centre[1]) / np.where(up, dy, 1.0), -1.0).astype(np.float32)
            x = centre[0] + s * dx
            z = centre[2] + s * dz
            u = ((x + half) / tex.res - 0.5).astype(np.float32)
            v = ((z1 - z) / tex.res - 0.5).astype(np.float32)
            u[(s <= 0) | (z < z0) | (z >= z1) | (np.abs(x) >= half)] = -10.0
            buf.composite(tex, u, v, s, self._indoor_weight(z), rows)

    def _paint_actors(self, buf: _Buffers, t: float, centre: np.ndarray, rot: np.ndarray) -> None:
        """Project, cull, pick mip levels for and sort all billboards at once; one kernel call paints them."""
        table, atlas = self._actor_table, self._atlas
        if len(table) == 0:
            return
        sprite = (table[:, 5] + np.floor(t / table[:, 7] * table[:, 6]) % table[:, 6]).astype(np.int64)
        z = table[:, 1] + table[:, 3] * t
        world = np.stack([table[:, 0] + table[:, 2] * t, atlas.base_y[sprite], z], 1) - centre
        cam = world @ rot  # (N, 3): row n is rot.T @ world[n], the bottom centre in camera coordinates
        depth = cam[:, 2]
        near = (depth > 0.5) & (depth < self.config.draw_distance_m)
        px_per_m = self.focal / np.where(near, depth, 1.0)
        width_px, height_px = atlas.size_m[sprite, 0] * px_per_m, atlas.size_m[sprite, 1] * px_per_m
        left = self.cx + px_per_m * cam[:, 0] - width_px / 2
        top = self.cy - px_per_m * cam[:, 1] - height_px
        h, w = buf.label.shape
        keep = near & (height_px >= 1.0) & (left < w) & (left + width_px > -1) & (top < h) & (top + height_px > -1)
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-depth[idx], kind="stable")]  # far to near
        res = atlas.res[sprite[idx]]
        level = np.clip(np.rint(np.log2(1.0 / (px_per_m[idx] * res))), 0, atlas.num_levels[sprite[idx]] - 1)
        level = level.astype(np.int64)
        indoor = self._indoor_weight(z[idx]) * table[idx, 4] if self.tunnels else np.zeros(len(idx))
        draw_billboards(
            atlas.albedo,
            atlas.label,
            atlas.levels[sprite[idx], level],
            px_per_m[idx] * res * np.exp2(level),
            left[idx],
            top[idx],
            depth[idx].astype(np.float32),
            indoor.astype(np.float32),
            buf.albedo,
            buf.label,
            buf.depth,
            buf.indoor,
        )

    def _shade(self, buf: _Buffers, t: float, dx, dy, dz) -> np.ndarray:
        """Albedo + emission + lighting (+ sky, sun glare, fog) → radiance (H, W, 3) float32."""
        light = self.lighting(t)
        shape = buf.label.shape
        radiance = np.empty((*shape, 3), np.float32)
        params = np.array(
            [
                light.ambient,
                light.emission,
                light.sky,
                light.headlights * 30.0,
                light.sun_glare,
                TUNNEL_AMBIENT,
                TUNNEL_LAMP_EMISSION,
                self.config.fog_distance_m,
            ],
            np.float32,
        )
        tan_x = np.broadcast_to(dx / dz, shape)
        tan_y = np.broadcast_to(dy / dz, shape)
        _shade_kernel(
            buf.albedo, buf.label, buf.depth, buf.indoor, self._headlight_cone, tan_x, tan_y, params, radiance
        )
        return radiance


HAZE_RGB = (0.75, 0.82, 0.9)
"""Horizon colour: the fog's tint (and the sun glare's, close enough)."""


@numba.njit(cache=True, nogil=True)
def _shade_kernel(albedo, label, depth, indoor, headlight_cone, tan_x, tan_y, params, out):
    """Per pixel radiance = albedo · (irradiance + emission) · (1 − fog) + haze · fog; sky = albedo · sky + glare.

    Irradiance blends daylight and tunnel light by `indoor`, plus the ego headlights (∝ cone / depth²). A low sun
    (params[4] > 0) sits straight ahead above the road's vanishing point (ray tangent (0, 0.08)) as a disc with a
    glow. Fog = depth / (depth + fog distance).
    """
    ambient, emission, sky, headlights, sun_glare, tunnel_ambient, tunnel_lamps, fog_distance = params
    h, w = label.shape
    for y in range(h):
        for x in range(w):
            if label[y, x] == _SKY:
                extra = 0.0
                if sun_glare > 0:
                    r2 = tan_x[y, x] ** 2 + (tan_y[y, x] - 0.08) ** 2
                    extra = sun_glare * (np.exp(-r2 / 0.02) + 0.2 * np.exp(-r2 / 0.2))
                    if r2 < 0.001:
                        extra += 10.0 * sun_glare
                for c in range(3):
                    out[y, x, c] = albedo[y, x, c] * sky + extra * HAZE_RGB[c]
                continue
            inside = indoor[y, x]
            e = albedo[y, x, 3]
            d = depth[y, x]
            irradiance = ambient * (1 - inside) + tunnel_ambient * inside + e * (emission + tunnel_lamps * inside)
            if headlights > 0:
                irradiance += headlights * headlight_cone[y, x] / max(d, 2.0) ** 2
            fog = d / (d + fog_distance) * (1 - inside)
            for c in range(3):
                out[y, x, c] = albedo[y, x, c] * irradiance * (1 - fog) + fog * 0.7 * sky * HAZE_RGB[c]


class _Buffers:
    """Per-frame G-buffer the layers paint into, back to front."""

    def __init__(self, height: int, width: int):
        self.albedo = np.zeros((height, width, 4), np.float32)
        self.label = np.zeros((height, width), np.uint8)
        self.depth = np.zeros((height, width), np.float32)
        self.indoor = np.zeros((height, width), np.float32)

    def composite(self, tex: T.MipTexture, u, v, depth, indoor, rows=np.s_[:], wrap_rows: int = 0) -> None:
        """Paint `tex` sampled at texel coords (u, v) (h, w) into `rows` of the buffers where it is opaque.

        `depth` and `indoor` (tunnel-light weight; None means 0) are (h, w) or broadcastable.
        """
        shape = u.shape
        depth = np.ascontiguousarray(np.broadcast_to(depth, shape), np.float32)
        indoor = (
            np.zeros(shape, np.float32)
            if indoor is None
            else np.ascontiguousarray(np.broadcast_to(indoor, shape), np.float32)
        )
        tex.composite(
            u, v, depth, indoor, (self.albedo[rows], self.label[rows], self.depth[rows], self.indoor[rows]), wrap_rows
        )
