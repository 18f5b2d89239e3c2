"""Shared pytest fixtures (used by several test files: append new fixtures, do not replace these).

Everything runs on small synthetic data generated on the fly; tests that need
the real datasets in ``../shared/data`` use ``real_root`` and skip when absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA_ENV = "SOMAD_SHARED_DATA"
"""Environment variable naming the folder that holds the real datasets (``mvtec_ad/``, ``magnetic_tile_defects/``)."""
SHARED_DATA = Path(os.environ.get(SHARED_DATA_ENV, REPO.parent / "shared" / "data"))
REAL_DATASETS = ("mvtec_ad", "magnetic_tile_defects")

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

TINY = dict(image_size=64, d=32, epochs=3, cv_folds=2, batch_size=16)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset (tiles, washers) in MVTec layout."""
    from somad.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "data", n_train=12, n_good=4, n_defect=8)


@pytest.fixture(scope="session")
def tiny_model(demo_root):
    """A SOMAD model fitted on the demo 'tiles' train split at 64 px (16x16 grid)."""
    from somad import data
    from somad.model import SOMAD

    samples = data.train_samples(demo_root, "tiles")
    images, _ = data.load_split(samples, TINY["image_size"])
    return SOMAD(**TINY).fit(images, [str(s.path) for s in samples])


def real_root(name: str) -> Path:
    """Root of a real dataset under ../shared/data, or skip the test."""
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"real data {root} is not on this machine: set {SHARED_DATA_ENV} to the folder holding {name}/")
    return root


def _missing_real_data() -> list[str]:
    return [name for name in REAL_DATASETS if not (SHARED_DATA / name).is_dir()]


def pytest_report_header(config) -> str:
    """Says at the top of every run where the real datasets are looked for, and whether they are there."""
    missing = _missing_real_data()
    state = f"missing {', '.join(missing)}: their acceptance tests skip" if missing else "found"
    return f"real data: {SHARED_DATA} ({state}; set {SHARED_DATA_ENV} to another folder)"


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: runs after the skip reasons are printed
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After the skip reasons (``-ra`` in pyproject.toml), one line just above the final count when
    real-data tests were skipped, so "N skipped" never hides that the acceptance tests did not run."""
    result = yield
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "real data" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} real-data acceptance test(s) skipped: no "
                                    f"{', '.join(_missing_real_data())} under {SHARED_DATA}; set {SHARED_DATA_ENV} "
                                    "to the folder holding them to run them.", yellow=True, bold=True)
    return result


def rng_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images (n, size, size, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- dashboard fixtures
DASH_SMALL = dict(image_size=64, d=32, epochs=3, cv_folds=2)


@pytest.fixture(scope="session")
def dash_model_env(tmp_path_factory, demo_root):
    """``(models_dir, model_dir, model)``: a small SOMAD (16x16 SOM) fitted on the demo 'tiles' with
    :func:`somad.pipeline.fit_category` and saved in a tmp models dir (what the dashboard loads)."""
    from somad import pipeline

    models = tmp_path_factory.mktemp("dash_models")
    out = pipeline.model_path(models, "tiles", "small")
    model = pipeline.fit_category(demo_root, "tiles", out, dict(DASH_SMALL))
    return models, out, model


@pytest.fixture(scope="session")
def dash_eval(dash_model_env, demo_root):
    """:class:`somad.pipeline.Evaluation` (with patch scores) of the dashboard model on the demo 'tiles' test split."""
    from somad import pipeline

    return pipeline.evaluate_model(dash_model_env[2], demo_root, "tiles", return_patches=True)


@pytest.fixture()
def app_env(monkeypatch, dash_model_env, demo_root):
    """Environment pointing the app at the demo data and the tmp models dir."""
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(dash_model_env[0]))
    return dash_model_env


@pytest.fixture(scope="session")
def two_models_env(tmp_path_factory, dash_model_env, demo_root):
    """``(models_dir, small_dir, other_dir, other_model)``: a models dir with a copy of the dashboard model
    (``small``: 64 px, 16x16 rectangular, no replay) and ``hex96``: 96 px, 8x12 hexagonal SOM, fitted
    with a training replay (2 epochs): two models of one category that differ in image size and grid."""
    import shutil

    from somad import pipeline

    models = tmp_path_factory.mktemp("two_models")
    small = pipeline.model_path(models, "tiles", "small")
    shutil.copytree(dash_model_env[1], small)
    other = pipeline.model_path(models, "tiles", "hex96")
    model = pipeline.fit_category(demo_root, "tiles", other,
                                  dict(DASH_SMALL, image_size=96, grid=(8, 12), topology="hexagonal", epochs=2),
                                  replay=True)
    return models, small, other, model
