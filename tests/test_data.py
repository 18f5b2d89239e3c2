"""MVTec layout reading, image modes, masks and the errors on bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from somad import data
from somad.errors import DataError


def _category(root, n_train=2, defect_masks=True):
    cat = root / "widget"
    (cat / "train" / "good").mkdir(parents=True)
    (cat / "test" / "good").mkdir(parents=True)
    (cat / "test" / "dent").mkdir(parents=True)
    (cat / "ground_truth" / "dent").mkdir(parents=True)
    for i in range(n_train):
        Image.new("RGB", (40, 30), (i * 10, 0, 0)).save(cat / "train" / "good" / f"{i:03d}.png")
    Image.new("RGB", (40, 30)).save(cat / "test" / "good" / "000.png")
    Image.new("RGB", (40, 30)).save(cat / "test" / "dent" / "000.jpg")
    if defect_masks:
        Image.new("L", (40, 30), 255).save(cat / "ground_truth" / "dent" / "000_mask.png")
    return cat


def test_layout_discovery_and_samples(tmp_path):
    _category(tmp_path)
    (tmp_path / "not_a_category").mkdir()
    assert data.list_categories(tmp_path) == ["widget"]
    train = data.train_samples(tmp_path, "widget")
    assert [s.path.name for s in train] == ["000.png", "001.png"]
    test = data.test_samples(tmp_path, "widget")
    assert [(s.defect, s.label) for s in test] == [("good", 0), ("dent", 1)]
    assert test[1].mask_path.name == "000_mask.png"


@pytest.mark.parametrize("setup, match", [
    (lambda r: None, "does not exist"),
    (lambda r: r.mkdir(), "category 'widget' not found"),
    (lambda r: (r / "widget").mkdir(parents=True), "not in MVTec layout"),
])
def test_bad_roots_name_the_problem(tmp_path, setup, match):
    root = tmp_path / "root"
    setup(root)
    with pytest.raises(DataError, match=match):
        data.train_samples(root, "widget")


def test_empty_train_good(tmp_path):
    cat = _category(tmp_path)
    for p in (cat / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"train/good holds no image|holds no image"):
        data.train_samples(tmp_path, "widget")


def test_defect_without_mask_is_named(tmp_path):
    _category(tmp_path, defect_masks=False)
    with pytest.raises(DataError, match=r"dent/000.jpg has no mask"):
        data.test_samples(tmp_path, "widget")


def test_truncated_and_non_image_files_are_named(tmp_path):
    good = tmp_path / "ok.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match="cut.png"):
        data.load_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match="notes.png"):
        data.load_image(text)
    with pytest.raises(DataError, match="does not exist"):
        data.load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / f"img.{'tif' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        arr = np.full((30, 50), 65535, dtype=np.uint16)
        arr[:, :25] = 257 * 100
        Image.fromarray(arr).save(path)
    else:
        Image.new(mode, (50, 30)).save(path)
    rgb = data.load_image(path, image_size=32, rule=data.intensity_rule([path]))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    if mode == "I;16":  # scaled by bit depth, not per-image min-max
        assert rgb[:, 0, 0].tolist() == [100] * 32
        assert rgb[:, -1, 0].tolist() == [255] * 32


def test_rgba_composited_on_black(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (8, 8), (200, 100, 50, 0)).save(path)
    assert data.load_image(path).max() == 0


def test_mask_values_and_same_geometry_as_image(tmp_path):
    img = np.zeros((60, 120, 3), np.uint8)
    img[:, 90:] = 255  # right quarter bright
    mask = np.zeros((60, 120), np.uint8)
    mask[:, 90:] = 253  # any value > 0 is anomalous
    Image.fromarray(img).save(tmp_path / "x.png")
    Image.fromarray(mask).save(tmp_path / "x_mask.png")
    s = data.Sample(tmp_path / "x.png", "dent", tmp_path / "x_mask.png")
    rgb, m = data.load_sample(s, 64)
    assert m.shape == (64, 64) and m.dtype == bool
    # the bright columns of the image and the mask columns coincide after the same resize
    assert np.array_equal(m[0], rgb[0, :, 0] > 127)
    assert m[:, 48:].all() and not m[:, :47].any()


def test_mask_of_other_size_is_resized_with_warning(tmp_path):
    Image.new("RGB", (100, 50)).save(tmp_path / "x.png")
    Image.new("L", (50, 25), 255).save(tmp_path / "x_mask.png")
    s = data.Sample(tmp_path / "x.png", "dent", tmp_path / "x_mask.png")
    with pytest.warns(UserWarning, match="x_mask.png"):
        _, m = data.load_sample(s, 32)
    assert m.all()
    Image.new("L", (91, 37), 255).save(tmp_path / "x_mask.png")  # another frame: refused, named
    with pytest.raises(DataError, match=r"x_mask.png is 91x37 but its image is 100x50 .*another aspect ratio"):
        data.load_sample(s, 32)
    Image.new("L", (33, 17), 255).save(tmp_path / "x_mask.png")  # a third of the scale, rounded: resized
    with pytest.warns(UserWarning, match="x_mask.png"):
        assert data.load_sample(s, 32)[1].all()


def test_load_split_shapes(tmp_path):
    _category(tmp_path, n_train=3)
    images, masks = data.load_split(data.test_samples(tmp_path, "widget"), 48)
    assert images.shape == (2, 48, 48, 3) and masks.shape == (2, 48, 48)
    assert not masks[0].any() and masks[1].all()


def test_demo_data_is_deterministic_and_complete(tmp_path):
    from somad.demo import DEFECTS, generate

    a = generate(tmp_path / "a", seed=3, n_train=3, n_good=2, n_defect=4)
    b = generate(tmp_path / "b", seed=3, n_train=3, n_good=2, n_defect=4)
    assert data.list_categories(a) == ["tiles", "washers"]
    for cat in ("tiles", "washers"):
        test = data.test_samples(a, cat)
        assert sorted({s.defect for s in test}) == sorted(("good",) + DEFECTS)
        for s in test:
            if s.mask_path:
                assert (np.asarray(Image.open(s.mask_path)) > 0).any(), s.mask_path
        pa = a / cat / "test" / "hole" / "000.png"
        pb = b / cat / "test" / "hole" / "000.png"
        assert pa.read_bytes() == pb.read_bytes()
    shutil.rmtree(b)
    c = generate(tmp_path / "a", seed=4, n_train=3, n_good=2, n_defect=4)  # exists: kept, not overwritten
    assert (c / "tiles" / "test" / "hole" / "000.png").read_bytes() == (a / "tiles" / "test" / "hole" / "000.png").read_bytes()


def test_eight_bit_rgb_is_shown_as_it_is_under_every_rule():
    """8-bit RGB samples skip the float conversion: the same array, equal to what the float path
    (divide by white, clip, times 255, round) gives for every value, whatever the category's rule."""
    arr = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    float_path = np.rint(np.clip(arr.astype(np.float32) / 255, 0, 1) * 255).astype(np.uint8)
    for rule in (data.EIGHT_BIT, data.IntensityRule("integer", 4095.0), data.IntensityRule("float", 1.0)):
        out = rule.to_rgb(arr)
        assert out is arr and out.dtype == np.uint8
        np.testing.assert_array_equal(out, float_path)
    gray = rule.to_rgb(np.arange(256, dtype=np.uint8).reshape(16, 16))  # other layouts take the float path
    assert gray.shape == (16, 16, 3) and gray[15, 15].tolist() == [255, 255, 255]
