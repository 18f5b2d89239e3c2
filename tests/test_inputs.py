"""Real-world inputs (issue 8): camera orientation, every pixel type, file-name rules, few-shot
thresholds, device errors, strict metrics JSON, impossible settings, non-square overlays.

Every input is built with numpy/Pillow/tifffile in ``tmp_path``.
"""
from __future__ import annotations

import io
import unicodedata

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from somad import data
from somad.errors import DataError


def _asymmetric(h: int = 40, w: int = 60) -> np.ndarray:
    """uint8 RGB (h, w, 3) with a bright top-left block, so every flip/rotation differs."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 4, : w // 3] = 250
    img[:, :, 1] = np.linspace(0, 120, w, dtype=np.uint8)[None, :]
    return img


def _with_orientation(arr: np.ndarray, code: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[data.ORIENTATION_TAG] = code
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


# ------------------------------------------------------------------ 1. orientation
@pytest.mark.parametrize("code", range(1, 9))
def test_orientation_is_applied_as_viewers_do(tmp_path, code):
    path = tmp_path / f"o{code}.png"
    path.write_bytes(_with_orientation(_asymmetric(), code, "PNG"))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = data.read_image(path)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert (got.shape[:2] == (60, 40)) == (code >= 5)  # codes 5-8 swap width and height


def test_rotated_jpeg_and_its_mask_drawn_as_displayed_agree(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :15] = 255  # left quarter as stored = top quarter once rotated 90 deg clockwise
    (tmp_path / "x.jpg").write_bytes(_with_orientation(stored, 6, "JPEG"))
    mask = np.zeros((60, 40), np.uint8)
    mask[:15, :] = 255  # drawn on the upright (displayed) picture, no EXIF
    Image.fromarray(mask).save(tmp_path / "x_mask.png")
    s = data.Sample(tmp_path / "x.jpg", "dent", tmp_path / "x_mask.png")
    rgb, m = data.load_sample(s, 32)
    bright = rgb[..., 0] > 127
    assert bright[:7].all() and not bright[9:].any()
    assert (bright == m).mean() > 0.97
    assert data.read_image(tmp_path / "x.jpg").shape == (60, 40, 3)


def test_uploads_are_read_as_displayed(tmp_path):
    from dashboard.images import decode_upload

    payload = _with_orientation(_asymmetric(), 8, "JPEG")
    rgb, _ = decode_upload("phone.jpg", payload)
    assert rgb.shape == (60, 40, 3)
    assert np.array_equal(rgb, data.read_image(payload, name="phone.jpg"))


# ------------------------------------------------------------------ 2. pixel types
def _ramp8(h: int = 16, w: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))


@pytest.mark.parametrize("bits, suffix", [(10, "png"), (12, "png"), (12, "tif"), (16, "png")])
def test_high_bit_data_in_16_bit_files_keeps_every_level(tmp_path, bits, suffix):
    top = 2 ** bits - 1
    ramp = np.tile(np.arange(top + 1, dtype=np.uint16)[None, :], (2, 1))  # every level once
    path = tmp_path / f"cam.{suffix}"
    Image.fromarray(ramp).save(path) if suffix == "png" else tifffile.imwrite(path, ramp)
    rule = data.intensity_rule([path])
    assert (rule.kind, rule.white) == ("integer", float(top))
    rgb = data.read_image(path, rule)
    assert np.unique(rgb[..., 0]).size == 256  # all 8-bit levels, as an 8-bit copy would have
    assert np.array_equal(rgb[0, :, 0], np.rint(np.arange(top + 1) * 255 / top).astype(np.uint8))


def test_float_tiff_in_unit_range_maps_like_its_8_bit_copy(tmp_path):
    img8 = _ramp8()
    tifffile.imwrite(tmp_path / "f.tif", img8.astype(np.float32) / 255)
    rule = data.intensity_rule([tmp_path / "f.tif"])
    assert (rule.kind, rule.white) == ("float", 1.0)
    assert np.abs(data.read_image(tmp_path / "f.tif", rule)[..., 0].astype(int) - img8).max() == 0


def test_float_and_16_bit_colour_tiffs_keep_their_range(tmp_path):
    rgb8 = np.stack([_ramp8(), _ramp8()[:, ::-1], np.full((16, 64), 77, np.uint8)], axis=2)
    tifffile.imwrite(tmp_path / "f.tif", rgb8.astype(np.float32) / 255)  # Pillow cannot open float RGB
    tifffile.imwrite(tmp_path / "u.tif", (rgb8.astype(np.int64) * 4095 // 255).astype(np.uint16))  # 12-bit colour
    for name in ("f.tif", "u.tif"):
        rule = data.intensity_rule([tmp_path / name])
        got = data.read_image(tmp_path / name, rule).astype(int)
        assert np.abs(got - rgb8).max() <= 1, name


def test_32_bit_integer_images_share_one_scale(tmp_path):
    bright = np.full((8, 8), 4000, np.int32)
    dark = np.full((8, 8), 200, np.int32)
    bright[0, 0] = 200
    for name, arr in (("bright.tif", bright), ("dark.tif", dark)):
        Image.fromarray(arr, mode="I").save(tmp_path / name)
    rule = data.intensity_rule([tmp_path / "bright.tif", tmp_path / "dark.tif"])
    assert rule.white == 4095
    a = data.read_image(tmp_path / "bright.tif", rule)
    b = data.read_image(tmp_path / "dark.tif", rule)
    assert a[0, 0, 0] == b[0, 0, 0] == round(200 * 255 / 4095)  # same value, same grey in both images
    assert a[1, 1, 0] == round(4000 * 255 / 4095)


def test_rule_survives_json_and_is_used_for_later_images(tmp_path):
    train = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))
    Image.fromarray(train).save(tmp_path / "train.png")
    rule = data.intensity_rule([tmp_path / "train.png"])
    again = data.IntensityRule.from_dict(rule.to_dict())
    assert again == rule and "12-bit" in rule.to_dict()["rule"]
    Image.fromarray(np.full((4, 4), 2048, np.uint16)).save(tmp_path / "test.png")  # darker test image
    assert data.read_image(tmp_path / "test.png", again)[0, 0, 0] == 128  # not stretched per image


@pytest.mark.parametrize("make, match", [
    (lambda: np.array([[0.5, np.nan]], np.float32), r"bad\.tif holds NaN or infinite"),
    (lambda: np.array([[-0.5, 0.5]], np.float32), r"bad\.tif has values in \[-0\.5"),
])
def test_uninterpretable_float_images_are_named(tmp_path, make, match):
    tifffile.imwrite(tmp_path / "bad.tif", make())
    with pytest.raises(DataError, match=match):
        data.intensity_rule([tmp_path / "bad.tif"])


def test_images_outside_the_category_rule_are_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 5000, np.uint16)).save(tmp_path / "hot.png")
    with pytest.raises(DataError, match=r"hot\.png has values in \[5000, 5000\].*\[0, 4095\]"):
        data.read_image(tmp_path / "hot.png", data.IntensityRule("integer", 4095.0))
    with pytest.raises(DataError, match=r"hot\.png has integer samples .* rule in use is 8-bit"):
        data.read_image(tmp_path / "hot.png", data.EIGHT_BIT)
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match=r"f\.tif has float samples .* 12-bit integer"):
        data.read_image(tmp_path / "f.tif", data.IntensityRule("integer", 4095.0))
    with pytest.raises(DataError, match="mix integer and float"):
        data.intensity_rule([tmp_path / "hot.png", tmp_path / "f.tif"])


def test_eight_bit_images_ignore_the_rule(tmp_path):
    Image.fromarray(_ramp8()).save(tmp_path / "g.png")
    assert data.intensity_rule([tmp_path / "g.png"]) == data.EIGHT_BIT
    got = data.read_image(tmp_path / "g.png", data.IntensityRule("integer", 4095.0))
    assert np.array_equal(got[..., 0], _ramp8())


# ------------------------------------------------------------------ 3. file names
@pytest.mark.parametrize("image_name, mask_name", [
    ("000.png", "000_mask.Png"),
    ("000.PNG", "000_mask.TIFF"),
    ("scratch 01.jpg", "scratch 01_mask.png"),
    ("a.b.c.bmp", "a.b.c_mask.JPEG"),
    (unicodedata.normalize("NFC", "défaut.png"), unicodedata.normalize("NFD", "défaut_mask.png")),
])
def test_masks_follow_the_image_name_rule(tmp_path, image_name, mask_name):
    cat = tmp_path / "widget"
    for sub in ("train/good", "test/good", "test/dent", "ground_truth/dent"):
        (cat / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(cat / "train" / "good" / "000.png")
    fmt = {"png": "PNG", "tiff": "TIFF", "jpeg": "JPEG", "jpg": "JPEG", "bmp": "BMP"}
    Image.new("RGB", (8, 8)).save(cat / "test" / "dent" / image_name, format=fmt[image_name.rsplit(".", 1)[1].lower()])
    Image.new("L", (8, 8), 255).save(cat / "ground_truth" / "dent" / mask_name,
                                     format=fmt[mask_name.rsplit(".", 1)[1].lower()])
    (s,) = data.test_samples(tmp_path, "widget")
    assert s.path.name == image_name and s.mask_path.name == mask_name


def test_two_masks_for_one_image_are_an_error(tmp_path):
    gt = tmp_path / "ground_truth" / "dent"
    gt.mkdir(parents=True)
    for name in ("000_mask.png", "000_mask.BMP"):
        Image.new("L", (8, 8)).save(gt / name)
    with pytest.raises(DataError, match=r"several masks match .*000_mask\.BMP, 000_mask\.png"):
        data.find_mask(tmp_path, "dent", "000")


# ------------------------------------------------------------------ 8. geometry
def test_display_shape_keeps_aspect_and_caps_the_longest_side():
    assert data.display_shape((120, 200)) == (120, 200)
    assert data.display_shape((3000, 2000)) == (1024, 683)
    assert data.display_shape((10, 5000), max_side=500) == (1, 500)


def test_maps_resize_back_to_the_input_geometry():
    amap = np.zeros((64, 64), np.float32)
    amap[:, 48:] = 1.0  # right quarter
    back = data.resize_to(amap, (120, 200))
    assert back.shape == (120, 200) and back.dtype == np.float32
    assert back[:, 160:].min() > 0.99 and back[:, :140].max() < 0.01


# ------------------------------------------------------------------ 6. undefined metrics
def test_undefined_metrics_say_why():
    from somad import metrics

    masks = np.zeros((3, 8, 8), bool)
    maps = np.random.default_rng(0).random((3, 8, 8))
    only_good = metrics.evaluate_scores(np.zeros(3, int), maps.max((1, 2)), masks, maps)
    assert np.isnan(only_good["image_auroc"]) and np.isnan(only_good["aupro"])
    assert only_good["undefined"] == {k: "no defective test images" for k in (
        "image_auroc", "pixel_auroc", "aupro", "image_f1_max", "image_f1_threshold", "pixel_f1_max",
        "pixel_f1_threshold")}
    masks[:, :2] = True
    only_bad = metrics.evaluate_scores(np.ones(3, int), maps.max((1, 2)), masks, maps)
    assert only_bad["undefined"] == {"image_auroc": "no good test images"}
    assert 0 <= only_bad["pixel_auroc"] <= 1
