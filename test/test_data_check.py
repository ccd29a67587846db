"""check-data names every problem of a deliberately broken fixture; fixtures pass; the CLIs run."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from mambaseg_core.cli.check_data import main as check_main
from mambaseg_core.cli.make_fixtures import main as make_fixtures_main
from mambaseg_core.data.check import check_ddd17, check_dsec
from mambaseg_core.data.fixtures import DSEC_T_OFFSET_US

SEQUENCES = {
    "train": ["zurich_city_00_a", "zurich_city_01_a", "zurich_city_02_a", "zurich_city_04_a"],
    "test": ["zurich_city_13_a"],
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fixtures")
    for kind in ("dsec", "ddd17"):
        assert make_fixtures_main([str(base / kind), "--kind", kind]) == 0
    return {"dsec": base / "dsec", "ddd17": base / "ddd17"}


def test_fixture_files_have_the_official_formats(fixtures):
    h5_path = fixtures["dsec"] / "train/zurich_city_00_a/events/left/events.h5"
    with h5py.File(h5_path, "r") as h5:
        filters = [h5[f"events/{k}"].id.get_create_plist().get_filter(0)[0] for k in "ptxy"]
        assert filters == [32001] * 4  # Blosc
        assert h5["events/t"].dtype == np.uint32 and h5["ms_to_idx"].dtype == np.uint64
        assert h5["t_offset"].shape == () and int(h5["t_offset"][()]) == DSEC_T_OFFSET_US
        t = h5["events/t"][:]
        ms_to_idx = h5["ms_to_idx"][:]
        np.testing.assert_array_equal(ms_to_idx, np.searchsorted(t, 1000 * np.arange(len(ms_to_idx)), "left"))
    dir0 = fixtures["ddd17"] / "dir0"
    n = (dir0 / "events.dat.t").stat().st_size // 8
    assert (dir0 / "events.dat.xyp").stat().st_size == 6 * n
    assert np.load(dir0 / "index/index_50ms.npy").shape == (8, 3)


def test_clean_fixtures_have_no_problems(fixtures, capsys):
    assert check_main([str(fixtures["dsec"])]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "train/zurich_city_00_a: 9 labels, 2 samples, 40000 events" in out and "0 problem(s)" in out
    assert "label histogram (dsec11): background" in out
    assert check_main([str(fixtures["ddd17"]), "--kind", "ddd17"]) == 0
    out = capsys.readouterr().out
    assert "dir5 (unused): 1 masks" in out and "dir1 (test): 3 masks" in out and "label histogram (ddd17)" in out


def test_broken_dsec_root_reports_each_problem_by_file(tmp_path: Path, capsys):
    from mambaseg_core.data.events_h5 import write_dsec_events_h5
    from mambaseg_core.data.fixtures import write_dsec_fixture

    root = write_dsec_fixture(tmp_path / "dsec", n_labels=7, num_events=3000, sequences=SEQUENCES)
    (root / "train/zurich_city_00_a/images/left/ev_inf/000003.png").unlink()
    seq01 = root / "train/zurich_city_01_a"
    cv2.imwrite(str(seq01 / "semantic/11classes/data/000002.png"), np.full((440, 640), 42, np.uint8))
    cv2.imwrite(str(seq01 / "images/left/ev_inf/000004.png"), np.zeros((240, 320, 3), np.uint8))
    (root / "train/zurich_city_02_a/events/left/events.h5").write_bytes(b"\x89HDF\r\n truncated")
    events_04 = root / "train/zurich_city_04_a/events/left/events.h5"
    with h5py.File(events_04, "r") as h5:
        t, y, p = h5["events/t"][:], h5["events/y"][:], h5["events/p"][:]
    write_dsec_events_h5(events_04, t, np.full(len(t), 700), y, p, DSEC_T_OFFSET_US)  # x beyond 640
    seq13 = root / "test/zurich_city_13_a"
    times = np.loadtxt(seq13 / "semantic/timestamps.txt", dtype=np.int64)
    times[6] = DSEC_T_OFFSET_US  # no event before it
    (seq13 / "semantic/timestamps.txt").write_text("".join(f"{t}\n" for t in times))
    with h5py.File(seq13 / "events/left/rectify_map.h5", "w") as h5:
        h5["rectify_map"] = np.zeros((480, 640), np.float32)

    report = check_dsec(root)
    text = report.format()
    print(text)
    expected = [
        "zurich_city_00_a/images/left/ev_inf: 6 ev_inf images but 7 timestamps",
        "zurich_city_01_a/semantic/11classes/data/000002.png: label values [42] are not dsec11 ids",
        "zurich_city_01_a/images/left/ev_inf/000004.png: ev_inf image must be RGB 640x480, got RGB 320x240",
        "zurich_city_02_a/events/left/events.h5: cannot open as HDF5",
        "zurich_city_04_a/events/left/events.h5: events before label time 49599700137 µs lie outside the 640x480",
        "zurich_city_13_a/semantic/timestamps.txt: timestamps must be strictly increasing",
        "zurich_city_13_a/events/left/events.h5: no events before label time(s)",
        "zurich_city_13_a/events/left/rectify_map.h5: rectify_map must have shape (480, 640, 2), got (480, 640)",
    ]
    for fragment in expected:
        assert any(fragment in p for p in report.problems), fragment
    assert len(report.problems) == len(expected)
    assert check_main([str(root), "--kind", "dsec"]) == 1
    assert "8 problem(s)" in capsys.readouterr().out


def test_broken_ddd17_root_reports_each_problem_by_file(fixtures, tmp_path: Path):
    root = tmp_path / "ddd17"
    shutil.copytree(fixtures["ddd17"], root)
    xyp = root / "dir0/events.dat.xyp"
    xyp.write_bytes(xyp.read_bytes()[:-6])
    cv2.imwrite(str(root / "dir1/segmentation_masks/segmentation_00000003.png"), np.full((200, 346), 9, np.uint8))
    (root / "dir3/imgs/img_00000005.png").unlink()
    index_path = root / "dir4/index/index_50ms.npy"
    index = np.load(index_path)
    index[6, 2] = index[6, 1]  # frame 7: empty window
    np.save(index_path, index)
    shutil.rmtree(root / "dir7")

    report = check_ddd17(root)
    print(report.format())
    expected = [
        "needs at least 7 dir* folders for the official split",
        "dir0/events.dat.xyp: size",
        "dir1/segmentation_masks/segmentation_00000003.png: label values [9] are not ddd17 ids",
        "dir3/imgs/img_00000005.png: frame image not found",
        "dir4/segmentation_masks/segmentation_00000007.png: its 50 ms window",
    ]
    for fragment in expected:
        assert any(fragment in p for p in report.problems), fragment
    assert len(report.problems) == len(expected)
