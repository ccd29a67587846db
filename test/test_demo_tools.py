"""tools/demo_model.py helpers that carry logic of their own (the recipes themselves run in test_train_* and on the
GPU)."""

import importlib.util
from pathlib import Path

import numpy as np

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "demo_model.py"
_SPEC = importlib.util.spec_from_file_location("demo_model", _TOOL)
assert _SPEC is not None and _SPEC.loader is not None
demo_model = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(demo_model)


def test_block_mode_oracle_keeps_cell_sized_regions_and_loses_thin_ones():
    label = np.zeros((8, 12), np.uint8)
    label[0:4, 4:8] = 3  # one whole 4x4 cell
    label[:, 10] = 4  # a one-pixel pole
    label[4:8, 0:4] = 255  # an unlabeled cell stays unlabeled
    oracle = demo_model.block_mode_oracle(label, stride=4, num_classes=11)
    assert oracle.shape == label.shape and oracle.dtype == np.uint8
    np.testing.assert_array_equal(oracle[0:4, 4:8], 3)
    assert not (oracle == 4).any()  # 4 of 16 pixels: the cell keeps its majority class
    np.testing.assert_array_equal(oracle[4:8, 0:4], 255)
    np.testing.assert_array_equal(oracle[:, 8:12], 0)


def test_block_mode_oracle_pads_a_ragged_border_with_unlabeled():
    label = np.full((6, 6), 2, np.uint8)
    oracle = demo_model.block_mode_oracle(label, stride=4, num_classes=11)
    np.testing.assert_array_equal(oracle[:4, :4], 2)
    assert (oracle[4:, :] == 255).all() and (oracle[:, 4:] == 255).all()
