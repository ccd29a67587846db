"""Synthetic street scenes: determinism, label coverage and ids, DDD17 mapping, ego-motion geometry."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg_core.synthetic import labels as L
from mambaseg_core.synthetic.scene import Scene, SceneConfig


@pytest.fixture(scope="module")
def tunnel_scene() -> Scene:
    return Scene(SceneConfig(height=96, width=128, seed=8, duration_s=6.0, lighting="tunnel"))


def test_same_seed_same_render_other_seed_differs():
    config = SceneConfig(height=48, width=64, seed=3, duration_s=2.0)
    a, b = Scene(config).render(1.25), Scene(config).render(1.25)
    np.testing.assert_array_equal(a.radiance, b.radiance)
    np.testing.assert_array_equal(a.label, b.label)
    c = Scene(SceneConfig(height=48, width=64, seed=4, duration_s=2.0)).render(1.25)
    assert not np.array_equal(a.label, c.label)
    assert not np.array_equal(a.radiance, c.radiance)


def test_all_eleven_classes_occur_and_ids_are_valid(tunnel_scene):
    seen = np.zeros(256, bool)
    for t in np.linspace(0.0, 6.0, 13):
        view = tunnel_scene.render(float(t))
        assert view.label.dtype == np.uint8 and view.label.shape == (96, 128)
        assert view.radiance.dtype == np.float32 and view.radiance.shape == (96, 128, 3)
        assert np.all(np.isfinite(view.radiance)) and view.radiance.min() >= 0
        seen[np.unique(view.label)] = True
    print("classes seen", np.flatnonzero(seen))
    assert np.array_equal(np.flatnonzero(seen), np.arange(L.NUM_CLASSES))


def test_ddd17_mapping_follows_spec():
    label11 = np.arange(11, dtype=np.uint8).reshape(1, 11)
    expected = [1, 1, 1, 4, 2, 0, 0, 3, 5, 1, 2]  # sky→bg, building→bg, fence→bg, person→human, pole→object, ...
    np.testing.assert_array_equal(L.to_ddd17(label11)[0], expected)
    assert L.to_ddd17(np.array([255], np.uint8))[0] == 255
    with pytest.raises(TypeError):
        L.to_ddd17(np.zeros(3, np.int64))


def test_perspective_ground_depth_and_forward_motion():
    # Pinhole over a flat road: a ground pixel `rows_below` under the horizon is at depth f·h / rows_below.
    # (Forward motion is then rendered right if the ground under a fixed pixel stays equally far while driving.)
    scene = Scene(SceneConfig(height=96, width=128, seed=2, duration_s=2.0, lighting="day", yaw_rad=0.0))
    view = scene.render(0.0)
    cfg = scene.config
    rows = np.arange(cfg.height)[:, None] * np.ones((1, cfg.width))
    ground = (view.label == L.ROAD) & (rows > scene.cy + 5)
    expected = scene.focal * scene.ego_pose(0.0)[0][1] / (rows[ground] - scene.cy)
    ratio = view.depth[ground] / expected
    print("ground depth / pinhole depth: min, max", ratio.min(), ratio.max())
    np.testing.assert_allclose(view.depth[ground], expected, rtol=0.05)
    later = scene.render(0.5)
    mid = int(scene.cy + 15)
    assert later.depth[mid, cfg.width // 2] == pytest.approx(view.depth[mid, cfg.width // 2], rel=0.05)


def test_tunnel_is_darker_than_outside(tunnel_scene):
    inside_times = [t for t in np.linspace(0, 6, 61) if tunnel_scene.in_tunnel(float(t))]
    assert inside_times and not tunnel_scene.in_tunnel(5.5)
    inside = tunnel_scene.render(float(np.median(inside_times)))
    outside = tunnel_scene.render(5.5)
    near_road = np.s_[-10:]  # the bottom rows: road a few metres ahead
    dark, bright = np.median(inside.radiance[near_road]), np.median(outside.radiance[near_road])
    print("median radiance of the near road inside / outside", dark, bright)
    assert dark < 0.05 * bright


def test_config_validation():
    with pytest.raises(ValueError, match="lighting"):
        SceneConfig(lighting="disco")
    with pytest.raises(ValueError, match="at least 16x16"):
        SceneConfig(height=8)


def test_mip_atlas_fits_levels_taller_than_level_zero():
    # Regression: a 5-texel-high texture has pyramid levels 3 + 2 rows, stacked beside level 0 (seed 31 tunnel).
    from mambaseg_core.synthetic.textures import MipTexture, Texture

    albedo = np.random.default_rng(0).random((5, 40, 4), dtype=np.float32)
    albedo[..., 3] = 1.0
    mip = MipTexture(Texture(albedo=albedo, label=np.ones((5, 40), np.uint8), res=0.1))
    assert mip.atlas.shape[0] >= int(mip.boxes[1:, 3].sum())
    np.testing.assert_array_equal(mip.atlas[:5, :40], albedo)
    scene = Scene(SceneConfig(height=32, width=48, seed=31, lighting="tunnel", duration_s=0.5))
    assert scene.render(0.1).label.shape == (32, 48)
