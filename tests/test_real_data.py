"""Acceptance on the real datasets in ../shared/data (skipped where they are absent)."""
from __future__ import annotations

import numpy as np

from somad.pipeline import evaluate_model, fit_category

from conftest import real_root


def test_mvtec_bottle_defaults_reach_the_targets(tmp_path):
    root = real_root("mvtec_ad")
    model = fit_category(root, "bottle", tmp_path / "bottle")  # all defaults, all 100 train images
    assert model.n_train_ == 100 and model.grid_ == (56, 56)
    ev = evaluate_model(model, root, "bottle")
    m = ev.metrics
    assert m["image_auroc"] >= 0.98, m
    assert m["pixel_auroc"] >= 0.96, m
    assert m["aupro"] >= 0.85, m
    assert len(np.unique(ev.scores)) == len(ev.scores)  # image scores are not normalised away


def test_magnetic_tile_grayscale_varied_sizes_end_to_end(tmp_path):
    root = real_root("magnetic_tile_defects")
    model = fit_category(root, "magnetic_tile", tmp_path / "mt", max_train_images=60,
                         params=dict(epochs=5, cv_folds=3))
    ev = evaluate_model(model, root, "magnetic_tile")
    assert ev.images.shape[1:] == (224, 224, 3) and len(ev.samples) == 538
    assert np.isfinite(ev.scores).all() and np.isfinite(ev.maps).all()
    # 60 of 500 train images and 5 epochs keep this test short; the full run is in the README
    assert ev.metrics["image_auroc"] > 0.6 and ev.metrics["pixel_auroc"] > 0.6, ev.metrics
