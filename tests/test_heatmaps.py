"""The one colour scale of anomaly maps (somad.viz.HeatScale): defect-free scores blue, the pixel
threshold at a fixed colour, the shape of a defect visible inside a large hot area; the same scale
in the dashboard, ``predict`` overlays and the report."""
from __future__ import annotations

import numpy as np
from PIL import Image

from somad import pipeline, viz


def _blue(rgb) -> bool:
    r, g, b = (int(v) for v in rgb)
    return b > r + 60 and b >= g


def test_scale_keeps_normal_blue_marks_the_threshold_and_resolves_hot_areas():
    scale = viz.heat_scale((6.0, 20.0), {"pixel_f1_threshold": 58.0})
    assert (scale.lo, scale.mid, scale.knee) == (6.0, 20.0, 58.0) and scale.top == 58.0 * 10 ** viz.HOT_DECADES
    values = np.array([[6.0, 15.0, 20.0, 57.9, 58.0, 70.0, 90.0, 110.0, 1e6]])
    rgb = scale.colorize(values)[0]
    assert all(_blue(c) for c in rgb[:4])  # everything under the pixel threshold is a blue
    yellow = np.array(viz.HEAT_COLORS[3][1]) * 255
    assert np.abs(rgb[4].astype(int) - yellow).max() <= 2  # yellow at the knee (a 1024-step colour map)
    pos = scale.normalise(values)[0]
    assert np.all(np.diff(pos) > 0)
    assert pos[2] == viz.TRAIN_TOP_AT and pos[4] == 0.5 and pos[-1] == 1.0
    # 70, 90 and 110 (bottle-like defect scores inside one hot area) get clearly different colours
    hot = rgb[5:8].astype(int)
    assert min(np.abs(hot[i] - hot[j]).sum() for i, j in ((0, 1), (1, 2), (0, 2))) > 60
    # without an evaluation (predict) the knee is the training top and the middle piece is empty
    plain = viz.heat_scale((6.0, 20.0))
    assert plain.mid == plain.knee == 20.0 and plain.normalise(np.array([20.0]))[0] == 0.5


def test_predict_overlay_uses_the_same_scale(tmp_path, tiny_model):
    image = np.full((40, 60, 3), 128, np.uint8)
    amap = np.linspace(0, 3 * tiny_model.pixel_range_[1], 64 * 64, dtype=np.float32).reshape(64, 64)
    out = pipeline.write_overlay(tiny_model, image, amap, tmp_path / "o.png")
    got = np.asarray(Image.open(out))
    from somad.data import resize_to

    want = viz.overlay(image, resize_to(amap, (40, 60)), viz.heat_scale(tiny_model.pixel_range_))
    inside = got[5:-5, 5:-5].astype(int) - want[5:-5, 5:-5].astype(int)  # the red outline aside
    assert np.mean(np.abs(inside).sum(-1) == 0) > 0.8


def test_pictures_go_back_to_their_image_aspect_ratio(tmp_path):
    """Magnetic tile is not square: its test pictures (report, evaluate figures, dashboard) are drawn
    at the file's own aspect ratio, masks staying masks."""
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(path)
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    img, m, amap = viz.as_shown(path, np.zeros((8, 8, 3), np.uint8), mask, np.ones((8, 8), np.float32), side=100)
    assert img.shape == (60, 100, 3) and m.shape == amap.shape == (60, 100)
    assert m.dtype == bool and m[:, :45].all() and not m[:, 55:].any()
    assert viz.as_shown(tmp_path / "missing.png", mask)[0] is mask  # unreadable: shown as it is
