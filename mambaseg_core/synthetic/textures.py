"""Procedural textures of the synthetic street and the mip-mapped texture container the renderer samples.

Every texture is a pair:
- `albedo`: float32 (H, W, 4): linear RGB reflectance in [0, 1] and an emission weight `e` in [0, 1]
  (lit windows, lamps, car lights glow with radiance `albedo · e · L_emit`, see `lighting.py`).
- `label`: uint8 (H, W): 11-class id (labels.py), `TRANSPARENT` where the surface is absent.
Texture rows run top (high) to bottom (low); a metric resolution `res` (metres per texel) ties them to the world.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba
import numpy as np

from . import labels as L

_TRANSPARENT = L.TRANSPARENT  # a global: numba freezes it into the kernel


def f32(values) -> np.ndarray:
    """A float32 array of `values` (colours, weights): keeps NumPy 2 from promoting per-pixel maths to float64."""
    return np.asarray(values, np.float32)


def fractal_noise(rng: np.random.Generator, height: int, width: int, cell: float, octaves: int = 3) -> np.ndarray:
    """(H, W) float32 smooth noise in [0, 1]: bicubic-upsampled random grids, finest cell `cell / 2**(octaves-1)`."""
    total = np.zeros((height, width), np.float32)
    weight = 0.0
    for octave in range(octaves):
        size = max(cell / 2**octave, 1.0)
        grid = rng.random((int(height / size) + 2, int(width / size) + 2)).astype(np.float32)
        up = cv2.resize(grid, (int(grid.shape[1] * size), int(grid.shape[0] * size)), interpolation=cv2.INTER_CUBIC)
        amp = 0.5**octave
        total += amp * up[:height, :width]
        weight += amp
    return np.clip(total / weight, 0.0, 1.0)


def fill_transparent(albedo: np.ndarray, label: np.ndarray) -> None:
    """Give transparent texels the blurred colour of nearby opaque ones, so bilinear edges show no dark fringe."""
    opaque = (label != L.TRANSPARENT).astype(np.float32)
    if opaque.all() or not opaque.any():
        return
    k = max(3, (min(label.shape) // 8) | 1)
    weight = cv2.blur(opaque, (k, k)) + 1e-6
    for c in range(3):
        spread = cv2.blur(albedo[..., c] * opaque, (k, k)) / weight
        albedo[..., c] = np.where(opaque > 0, albedo[..., c], spread)


@dataclass
class Texture:
    """A painted texture: `albedo` (H, W, 4) float32, `label` (H, W) uint8, `res` metres per texel."""

    albedo: np.ndarray
    label: np.ndarray
    res: float

    @classmethod
    def blank(cls, height: int, width: int, res: float) -> Texture:
        return cls(np.zeros((height, width, 4), np.float32), np.full((height, width), L.TRANSPARENT, np.uint8), res)

    def paint(self, mask: np.ndarray, rgb, label: int, emission: float | np.ndarray = 0.0, region=np.s_[:, :]) -> None:
        """Paint `rgb` (3,) or (h, w, 3) with `label` where `mask` (h, w) bool is set inside `region`."""
        albedo = self.albedo[region]
        rgb = np.asarray(rgb, np.float32)
        albedo[..., :3][mask] = rgb[mask] if rgb.ndim == 3 else rgb
        albedo[..., 3][mask] = emission[mask] if isinstance(emission, np.ndarray) else emission
        self.label[region][mask] = label


class MipTexture:
    """A texture plus its mip levels packed into one atlas, for per-pixel mip-mapped sampling.

    Level 0 sits at the atlas's left; levels 1.. are stacked in a column to its right. Labels are always
    point-sampled from level 0 (ground truth at the pixel centre).
    """

    def __init__(self, texture: Texture, levels: int = 5):
        fill_transparent(texture.albedo, texture.label)
        self.res = texture.res
        self.label = texture.label
        self.height, self.width = texture.label.shape
        pyramid = [texture.albedo]
        while len(pyramid) < levels and min(pyramid[-1].shape[:2]) >= 4:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        right = max((p.shape[1] for p in pyramid[1:]), default=0)
        # The smaller levels are stacked in one column beside level 0; rounding up at odd sizes can make that
        # column taller than level 0 (e.g. 5 -> 3 + 2 + 1 rows).
        stacked = sum(p.shape[0] for p in pyramid[1:])
        atlas = np.zeros((max(self.height, stacked), self.width + right, 4), np.float32)
        boxes = [(0, 0, self.width, self.height)]
        atlas[: self.height, : self.width] = texture.albedo
        row = 0
        for level in pyramid[1:]:
            h, w = level.shape[:2]
            atlas[row : row + h, self.width : self.width + w] = level
            boxes.append((self.width, row, w, h))
            row += h
        self.atlas = atlas
        self.boxes = np.array(boxes, np.int64)  # (levels, 4): x offset, y offset, width, height

    def composite(
        self,
        u: np.ndarray,
        v: np.ndarray,
        depth: np.ndarray,
        indoor: np.ndarray,
        out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        wrap_rows: int = 0,
    ) -> None:
        """Sample at level-0 texel coordinates `u` (column), `v` (row), each (h, w) float32, and paint opaque texels.

        `depth`, `indoor` (h, w) float32 are written along; `out` = (albedo (h, w, 4), label, depth, indoor)
        views of the frame buffers. `wrap_rows` > 0 marks `v` as periodic with that many rows (ground tile).
        """
        albedo, label, depth_out, indoor_out = out
        _sample_composite(
            self.atlas, self.boxes, self.label, u, v, depth, indoor, albedo, label, depth_out, indoor_out, wrap_rows
        )


@numba.njit(cache=True, nogil=True)
def _sample_composite(atlas, boxes, label0, u, v, depth, indoor, out_albedo, out_label, out_depth, out_indoor, wrap):
    """Per pixel: nearest level-0 label; if opaque, a bilinear albedo sample from the mip level whose texel
    matches the pixel footprint (max of the texel-coordinate steps to the neighbouring pixels)."""
    h, w = u.shape
    rows0, cols0 = label0.shape
    n_levels = boxes.shape[0]
    for y in range(h):
        for x in range(w):
            uu, vv = u[y, x], v[y, x]
            i, j = int(np.floor(vv + 0.5)), int(np.floor(uu + 0.5))
            if i < 0 or i >= rows0 or j < 0 or j >= cols0:
                continue
            lab = label0[i, j]
            if lab == _TRANSPARENT:
                continue
            footprint = 1.0
            for dy, dx in ((0, 1), (1, 0)):
                yn, xn = y + dy, x + dx
                if yn >= h or xn >= w or u[yn, xn] < -1.0:  # off the frame or off the surface: look back
                    yn, xn = y - dy, x - dx
                if yn < 0 or xn < 0 or u[yn, xn] < -1.0:
                    continue
                dv = abs(v[yn, xn] - vv)
                if wrap > 0:
                    dv = min(dv, wrap - dv)
                footprint = max(footprint, abs(u[yn, xn] - uu) + dv)
            level = 0  # round(log2(footprint)), without a log per pixel
            while footprint >= 1.4142135 and level < n_levels - 1:
                footprint *= 0.5
                level += 1
            scale = 0.5**level
            ox, oy, bw, bh = boxes[level, 0], boxes[level, 1], boxes[level, 2], boxes[level, 3]
            ax = min(max((uu + 0.5) * scale - 0.5, 0.0), bw - 1.0)
            ay = min(max((vv + 0.5) * scale - 0.5, 0.0), bh - 1.0)
            x0, y0 = int(ax), int(ay)
            x1, y1 = min(x0 + 1, bw - 1), min(y0 + 1, bh - 1)
            wx, wy = ax - x0, ay - y0
            for c in range(4):
                top = atlas[oy + y0, ox + x0, c] * (1 - wx) + atlas[oy + y0, ox + x1, c] * wx
                bottom = atlas[oy + y1, ox + x0, c] * (1 - wx) + atlas[oy + y1, ox + x1, c] * wx
                out_albedo[y, x, c] = top * (1 - wy) + bottom * wy
            out_label[y, x] = lab
            out_depth[y, x] = depth[y, x]
            out_indoor[y, x] = indoor[y, x]


# ----------------------------------------------------------------------------------------------------------
# Ground: one periodic tile in (Z rows, X columns).


@dataclass(frozen=True)
class StreetProfile:
    """Lateral layout of the street (metres from the road centre line, symmetric)."""

    lane_edge: float = 3.5  # solid edge line; the two driving lanes are inside
    road_edge: float = 5.5  # kerb; parking strips lie between lane_edge and road_edge
    sidewalk_edge: float = 8.0  # near planes (fences, walls, hedges) stand here
    facade: float = 9.5  # far planes (buildings, tree rows) stand here
    ground_half_width: float = 14.0  # extent of the ground texture


def ground_tile(rng: np.random.Generator, profile: StreetProfile, period_m: float, res: float) -> Texture:
    """The road surface tile: asphalt, lane markings, parking bays, zebra crossing, kerbs, paved sidewalks, grass.

    Rows are Z (row 0 at Z = period, i.e. far), columns are X from -ground_half_width to +ground_half_width.
    """
    rows, cols = int(period_m / res), int(2 * profile.ground_half_width / res)
    tex = Texture.blank(rows, cols, res)
    x = (np.arange(cols, dtype=np.float32) + 0.5) * res - profile.ground_half_width
    z = period_m - (np.arange(rows, dtype=np.float32) + 0.5) * res
    ax = np.abs(x)[None, :]
    zz = np.broadcast_to(z[:, None], (rows, cols))
    grain = fractal_noise(rng, rows, cols, 6.0 / (res * 10), octaves=4)
    fine = rng.random((rows, cols)).astype(np.float32)

    road = np.broadcast_to(ax < profile.road_edge, (rows, cols))
    asphalt = 0.07 + 0.05 * grain + 0.02 * fine
    patches = fractal_noise(rng, rows, cols, 4.0 / res, octaves=2) > 0.72
    asphalt = np.where(patches, asphalt * 0.7, asphalt)
    parking = (ax > profile.lane_edge) & (ax < profile.road_edge)
    asphalt = np.where(parking, asphalt * 1.15, asphalt)
    tex.paint(road, np.stack([asphalt] * 3, -1) * f32([1.0, 1.0, 1.05]), L.ROAD)

    paint = f32([0.75, 0.75, 0.7])
    dash = (zz % 9.0) < 3.0
    centre = (ax < 0.08) & dash
    edge = np.abs(ax - profile.lane_edge) < 0.08
    bays = parking & ((zz % 6.0) < 0.12)
    zebra_z = period_m * 0.6
    zebra = (np.abs(zz - zebra_z) < 2.0) & (ax < profile.road_edge - 0.3) & ((x[None, :] % 1.0) < 0.5)
    stop = (np.abs(zz - zebra_z + 3.0) < 0.2) & (x[None, :] > 0) & (ax < profile.lane_edge)
    tex.paint(centre | edge | bays | zebra | stop, paint * (0.8 + 0.2 * grain[..., None]), L.ROAD)

    kerb = np.broadcast_to((ax >= profile.road_edge) & (ax < profile.road_edge + 0.2), (rows, cols))
    tex.paint(kerb, f32([0.45, 0.45, 0.43]) * (0.85 + 0.15 * fine[..., None]), L.SIDEWALK)
    walk = (ax >= profile.road_edge + 0.2) & (ax < profile.facade)
    tile_id = (np.floor(zz / 0.5) * 97 + np.floor(x[None, :] / 0.5) * 31) % 7
    joints = ((zz % 0.5) < 0.03) | ((x[None, :] % 0.5) < 0.03)
    paving = 0.22 + 0.025 * tile_id + 0.05 * grain - np.where(joints, 0.08, 0.0)
    tex.paint(np.broadcast_to(walk, (rows, cols)), np.stack([paving * 1.02, paving, paving * 0.95], -1), L.SIDEWALK)
    grass = np.broadcast_to(ax >= profile.facade, (rows, cols))
    green = 0.5 + 0.5 * grain + 0.3 * (fine - 0.5)
    tex.paint(grass, np.stack([0.06 * green, 0.14 * green, 0.04 * green], -1), L.VEGETATION)
    return tex


# ----------------------------------------------------------------------------------------------------------
# Side strips: far planes (buildings, tree rows) and near planes (fences, walls, hedges, tunnel walls).
# Columns are Z (column 0 at Z = 0), rows are height Y (row 0 at the strip's top height).


FACADE_COLOURS = f32(
    [[0.55, 0.5, 0.42], [0.4, 0.4, 0.4], [0.45, 0.25, 0.18], [0.7, 0.68, 0.62], [0.5, 0.45, 0.35], [0.3, 0.33, 0.36]]
)


@dataclass(frozen=True)
class StripSegment:
    """The part of a side-strip texture that one object occupies: `region` (slice of the texture), texel-centre
    heights `y` (rows, 1) and along-road positions `z` (1, cols) in metres from the segment start."""

    region: tuple[slice, slice]
    y: np.ndarray
    z: np.ndarray

    @classmethod
    def of(cls, tex: Texture, cols: slice, top_m: float, rows_off: int) -> StripSegment:
        """Columns `cols` of the side whose rows start at `rows_off` and whose row 0 is `top_m` high."""
        rows = int(top_m / tex.res)
        y = top_m - (np.arange(rows, dtype=np.float32)[:, None] + 0.5) * tex.res
        z = (np.arange(cols.stop - cols.start, dtype=np.float32)[None, :] + 0.5) * tex.res
        return cls((slice(rows_off, rows_off + rows), cols), y, z)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.shape[0], self.z.shape[1]


def paint_building(rng: np.random.Generator, tex: Texture, seg: StripSegment) -> None:
    """A facade with a plinth, window grid (some lit), shop windows at street level and a darker roof edge."""
    y, z, res = seg.y, seg.z, tex.res
    height = rng.uniform(6.0, min(22.0, float(y[0, 0])))
    base = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))] * rng.uniform(0.8, 1.2)
    grain = fractal_noise(rng, *seg.shape, 3.0 / res, octaves=3)[..., None]
    body = (y < height) & np.ones_like(z, bool)
    colour = np.clip(base * (0.8 + 0.4 * grain), 0, 1)
    tex.paint(body, colour, L.BUILDING, region=seg.region)
    tex.paint(body & (y > height - 0.5), colour * 0.6, L.BUILDING, region=seg.region)
    tex.paint(body & (y < 0.6), colour * 0.7, L.BUILDING, region=seg.region)
    floor_h, bay = rng.uniform(2.8, 3.4), rng.uniform(2.2, 3.5)
    win_w, win_h = bay * rng.uniform(0.35, 0.55), floor_h * rng.uniform(0.4, 0.55)
    in_bay = (z % bay) - (bay - win_w) / 2
    in_floor = (y % floor_h) - floor_h * 0.35
    storeys = (y > 3.5) & (y < height - 1.0)
    window = (in_bay > 0) & (in_bay < win_w) & (in_floor > 0) & (in_floor < win_h) & storeys
    frame = (in_bay > -0.1) & (in_bay < win_w + 0.1) & (in_floor > -0.1) & (in_floor < win_h + 0.1)
    tex.paint(frame & ~window & storeys, f32([0.8, 0.8, 0.78]), L.BUILDING, region=seg.region)
    lit = rng.random((int(height / floor_h) + 2, int(seg.shape[1] * res / bay) + 2)) < 0.4
    lit_map = lit[(y / floor_h).astype(int) % lit.shape[0], (z / bay).astype(int) % lit.shape[1]]
    glass = np.where(lit_map[..., None], f32([0.8, 0.7, 0.45]), f32([0.05, 0.07, 0.09]) * (1 + grain))
    tex.paint(window, glass, L.BUILDING, emission=lit_map.astype(np.float32) * 0.6, region=seg.region)
    if rng.random() < 0.7:
        shop = (y > 0.6) & (y < 3.0) & ((z % 6.0) > 1.0) & ((z % 6.0) < 5.2)
        tex.paint(shop, f32([0.1, 0.12, 0.14]) * (1 + grain), L.BUILDING, emission=0.3, region=seg.region)


def paint_tree_row(rng: np.random.Generator, tex: Texture, seg: StripSegment) -> None:
    """Overlapping tree crowns and trunks, as seen from the street (park, tunnel hill)."""
    y, z = seg.y, seg.z
    leaves = fractal_noise(rng, *seg.shape, 0.8 / tex.res, octaves=3)
    crowns = np.zeros(seg.shape, np.float32)
    for zc in np.arange(rng.uniform(0, 3), float(z[0, -1]), rng.uniform(3.0, 5.0)):
        radius, centre_h = rng.uniform(2.5, 4.5), rng.uniform(5.0, min(11.0, float(y[0, 0]) - 4.5))
        crowns = np.maximum(crowns, 1.0 - ((z - zc) ** 2 + (y - centre_h) ** 2) / radius**2)
        trunk = (np.abs(z - zc) < 0.2) & (y < centre_h)
        tex.paint(trunk, f32([0.12, 0.09, 0.06]), L.VEGETATION, region=seg.region)
    crown = crowns + 0.25 * (leaves - 0.5) > 0.0
    green = np.stack([0.05 + 0.08 * leaves, 0.12 + 0.15 * leaves, 0.03 + 0.05 * leaves], -1)
    tex.paint(crown, green, L.VEGETATION, region=seg.region)


def paint_fence(rng: np.random.Generator, tex: Texture, seg: StripSegment) -> None:
    """Metal bar fence with posts and rails; gaps between bars stay transparent."""
    y, z = seg.y, seg.z
    height, spacing = rng.uniform(1.0, 2.0), rng.uniform(0.12, 0.25)
    colour = f32([0.2, 0.22, 0.2]) if rng.random() < 0.5 else f32([0.45, 0.4, 0.35])
    bars = (z % spacing) < 0.05
    posts = (z % 2.5) < 0.1
    rails = (np.abs(y - 0.15) < 0.05) | (np.abs(y - height + 0.05) < 0.05)
    tex.paint((bars | posts | rails) & (y < height), colour, L.FENCE, region=seg.region)


def paint_wall(rng: np.random.Generator, tex: Texture, seg: StripSegment, height: float | None = None) -> None:
    """Concrete or brick wall with stains; `height` defaults to a random low garden wall."""
    y, z = seg.y, seg.z
    height = rng.uniform(0.8, 2.5) if height is None else height
    grain = fractal_noise(rng, *seg.shape, 1.0 / tex.res, octaves=3)[..., None]
    if rng.random() < 0.5:  # brick courses
        course = np.floor(y / 0.25)
        mortar = ((y % 0.25) < 0.03) | (((z + 0.25 * (course % 2)) % 0.5) < 0.03)
        colour = np.where(mortar[..., None], f32([0.5, 0.48, 0.45]), f32([0.42, 0.2, 0.14]))
    else:  # concrete panels
        seams = (z % 3.0) < 0.04
        colour = np.where(seams[..., None], f32([0.2, 0.2, 0.2]), f32([0.45, 0.44, 0.42]))
    tex.paint((y < height) & np.ones_like(z, bool), colour * (0.75 + 0.5 * grain), L.WALL, region=seg.region)


def paint_hedge(rng: np.random.Generator, tex: Texture, seg: StripSegment) -> None:
    """A trimmed hedge with a ragged top and leafy texture."""
    leaves = fractal_noise(rng, *seg.shape, 0.3 / tex.res, octaves=3)
    top = rng.uniform(0.8, 1.6) + 0.3 * (fractal_noise(rng, 1, seg.shape[1], 1.0 / tex.res, octaves=2) - 0.5)
    green = np.stack([0.04 + 0.06 * leaves, 0.1 + 0.14 * leaves, 0.03 + 0.04 * leaves], -1)
    tex.paint(seg.y < top, green, L.VEGETATION, region=seg.region)


def paint_tunnel_wall(tex: Texture, seg: StripSegment, height: np.ndarray) -> None:
    """Tiled tunnel wall up to `height` (1, w) metres, with a dark base stripe and lamps near the top; where the
    wall is lower than the strip (approach ramps) a 1 m railing (fence) runs along its top."""
    y, z = seg.y, seg.z
    railing = (y >= height) & (y < height + 1.0) & (height < float(y[0, 0]) - 1.0)
    railing &= ((z % 0.15) < 0.04) | (y > height + 0.92)
    tex.paint(railing, f32([0.25, 0.27, 0.25]), L.FENCE, region=seg.region)
    tiles = ((z % 0.6) < 0.03) | ((y % 0.3) < 0.03)
    colour = np.where(tiles[..., None], f32([0.3, 0.3, 0.3]), f32([0.6, 0.6, 0.55]))
    colour = np.where((y < 1.0)[..., None], f32([0.12, 0.12, 0.12]), colour)
    tex.paint(y < height, colour, L.WALL, region=seg.region)
    lamps = (np.abs(y - (height - 0.4)) < 0.12) & ((z % 5.0) < 1.2)
    tex.paint(lamps, f32([0.95, 0.85, 0.6]), L.WALL, emission=1.0, region=seg.region)


def tunnel_ceiling(length_m: float, half_width: float, res: float) -> Texture:
    """Ceiling slab (rows = Z from far to near, columns = X) with two lamp lines; labelled building."""
    rows, cols = int(length_m / res), int(2 * half_width / res)
    tex = Texture.blank(rows, cols, res)
    x = (np.arange(cols, dtype=np.float32)[None, :] + 0.5) * res - half_width
    z = length_m - (np.arange(rows, dtype=np.float32)[:, None] + 0.5) * res
    tex.paint(np.ones((rows, cols), bool), f32([0.25, 0.25, 0.24]), L.BUILDING)
    lamps = (np.abs(np.abs(x) - 3.0) < 0.15) & ((z % 4.0) < 1.5)
    tex.paint(lamps, f32([0.95, 0.85, 0.6]), L.BUILDING, emission=1.0)
    return tex


# ----------------------------------------------------------------------------------------------------------
# Sprites: upright billboards. res is metres per texel; the bottom row stands at the sprite's base height.


def _sprite_canvas(width_m: float, height_m: float, res: float) -> tuple[Texture, np.ndarray, np.ndarray]:
    """Blank sprite and its texel-centre coordinates: x (1, w) metres from the centre, y (h, 1) metres up."""
    rows, cols = max(round(height_m / res), 2), max(round(width_m / res), 2)
    tex = Texture.blank(rows, cols, res)
    x = (np.arange(cols, dtype=np.float32)[None, :] + 0.5) * res - width_m / 2
    y = height_m - (np.arange(rows, dtype=np.float32)[:, None] + 0.5) * res
    return tex, x, y


def street_lamp(side: int, res: float = 0.04) -> Texture:
    """Pole with an arm over the road (`side` = -1 left of the road, +1 right) and a lamp head (emissive)."""
    tex, x, y = _sprite_canvas(3.0, 7.5, res)
    arm_dir = -side  # the arm points toward the road centre
    pole = (np.abs(x) < 0.08) & (y < 7.2)
    arm = (np.abs(y - 7.1) < 0.05) & (x * arm_dir > 0) & (x * arm_dir < 1.4)
    tex.paint(pole | arm, f32([0.3, 0.3, 0.32]), L.POLE)
    head = (np.abs(y - 6.95) < 0.1) & (np.abs(x * arm_dir - 1.2) < 0.25)
    tex.paint(head, f32([0.95, 0.9, 0.75]), L.POLE, emission=1.0)
    return tex


def traffic_sign(rng: np.random.Generator, res: float = 0.02) -> Texture:
    """Sign post with a round, triangular or square plate (plate: traffic sign, post: pole)."""
    tex, x, y = _sprite_canvas(0.8, 2.9, res)
    tex.paint((np.abs(x) < 0.035) & (y < 2.3), f32([0.5, 0.5, 0.5]), L.POLE)
    cy, r = 2.5, 0.33
    dx, dy = x, y - cy
    kind = rng.integers(3)
    if kind == 0:  # prohibition: red ring, white disc, black numeral bars
        dist = np.sqrt(dx**2 + dy**2)
        tex.paint(dist < r, f32([0.8, 0.05, 0.05]), L.TRAFFIC_SIGN)
        tex.paint(dist < r * 0.75, f32([0.85, 0.85, 0.85]), L.TRAFFIC_SIGN)
        digits = (np.abs(np.abs(dx) - 0.08) < 0.03) & (np.abs(dy) < 0.13)  # two bold numeral strokes
        tex.paint(digits, f32([0.05, 0.05, 0.05]), L.TRAFFIC_SIGN)
    elif kind == 1:  # warning triangle
        inside = (dy > -r) & (np.abs(dx) < (r - dy) * 0.58)
        tex.paint(inside, f32([0.8, 0.05, 0.05]), L.TRAFFIC_SIGN)
        tex.paint((dy > -r + 0.07) & (np.abs(dx) < (r - 0.1 - dy) * 0.58), f32([0.85, 0.85, 0.8]), L.TRAFFIC_SIGN)
    else:  # blue information square with a white arrow
        tex.paint((np.abs(dx) < r) & (np.abs(dy) < r), f32([0.05, 0.2, 0.6]), L.TRAFFIC_SIGN)
        arrow = ((np.abs(dx) < 0.06) & (np.abs(dy) < 0.2)) | ((dy > 0.05) & (np.abs(dx) < 0.2 - (dy - 0.05)))
        tex.paint(arrow & (dy < 0.25), f32([0.9, 0.9, 0.9]), L.TRAFFIC_SIGN)
    return tex


def traffic_light(rng: np.random.Generator, res: float = 0.02) -> Texture:
    """Post with a three-lamp head; one lamp lit (emissive). Head and lamps: traffic sign (Cityscapes light)."""
    tex, x, y = _sprite_canvas(0.5, 3.6, res)
    tex.paint((np.abs(x) < 0.05) & (y < 2.7), f32([0.3, 0.3, 0.3]), L.POLE)
    box = (np.abs(x) < 0.17) & (y > 2.6) & (y < 3.55)
    tex.paint(box, f32([0.04, 0.04, 0.04]), L.TRAFFIC_SIGN)
    on = rng.integers(3)
    for k, colour in enumerate(((0.9, 0.05, 0.05), (0.9, 0.6, 0.05), (0.1, 0.8, 0.3))):
        lamp = (x**2 + (y - (3.4 - 0.3 * k)) ** 2) < 0.1**2
        lit = k == on
        tex.paint(lamp, f32(colour) * (1.0 if lit else 0.15), L.TRAFFIC_SIGN, emission=1.0 if lit else 0.0)
    return tex


def tree(rng: np.random.Generator, res: float = 0.05) -> Texture:
    """Street tree: trunk and a leafy crown with a ragged outline; all vegetation."""
    crown_w, crown_h, trunk_h = rng.uniform(2.5, 4.5), rng.uniform(3.0, 5.0), rng.uniform(1.8, 2.8)
    tex, x, y = _sprite_canvas(crown_w + 0.4, trunk_h + crown_h, res)
    tex.paint((np.abs(x) < 0.14) & (y < trunk_h + 0.8), f32([0.13, 0.1, 0.07]), L.VEGETATION)
    rows, cols = tex.label.shape
    leaves = fractal_noise(rng, rows, cols, 0.5 / res, octaves=3)
    ellipse = (x / (crown_w / 2)) ** 2 + ((y - trunk_h - crown_h / 2) / (crown_h / 2)) ** 2
    crown = ellipse + 0.6 * (leaves - 0.5) < 0.85
    shade = 0.6 + 0.4 * np.clip(1.0 - ellipse, 0, 1)
    green = np.stack([0.05 + 0.1 * leaves, 0.12 + 0.18 * leaves, 0.03 + 0.05 * leaves], -1) * shade[..., None]
    tex.paint(crown, green, L.VEGETATION)
    return tex


CAR_COLOURS = f32(
    [[0.6, 0.05, 0.05], [0.05, 0.1, 0.35], [0.75, 0.75, 0.75], [0.04, 0.04, 0.04], [0.35, 0.35, 0.37], [0.6, 0.55, 0.1]]
)


def car(rng: np.random.Generator, front: bool, res: float = 0.03) -> Texture:
    """Car seen from behind (`front=False`: red tail lights) or from the front (white headlights)."""
    width, height = rng.uniform(1.7, 1.95), rng.uniform(1.35, 1.6)
    tex, x, y = _sprite_canvas(width, height, res)
    body_colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
    wheels = (np.abs(np.abs(x) - width * 0.36) < 0.13) & (y < 0.35)
    tex.paint(wheels, f32([0.02, 0.02, 0.02]), L.CAR)
    body = (np.abs(x) < width / 2) & (y > 0.18) & (y < height * 0.6)
    cabin_half = width / 2 - 0.2 - (y - height * 0.6) * 0.35
    cabin = (y >= height * 0.6) & (y < height) & (np.abs(x) < cabin_half)
    tex.paint(body | cabin, body_colour, L.CAR)
    glass = (y > height * 0.64) & (y < height - 0.07) & (np.abs(x) < cabin_half - 0.08)
    tex.paint(glass, f32([0.04, 0.05, 0.06]), L.CAR)
    tex.paint(body & (y < 0.35), f32([0.05, 0.05, 0.05]), L.CAR)  # bumper
    tex.paint((np.abs(x) < 0.26) & (np.abs(y - 0.45) < 0.06), f32([0.85, 0.85, 0.85]), L.CAR)  # plate
    light_colour = f32([0.95, 0.95, 0.9]) if front else f32([0.8, 0.04, 0.03])
    lights = (np.abs(np.abs(x) - width * 0.38) < 0.14) & (np.abs(y - height * 0.5) < 0.07)
    tex.paint(lights, light_colour, L.CAR, emission=1.0)
    return tex


def pedestrian_frames(rng: np.random.Generator, phases: int = 8, res: float = 0.02) -> list[Texture]:
    """Walk cycle of one person (clothes colours per person): `phases` sprites, legs and arms swinging."""
    height = rng.uniform(1.55, 1.9)
    skin = f32([0.55, 0.4, 0.3]) * rng.uniform(0.4, 1.1)
    shirt = rng.random(3).astype(np.float32) * 0.7 + 0.05
    trousers = rng.random(3).astype(np.float32) * 0.4 + 0.03
    frames = []
    for k in range(phases):
        tex, x, y = _sprite_canvas(0.7, height, res)
        swing = np.sin(2 * np.pi * k / phases)
        hip, shoulder = height * 0.52, height * 0.82
        for sign in (-1, 1):
            # Leg: a slanted bar from the hip to the foot, foot offset by the swing.
            foot_x = sign * 0.18 * swing
            t = np.clip(1.0 - y / hip, 0, 1)
            leg = (np.abs(x - (sign * 0.06 * (1 - t) + foot_x * t)) < 0.065) & (y < hip)
            tex.paint(leg, trousers, L.PERSON)
            hand_x = -sign * 0.15 * swing + sign * 0.2
            ta = np.clip((shoulder - y) / (shoulder - hip * 0.95), 0, 1)
            arm = (np.abs(x - (sign * 0.19 * (1 - ta) + hand_x * ta)) < 0.045) & (y < shoulder) & (y > hip * 0.95)
            tex.paint(arm, skin if rng.random() < 0.3 else shirt * 0.8, L.PERSON)
        torso = (np.abs(x) < 0.18 - 0.04 * (y < hip + 0.1)) & (y >= hip - 0.05) & (y < shoulder + 0.05)
        tex.paint(torso, shirt, L.PERSON)
        head = (x**2 + ((y - height + 0.12) / 1.2) ** 2) < 0.1**2
        tex.paint(head, skin, L.PERSON)
        frames.append(tex)
    return frames


def tunnel_portal(width_m: float, height_m: float, res: float = 0.05) -> Texture:
    """Concrete face above a tunnel mouth (wall, dark lower edge) topped by a 1 m metal railing (fence)."""
    tex, x, y = _sprite_canvas(width_m, height_m + 1.0, res)
    face = y < height_m
    colour = np.where(y < 0.5, 0.2, 0.45).astype(np.float32)
    tex.paint(face & np.ones_like(x, bool), np.broadcast_to(colour[..., None], (*tex.label.shape, 3)), L.WALL)
    railing = ~face & (((x % 0.15) < 0.04) | ((x % 2.0) < 0.08) | (y > height_m + 0.92))
    tex.paint(railing, f32([0.25, 0.27, 0.25]), L.FENCE)
    return tex
