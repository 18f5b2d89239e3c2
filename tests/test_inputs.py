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
    assert data.image_shape(path) == got.shape[:2]  # from the header alone


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


def test_float_colour_tiff_uploads_use_the_model_rule():
    from dashboard.images import decode_upload

    rgb8 = np.stack([_ramp8(), _ramp8()[:, ::-1], np.full((16, 64), 77, np.uint8)], axis=2)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb8.astype(np.float32) / 255)  # Pillow cannot open float colour TIFFs
    got, notes = decode_upload("f.tif", buf.getvalue(), rule=data.IntensityRule("float", 1.0))
    assert np.abs(got.astype(int) - rgb8).max() <= 1 and "tifffile" in notes[0]
    got, _ = decode_upload("f.tif", buf.getvalue())  # on an 8-bit model: white = 1.0, the [0, 1] convention
    assert np.abs(got.astype(int) - rgb8).max() <= 1
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb8.astype(np.float32))  # 0..255 in floats: which value is white?
    with pytest.raises(DataError, match=r"f\.tif has float samples in \[0, 255\] but the model's training images "
                                        r"were 8-bit"):
        decode_upload("f.tif", buf.getvalue())


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


def test_hidden_files_are_skipped_for_images_and_masks(tmp_path):
    cat = tmp_path / "widget"
    for sub in ("train/good", "test/dent", "ground_truth/dent"):
        (cat / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(cat / "train" / "good" / "000.png")
    Image.new("RGB", (8, 8)).save(cat / "test" / "dent" / "000.png")
    Image.new("L", (8, 8), 255).save(cat / "ground_truth" / "dent" / "000_mask.png")
    for folder in ("train/good", "test/dent"):
        (cat / folder / "._000.png").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble")
    (cat / "ground_truth" / "dent" / "._000_mask.png").write_bytes(b"\x00\x05\x16\x07")
    (cat / "test" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(cat / "test" / ".ipynb_checkpoints" / "000.png")  # would be a defect type
    assert [s.path.name for s in data.train_samples(tmp_path, "widget")] == ["000.png"]
    (s,) = data.test_samples(tmp_path, "widget")
    assert s.mask_path.name == "000_mask.png"


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


# ------------------------------------------------------------------ end to end (small fits)
TINY_FIT = dict(image_size=64, d=32, epochs=2, cv_folds=2, batch_size=16)


def _strict_json(path):
    import json

    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def _copy_category(demo_root, dest, keep_defects=True, n_train=None, convert=None):
    """Copy of the demo 'tiles' category; ``convert(rgb uint8) -> (array, suffix)`` rewrites every image."""
    import shutil

    cat = dest / "tiles"
    shutil.copytree(demo_root / "tiles", cat)
    if not keep_defects:
        for sub in list((cat / "test").iterdir()) + list((cat / "ground_truth").iterdir()):
            if sub.name != "good":
                shutil.rmtree(sub)
    if n_train is not None:
        for p in sorted((cat / "train" / "good").iterdir())[n_train:]:
            p.unlink()
    if convert is not None:
        for split in ("train", "test"):
            for p in sorted((cat / split).rglob("*.png")):
                arr, suffix = convert(np.asarray(Image.open(p).convert("RGB")))
                tifffile.imwrite(p.with_suffix(suffix), arr)
                p.unlink()
    return dest


def test_deep_tiffs_give_the_same_model_and_scores_as_their_8_bit_copy(demo_root, tmp_path):
    """Issue 8 case 2: 12-bit colour TIFFs (tifffile) vs the same pictures in 8 bit."""
    from somad import pipeline
    from somad.persistence import load_model

    to12 = lambda rgb: (np.rint(rgb.astype(np.float64) * 4095 / 255).astype(np.uint16), ".tif")  # noqa: E731
    deep = _copy_category(demo_root, tmp_path / "deep", n_train=4, convert=to12)
    plain = _copy_category(demo_root, tmp_path / "plain", n_train=4)
    a = pipeline.fit_category(deep, "tiles", tmp_path / "m_deep", TINY_FIT)
    b = pipeline.fit_category(plain, "tiles", tmp_path / "m_plain", TINY_FIT)
    assert a.intensity_ == data.IntensityRule("integer", 4095.0) and b.intensity_ == data.EIGHT_BIT
    assert a.threshold_ == pytest.approx(b.threshold_, rel=1e-5)
    loaded = load_model(tmp_path / "m_deep")
    assert loaded.intensity_ == a.intensity_
    assert _strict_json(tmp_path / "m_deep" / "config.json")["intensity"]["rule"] == \
        "12-bit integer samples: 0..4095 -> 0..255"
    ev_a = pipeline.evaluate_model(loaded, deep, "tiles")
    ev_b = pipeline.evaluate_model(b, plain, "tiles")
    assert np.allclose(ev_a.scores, ev_b.scores, rtol=1e-5)
    assert ev_a.metrics["image_auroc"] == ev_b.metrics["image_auroc"]


@pytest.fixture(scope="module")
def demo_images(demo_root):
    samples = data.train_samples(demo_root, "tiles")
    return data.load_split(samples, TINY_FIT["image_size"])[0]


def test_few_training_images_get_a_leave_one_out_threshold(demo_images, tmp_path):
    """Issue 8 case 4: 3 images, cv_folds 5 -> 3 folds (held out), never silently in-sample."""
    import json

    from somad.model import SOMAD
    from somad.persistence import save_model

    held = SOMAD(**{**TINY_FIT, "cv_folds": 5}).fit(demo_images[:3])
    inside = SOMAD(**{**TINY_FIT, "cv_folds": 1}).fit(demo_images[:3])
    assert held.cv_folds_used_ == 3 and inside.cv_folds_used_ == 1
    assert (held.train_scores_ > inside.train_scores_).all()  # held-out scores exceed in-sample ones
    assert held.threshold_ > inside.threshold_
    save_model(held, tmp_path / "m")
    rule = json.loads((tmp_path / "m" / "config.json").read_text())["threshold_rule"]
    assert rule == "percentile 99 of 3-fold (leave-one-out) cross-fitted scores of 3 training images"
    assert inside.threshold_rule == "percentile 99 of in-sample scores of 3 training images"
    five = SOMAD(**{**TINY_FIT, "cv_folds": 5}).fit(demo_images[:6])
    assert five.cv_folds_used_ == 5 and five.threshold_rule.startswith("percentile 99 of 5-fold cross-fitted")


def test_one_training_image_warns_how_the_threshold_was_set(demo_images):
    from somad.model import SOMAD

    with pytest.warns(UserWarning, match="only 1 training image .* no held-out score is possible"):
        m = SOMAD(**{**TINY_FIT, "cv_folds": 5}).fit(demo_images[:1])
    assert m.cv_folds_used_ == 1 and "in-sample scores of 1 training images" in m.threshold_rule


# ------------------------------------------------------------------ 5. devices
def test_unknown_or_missing_devices_are_parameter_errors(tmp_path):
    import torch

    from somad.devices import check_device
    from somad.errors import ParameterError, SomadError
    from somad.model import SOMAD
    from somad.persistence import load_model

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ParameterError, match=r"device 'gpu' is not a torch device name: use one of cpu") as info:
        check_device("gpu")
    assert isinstance(info.value, SomadError)
    with pytest.raises(ParameterError, match=r"device 'cuda:99' is not available on this machine"):
        SOMAD(device="cuda:99")._validate_params()
    with pytest.raises(ParameterError, match=r"device 'gpu'"):
        load_model(tmp_path / "no_model", device="gpu")  # the device is checked first
    with pytest.raises(ParameterError, match=r"device 'cuda:99'"):
        SOMAD().to("cuda:99")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_names_what_is_available():
    from somad.devices import check_device
    from somad.errors import ParameterError

    with pytest.raises(ParameterError, match=r"device 'cuda' is not available on this machine: use one of "
                                             r"cpu \(no CUDA GPU found\)"):
        check_device("cuda")


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict"])
def test_cli_device_errors_are_one_line_exit_2_nothing_written(demo_root, tmp_path, capsys, command):
    from somad.cli import main

    out = tmp_path / "out"
    argv = {"fit": ["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(out)],
            "evaluate": ["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir",
                         str(out), "--results-dir", str(out)],
            "predict": ["predict", "--model-dir", str(out), "--out", str(out),
                        str(demo_root / "tiles" / "test" / "good" / "000.png")]}[command]
    assert main(argv + ["--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'gpu' is not a torch device name: use one of cpu")
    assert not out.exists()


def test_dashboard_shows_a_bad_somad_device(app_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from dashboard.config import REPO

    monkeypatch.setenv("SOMAD_DEVICE", "gpu")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("device 'gpu' is not a torch device name" in e.value for e in at.error)


# ------------------------------------------------------------------ 6. strict metrics.json
def test_metrics_json_is_strict_and_the_table_says_why(tiny_model, demo_root, tmp_path, capsys):
    from somad.cli import main
    from somad.persistence import save_model

    root = _copy_category(demo_root, tmp_path / "data", keep_defects=False)
    save_model(tiny_model, tmp_path / "models" / "tiles" / "default")
    assert main(["evaluate", "--data-dir", str(root), "--category", "tiles", "--models-dir",
                 str(tmp_path / "models"), "--results-dir", str(tmp_path / "res"), "--figures", "0"]) == 0
    m = _strict_json(tmp_path / "res" / "tiles" / "metrics.json")
    assert m["image_auroc"] is None and m["aupro"] is None and m["per_defect"] == {}
    assert m["undefined"]["image_auroc"] == "no defective test images"
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiles |")][0]
    assert row.count("n/a (no defective test images)") == 5


# ------------------------------------------------------------------ 7. settings that cannot work
@pytest.mark.parametrize("params, match", [
    (dict(k=8, grid=(2, 2)), r"k=8 nearest neurons but the SOM grid 2x2 has only 4 neurons"),
    (dict(k=100, image_size=32), r"k=100 nearest neurons but the SOM grid 8x8 has only 64"),  # grid None
    (dict(cv_folds=-1), r"cv_folds must be >= 0"),
    (dict(search_radius=-2), r"search_radius must be >= 0 or None"),
])
def test_impossible_settings_are_rejected_before_any_work(params, match):
    from somad.errors import ParameterError
    from somad.model import SOMAD

    with pytest.raises(ParameterError, match=match):
        SOMAD(**params).fit(np.zeros((1, 7, 7, 3), np.uint8))  # rejected before the images are looked at


@pytest.mark.parametrize("params, match", [
    ({"d": 500}, r"d=500 channels but backbone 'tf_efficientnet_lite0' gives only 176"),
    ({"k": 8, "grid": (2, 2)}, r"k=8 nearest neurons but the SOM grid 2x2"),  # the dashboard fit form's path
])
def test_fit_category_rejects_impossible_settings_before_loading(demo_root, tmp_path, params, match):
    from somad import pipeline
    from somad.errors import ParameterError

    with pytest.raises(ParameterError, match=match):
        pipeline.fit_category(demo_root, "tiles", tmp_path / "m", params)
    assert not (tmp_path / "m").exists()


def test_a_garbled_intensity_rule_is_a_model_file_error(tiny_model, tmp_path):
    import json

    from somad.errors import ModelFileError
    from somad.persistence import load_model, save_model

    save_model(tiny_model, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["intensity"] == {"kind": "8-bit", "white": 255.0,
                                "rule": "8-bit samples used as they are (images with more bits are refused)"}
    cfg["intensity"]["kind"] = "bogus"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="intensity rule"):
        load_model(tmp_path / "m")


def test_cli_rejects_k_above_the_neuron_count(demo_root, tmp_path, capsys):
    from somad.cli import main

    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m"),
                 "--k", "8", "--grid", "2x2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: k=8 nearest neurons but the SOM grid 2x2 has only 4 neurons: lower k or enlarge "
                   "the grid."]
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ 8. overlays at the input's geometry
def test_predict_overlays_keep_the_input_geometry(tiny_model, tmp_path):
    from somad import pipeline

    wide = np.zeros((120, 200, 3), np.uint8)
    wide[:, :100] = 230  # bright left half
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.full((2000, 3000, 3), 90, np.uint8)).save(tmp_path / "huge.png")
    rows = pipeline.predict_files(tiny_model, [tmp_path / "wide.png", tmp_path / "huge.png"], tmp_path / "out")
    with Image.open(rows[0]["overlay"]) as im:
        assert im.size == (200, 120)
        pic = np.asarray(im).astype(int)
    assert pic[:, :90].mean() > pic[:, 110:].mean() + 40  # the bright half stays on the left, not squashed
    with Image.open(rows[1]["overlay"]) as im:
        assert im.size == (1024, 683)  # longest side capped at data.MAX_DISPLAY_SIDE


def test_image_shape_of_a_png_reads_its_header_only(tmp_path):
    """A PNG's shape comes from its header, without decoding the pixels (Pillow's ``getexif`` would
    decode the whole PNG to look for a late eXIf chunk: 15 ms per 900 px MVTec image): a PNG cut short
    in its pixel data still has a shape, while reading its pixels fails with a DataError."""
    path = tmp_path / "cut.png"
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # a long pixel stream
    Image.fromarray(noise).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[:-1000])  # the end of the pixel data and IEND are gone
    assert data.image_shape(path) == (40, 60)
    with pytest.raises(data.DataError):
        data.read_image(path)
