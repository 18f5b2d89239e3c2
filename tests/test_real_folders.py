"""Real folders, round three (issue 18): one bad file does not sink a ``predict`` batch, empty masks
are caught, very large images and one-neuron maps get clear errors, a [0, 1] float image is the
image it shows, real-data skips say why.

Every input is built with numpy/Pillow/tifffile in ``tmp_path``, as in ``tests/test_inputs.py``.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from somad import data, pipeline
from somad.cli import EXIT_UNREADABLE, main
from somad.errors import DataError, ParameterError

from conftest import REPO


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width x height`` 8-bit grey, with no pixel data: Pillow's
    decompression-bomb check fires on opening it, like on a real 13,500 x 13,500 scan."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory) -> Path:
    from somad.persistence import save_model

    return save_model(tiny_model, tmp_path_factory.mktemp("m18") / "tiles" / "default")


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ 1. one bad file does not sink predict
def _mixed_folder(demo_root: Path, folder: Path) -> list[Path]:
    """Three good PNGs, a truncated PNG, a text file named .png, an oversized PNG and a .txt."""
    folder.mkdir()
    good = sorted((demo_root / "tiles" / "test").glob("*/000.png"))[:3]  # good, crack, hole
    for name, src in zip(("a.png", "b.png", "c.png"), good):
        shutil.copy(src, folder / name)
    (folder / "broken.png").write_bytes(good[0].read_bytes()[:200])  # header fine, pixels cut off
    (folder / "notes.png").write_text("not a picture")
    (folder / "huge.png").write_bytes(_png_header(13_500, 13_500))
    (folder / "readme.txt").write_text("no image extension: not listed")
    return good


def test_predict_scores_every_readable_file_and_names_the_others(tiny_model, model_dir, demo_root, tmp_path,
                                                                 capsys):
    good = _mixed_folder(demo_root, tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", "--model-dir", str(model_dir), "--out", str(out), str(tmp_path / "in")]) \
        == EXIT_UNREADABLE == 3
    cap = capsys.readouterr()
    rows = {Path(r["path"]).name: r for r in _rows(out / "predictions.csv")}
    assert list(rows) == ["a.png", "b.png", "broken.png", "c.png", "huge.png", "notes.png"]  # no row for readme.txt
    assert [rows[n]["verdict"] for n in rows] == [
        rows["a.png"]["verdict"], rows["b.png"]["verdict"], "error", rows["c.png"]["verdict"], "error", "error"]
    assert {rows[n]["verdict"] for n in ("a.png", "b.png", "c.png")} <= {"anomalous", "normal"}
    assert "cannot read image" in rows["broken.png"]["error"] and "broken.png" in rows["broken.png"]["error"]
    assert rows["huge.png"]["error"].endswith("downscale it first.") and "too large" in rows["huge.png"]["error"]
    assert "not an image file Pillow can identify" in rows["notes.png"]["error"]
    for n in ("broken.png", "huge.png", "notes.png"):
        assert rows[n]["score"] == "" and rows[n]["overlay"] == ""
    # the readable files score exactly as they do alone, in a batch without the broken ones
    expected = tiny_model.score_samples(np.stack([data.load_image(p, tiny_model.image_size) for p in good]))
    np.testing.assert_allclose([float(rows[n]["score"]) for n in ("a.png", "b.png", "c.png")], expected, rtol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["a_overlay.png", "b_overlay.png", "c_overlay.png",
                                                    "predictions.csv"]
    err = [line for line in cap.err.splitlines() if line.startswith("error: ")]
    assert len(err) == 3 and [n for n in ("broken.png", "huge.png", "notes.png") if any(n in e for e in err)] == [
        "broken.png", "huge.png", "notes.png"]
    assert "6 images in" in cap.out and "3 scored, 3 unreadable" in cap.out


def test_predict_strict_keeps_all_or_nothing(model_dir, demo_root, tmp_path, capsys):
    _mixed_folder(demo_root, tmp_path / "in")
    assert main(["predict", "--strict", "--model-dir", str(model_dir), "--out", str(tmp_path / "out"),
                 str(tmp_path / "in")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: image {tmp_path / 'in' / 'huge.png'} is too large")
    assert not (tmp_path / "out").exists()
    # the truncated file alone passes the header check and stops the run when it is decoded
    (tmp_path / "in" / "huge.png").unlink()
    (tmp_path / "in" / "notes.png").unlink()
    assert main(["predict", "--strict", "--model-dir", str(model_dir), "--out", str(tmp_path / "out"),
                 str(tmp_path / "in")]) == 2
    assert "broken.png" in capsys.readouterr().err and not (tmp_path / "out").exists()
    shutil.copy(tmp_path / "in" / "a.png", tmp_path / "a.png")
    assert main(["predict", "--strict", "--model-dir", str(model_dir), "--out", str(tmp_path / "out"),
                 str(tmp_path / "a.png")]) == 0


def test_predict_batch_is_the_per_file_row_logic(tiny_model, demo_root, tmp_path):
    good = _mixed_folder(demo_root, tmp_path / "in")
    paths = [good[0], tmp_path / "in" / "broken.png", good[1]]
    rows = pipeline.predict_batch(tiny_model, paths)
    assert [r["verdict"] == "error" for r in rows] == [False, True, False]
    assert rows[1]["score"] is None and rows[1]["anomalous"] is None and "broken.png" in rows[1]["error"]
    assert pipeline.csv_row(rows[1])[:4] == [str(paths[1]), "", "error", ""]
    assert rows[0]["score"] == pytest.approx(pipeline.predict_batch(tiny_model, paths[:1])[0]["score"], rel=1e-5)
    with pytest.raises(DataError, match=r"broken\.png"):
        pipeline.predict_batch(tiny_model, paths, strict=True)


# ------------------------------------------------------------------ 2. empty masks in defect folders
def test_empty_masks_are_named_counted_and_left_out_of_pixel_metrics(tiny_model, model_dir, demo_root, tmp_path):
    from somad.metrics import evaluate_scores

    root = tmp_path / "data"
    shutil.copytree(demo_root / "tiles", root / "tiles")
    mask = root / "tiles" / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros_like(np.asarray(Image.open(mask)))).save(mask)
    with pytest.warns(UserWarning, match=r"1 defective test image of 'tiles' has an empty mask .*hole/000_mask"
                                         r"\.png.*left out of the pixel metrics"):
        ev = pipeline.evaluate_model(tiny_model, root, "tiles")
    m = ev.metrics
    assert (m["n_empty_masks"], m["empty_masks"], m["empty_masks_in_pixel_metrics"]) == (1, [str(mask)], False)
    keep = np.array([s.mask_path != mask for s in ev.samples])
    assert keep.sum() == len(keep) - 1
    without = evaluate_scores(ev.labels[keep], ev.scores[keep], ev.masks[keep], ev.maps[keep])
    full = evaluate_scores(ev.labels, ev.scores, ev.masks, ev.maps)
    for key in ("pixel_auroc", "aupro", "pixel_f1_max"):
        assert m[key] == pytest.approx(without[key], abs=1e-12), key
    assert m["image_auroc"] == full["image_auroc"]  # still a defective image for the image metrics
    assert m["pixel_auroc"] != full["pixel_auroc"]  # leaving it out changes the figure
    assert m["n_anomalous"] == int(ev.labels.sum())
    assert ev.pixel_arrays()[0].shape[0] == len(keep) - 1

    # the CLI's --keep-empty-masks counts its pixels as normal, as before, and says so
    res = tmp_path / "res"
    argv = ["evaluate", "--data-dir", str(root), "--category", "tiles", "--models-dir", str(model_dir.parent.parent),
            "--results-dir", str(res), "--figures", "0", "--keep-empty-masks"]
    with pytest.warns(UserWarning, match=r"hole/000_mask\.png\. All its pixels count as normal"):
        assert main(argv) == 0
    kept = json.loads((res / "tiles" / "metrics.json").read_text())
    assert kept["n_empty_masks"] == 1 and kept["empty_masks_in_pixel_metrics"] is True
    assert kept["pixel_auroc"] == pytest.approx(full["pixel_auroc"], abs=1e-12)


# ------------------------------------------------------------------ 3. very large images
def test_very_large_images_say_downscale_everywhere(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(13_500, 13_500))
    message = rf"image {huge} is too large \(.*\): downscale it first\."
    with pytest.raises(DataError, match=message):
        data.check_image_file(huge)  # predict's quick header check
    with pytest.raises(DataError, match=message):
        data.read_image(huge)
    with pytest.raises(DataError, match=message):
        data.intensity_rule([huge])  # fit's first look at the training images


# ------------------------------------------------------------------ 4. one-neuron maps
def test_one_neuron_grid_is_refused_before_any_work(demo_root, tmp_path, capsys):
    from somad.model import check_params

    with pytest.raises(ParameterError, match=r"SOM grid 1x1 has one neuron.*at least 1x2"):
        check_params({"grid": (1, 1), "k": 1})
    check_params({"grid": (1, 2), "k": 1})  # two neurons: a map, with a topographic error
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m"),
                 "--grid", "1x1", "--k", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the SOM grid 1x1 has one neuron")
    assert not (tmp_path / "m").exists()


def test_dashboard_fit_form_applies_the_same_check(monkeypatch, demo_root, tmp_path):
    from streamlit.testing.v1 import AppTest

    called = []
    monkeypatch.setattr(pipeline, "fit_category", lambda *a, **k: called.append(a))
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    at = AppTest.from_file(str(REPO / "pages" / "1_model.py"), default_timeout=120)
    at.run()
    at.number_input(key="fit_grid_rows").set_value(1)
    at.number_input(key="fit_grid_cols").set_value(1)
    at.number_input(key="fit_k").set_value(1)
    next(b for b in at.button if b.label == "Fit").click().run()
    assert any("SOM grid 1x1 has one neuron" in e.value for e in at.error), [e.value for e in at.error]
    assert called == [] and not (tmp_path / "models").exists()


# ------------------------------------------------------------------ 5. [0, 1] float images on an 8-bit model
def test_unit_float_image_scores_like_its_8_bit_copy(tiny_model, demo_root, tmp_path):
    src = demo_root / "tiles" / "test" / "hole" / "000.png"
    rgb8 = np.asarray(Image.open(src).convert("RGB"))
    tifffile.imwrite(tmp_path / "f.tif", rgb8.astype(np.float32) / 255)
    assert tiny_model.intensity_ == data.EIGHT_BIT
    rows = pipeline.predict_files(tiny_model, [src, tmp_path / "f.tif"], strict=True)
    assert rows[1]["score"] == pytest.approx(rows[0]["score"], rel=0.01)
    assert np.abs(data.read_image(tmp_path / "f.tif").astype(int) - rgb8).max() <= 1  # white = 1.0
    # still refused: floats outside [0, 1] and integers of more than 8 bits, both ambiguous
    tifffile.imwrite(tmp_path / "f255.tif", rgb8.astype(np.float32))
    with pytest.raises(DataError, match=rf"f255\.tif has float samples in \[{rgb8.min()}, {rgb8.max()}\] .* "
                                        r"outside \[0, 1\]"):
        data.read_image(tmp_path / "f255.tif", tiny_model.intensity_)
    Image.fromarray((rgb8[..., 0].astype(np.uint16) * 257)).save(tmp_path / "u16.png")
    with pytest.raises(DataError, match=r"u16\.png has integer samples .* rule in use is 8-bit"):
        data.read_image(tmp_path / "u16.png", tiny_model.intensity_)


# ------------------------------------------------------------------ 6. real-data skips say why
def test_real_data_skips_name_the_variable_in_the_summary(tmp_path):
    env = dict(os.environ, SOMAD_SHARED_DATA=str(tmp_path / "nowhere"))
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/test_real_data.py", "-q", "-p", "no:cacheprovider"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and lines[-1].startswith("2 skipped"), run.stdout
    skips = [line for line in lines if line.startswith("SKIPPED")]
    assert len(skips) == 2 and all("set SOMAD_SHARED_DATA to the folder holding" in s for s in skips), skips
    assert lines[-2].startswith("2 real-data acceptance test(s) skipped") and "SOMAD_SHARED_DATA" in lines[-2]
