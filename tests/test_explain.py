"""Unit tests of somad.explain: selection -> neuron/cell, neuron -> training patches, pixel -> BMU,
Mahalanobis contributions, test hits, outcomes. Values are checked against brute-force recomputation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from somad import data, explain
from somad.scoring import mahalanobis_pairs
from somad.som import exact_bmu


# ----------------------------------------------------------------- selections
def test_neuron_index_roundtrip_and_bounds():
    grid = (5, 7)
    for j in range(35):
        r, c = explain.neuron_position(j, grid)
        assert explain.neuron_index(r, c, grid) == j
    assert explain.neuron_position(10, grid) == (1, 3)
    with pytest.raises(ValueError, match="outside"):
        explain.neuron_index(5, 0, grid)
    with pytest.raises(ValueError, match="outside the 5x7 SOM grid"):
        explain.neuron_index(0, -1, grid)


def test_pixel_to_cell_and_cell_box():
    assert explain.pixel_to_cell(0, 0, 64, (16, 16)) == (0, 0)
    assert explain.pixel_to_cell(63.9, 3.99, 64, (16, 16)) == (0, 15)
    assert explain.pixel_to_cell(4.0, 8.0, 64, (16, 16)) == (2, 1)
    assert explain.pixel_to_cell(500, -3, 64, (16, 16)) == (0, 15)  # clipped
    assert explain.cell_box(2, 1, (16, 16), 64) == (4, 8, 8, 12)
    assert explain.cell_box(55, 55, (56, 56), 224) == (220, 220, 224, 224)


# ------------------------------------------------------------- BMU index
def test_build_bmu_index_groups_and_sorts():
    bmu = np.array([2, 0, 2, 1, 2, 0])
    dist = np.array([0.5, 0.1, 0.2, 0.3, 0.9, 0.05], np.float32)
    idx = explain.build_bmu_index(bmu, dist, 4)
    assert idx.starts.tolist() == [0, 2, 3, 6, 6]
    assert idx.order[idx.starts[0]:idx.starts[1]].tolist() == [5, 1]
    assert idx.order[idx.starts[2]:idx.starts[3]].tolist() == [2, 0, 4]
    np.testing.assert_allclose(idx.mean_dist[:3], [0.075, 0.3, (0.5 + 0.2 + 0.9) / 3], rtol=1e-6)
    assert np.isnan(idx.mean_dist[3])


def test_nearest_training_patches_match_brute_force(dash_model_env):
    model = dash_model_env[2]
    h, w = model.feature_shape_
    bmu = model.train_bmu_.numpy()
    dist = model.train_bmu_dist_.numpy()
    j = int(np.argmax(np.bincount(bmu)))
    r, c = explain.neuron_position(j, model.grid_)
    got = explain.nearest_training_patches(model, r, c, n=16)
    mine = np.flatnonzero(bmu == j)
    expected = mine[np.argsort(dist[mine], kind="stable")][:16]
    assert [p.patch for p in got] == expected.tolist()
    assert len(got) == min(16, len(mine))
    for p in got:
        assert p.image == p.patch // (h * w) and p.row == (p.patch // w) % h and p.col == p.patch % w
        assert p.path == model.train_paths_[p.image]
    # the stored distance is the real Euclidean distance of that patch's feature to the neuron
    p = got[0]
    img = data.load_image(p.path, model.image_size)
    feat = model.features(img[None])[0][:, p.row, p.col]
    assert float((feat - model.som_weights_[j]).norm()) == pytest.approx(p.distance, rel=1e-3, abs=1e-3)
    # a dead neuron (if any) has no patches
    dead = np.flatnonzero(np.bincount(bmu, minlength=len(model.som_weights_)) == 0)
    if len(dead):
        assert explain.nearest_training_patches(model, *explain.neuron_position(int(dead[0]), model.grid_)) == []


def test_bmu_index_follows_a_refit(demo_root):
    """Regression: the index cached on the model outlived a refit of the same object to a smaller grid,
    so the gallery read the old grid's patches."""
    from somad.model import SOMAD

    samples = data.train_samples(demo_root, "tiles")[:4]
    images, _ = data.load_split(samples, 64)
    model = SOMAD(image_size=64, d=8, epochs=1, cv_folds=2).fit(images, [str(s.path) for s in samples])
    assert len(explain.bmu_index(model).starts) == 16 * 16 + 1
    model.set_params(grid=(4, 4)).fit(images, [str(s.path) for s in samples])
    idx = explain.bmu_index(model)
    assert len(idx.starts) == 4 * 4 + 1
    assert np.array_equal(np.diff(idx.starts), np.bincount(model.train_bmu_.numpy(), minlength=16))
    j = int(np.argmax(np.diff(idx.starts)))
    got = explain.nearest_training_patches(model, *explain.neuron_position(j, (4, 4)), n=5)
    assert got and all(int(model.train_bmu_[p.patch]) == j for p in got)


def test_crop_patch_draws_box_around_the_cell():
    img = np.zeros((64, 64, 3), np.uint8)
    img[8:12, 4:8] = 200  # cell (2, 1) of a 16x16 map
    crop = explain.crop_patch(img, 2, 1, (16, 16), context=1, out_size=None, color=(255, 0, 0))
    assert crop.shape == (12, 12, 3)
    # the cell occupies crop pixels [4:8, 4:8]; its border is painted, its inside kept
    assert tuple(crop[4, 5]) == (255, 0, 0) and tuple(crop[7, 4]) == (255, 0, 0)
    assert tuple(crop[5, 5]) == (200, 200, 200)
    assert tuple(crop[0, 0]) == (0, 0, 0)
    big = explain.crop_patch(img, 0, 0, (16, 16), context=1, out_size=96)  # at the corner: padded
    assert big.shape == (96, 96, 3)
    # outside the image: the grey hatching, not black (a border crop of a dark image must not read as content)
    assert np.array_equal(big[:30, :30], explain.hatch((96, 96))[:30, :30])
    assert {tuple(v) for v in big[:30, :30].reshape(-1, 3)} == set(explain.PAD_COLORS)
    assert big[50:60, 50:60].max() == 0  # image pixels (black here) stay as they are


def test_patch_crops_unreadable_image_gives_none(dash_model_env):
    model = dash_model_env[2]
    refs = [explain.PatchRef(0, 0, "/nonexistent/x.png", 1, 1, 0.0)]
    assert explain.patch_crops(model, refs) == [None]


def test_neuron_click_gallery_on_56x56_som(tmp_path):
    """A neuron click (nearest 16 patches + crops) on a 56x56 SOM fitted on 100 images gives 16 crops,
    nearest first."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(100):
        p = tmp_path / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    n = 100 * 56 * 56
    model = SimpleNamespace(grid_=(56, 56), feature_shape_=(56, 56), image_size=224, train_paths_=paths,
                            train_bmu_=torch.randint(0, 56 * 56, (n,), generator=torch.Generator().manual_seed(0)),
                            train_bmu_dist_=torch.rand(n, generator=torch.Generator().manual_seed(1)))
    explain.bmu_index(model)  # built once when the model is loaded
    from functools import lru_cache

    load = lru_cache(maxsize=256)(data.load_image)
    for r, c in [(0, 0), (10, 20), (55, 55), (30, 3)]:
        refs = explain.nearest_training_patches(model, r, c, n=16)
        crops = explain.patch_crops(model, refs, load)
        assert len(crops) == 16 and all(cr.shape == (96, 96, 3) for cr in crops)
        assert [p.distance for p in refs] == sorted(p.distance for p in refs)
    # click latency is measured by benchmarks/dashboard_clicks.py, never asserted here


# ------------------------------------------------------------- pixel -> BMU
def test_explain_cell_matches_recomputed_scores(dash_model_env, dash_eval):
    model = dash_model_env[2]
    ev = dash_eval
    h, w = model.feature_shape_
    i = int(np.argmax(ev.scores))
    feats = model.features(ev.images[i:i + 1])[0]
    x = feats.permute(1, 2, 0).reshape(-1, feats.shape[0])
    idx, _ = exact_bmu(x, model.som_weights_, k=model.k)
    maha = mahalanobis_pairs(x, idx, model.means_, model.factors_)
    for r, c in [(0, 0), (h // 2, w // 3), (h - 1, w - 1)]:
        ex = explain.explain_cell(ev.patches, i, r, c, (h, w), model.grid_)
        p = r * w + c
        assert ex.bmu == explain.neuron_position(int(idx[p, 0]), model.grid_)
        assert [(a, b) for a, b, _ in ex.neighbours] == [explain.neuron_position(int(j), model.grid_)
                                                         for j in idx[p]]
        np.testing.assert_allclose([d for _, _, d in ex.neighbours], maha[p].numpy(), rtol=1e-3, atol=1e-3)
        assert ex.score == pytest.approx(float(maha[p].min()), rel=1e-3)
        assert ex.best == ex.neighbours[int(np.argmin([d for _, _, d in ex.neighbours]))][:2]
        # contributions to the distance to the best neuron sum to the squared score
        contrib = explain.explain_contributions(model, feats, r, c, ex.best)
        assert contrib.shape == (feats.shape[0],)
        assert contrib.sum() == pytest.approx(ex.score ** 2, rel=1e-3)
    with pytest.raises(ValueError, match="is outside the .* feature map"):
        explain.explain_cell(ev.patches, i, h, 0, (h, w), model.grid_)


def test_mahalanobis_contributions_identity_and_correlated():
    x = np.array([1.0, 2.0, -1.0])
    mu = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(explain.mahalanobis_contributions(x, mu, np.eye(3)), [1.0, 4.0, 4.0])
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]])
    a = np.linalg.cholesky(np.linalg.inv(cov)).T  # A^T A = C^-1
    terms = explain.mahalanobis_contributions(x, mu, a)
    d = x - mu
    assert terms.sum() == pytest.approx(d @ np.linalg.inv(cov) @ d)
    top = explain.top_contributions(terms, channel_idx=[10, 20, 30], n=2)
    assert [t[0] for t in top] == list(np.argsort(-terms)[:2])
    assert top[0][1] == [10, 20, 30][top[0][0]]
    assert top[0][3] == pytest.approx(terms[top[0][0]] / terms.sum())


# ---------------------------------------------------------------- test hits
def test_neuron_test_hits_and_cells(dash_model_env, dash_eval):
    model = dash_model_env[2]
    ev = dash_eval
    n = len(ev.labels)
    h, w = model.feature_shape_
    bmu = ev.patches.neighbours[:, 0].numpy().reshape(n, h * w)
    scores = ev.patches.scores.numpy().reshape(n, h * w)
    j = int(np.bincount(bmu.ravel()).argmax())
    nr = explain.neuron_position(j, model.grid_)
    hits = explain.neuron_test_hits(ev.patches, nr, model.grid_, n)
    assert hits.hits.tolist() == (bmu == j).sum(1).tolist()
    top = int(hits.by_hits[0])
    assert hits.hits[top] == hits.hits.max()
    best = int(hits.by_score[0])
    assert hits.max_score[best] == pytest.approx(scores[bmu == j].max())
    cells = explain.neuron_cells(ev.patches, nr, model.grid_, top, (h, w))
    assert cells.shape == (h, w) and int(cells.sum()) == hits.hits[top]
    assert explain.test_hit_map(ev.patches, model.grid_).sum() == n * h * w


# ------------------------------------------------------------------ outcomes
def test_outcomes_counts_and_failing_order():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.6, 0.4])
    assert explain.outcomes(labels, scores, 0.5).tolist() == ["TN", "FP", "TP", "FN", "FP", "FN"]
    assert explain.outcome_counts(labels, scores, 0.5) == {"TP": 1, "FP": 2, "FN": 2, "TN": 1}
    assert explain.outcome_counts(labels, scores, 1.0) == {"TP": 0, "FP": 0, "FN": 3, "TN": 3}
    # FP by descending score, then FN by ascending score
    assert explain.failing_order(labels, scores, 0.5).tolist() == [1, 4, 3, 5]
    assert explain.failing_order(labels, scores, 0.0).tolist() == [1, 4, 0]


def test_channel_label_names_the_backbone_stage(dash_model_env):
    model = dash_model_env[2]
    per_stage = model.extractor.body.feature_info.channels()
    starts = np.cumsum([0, *per_stage])
    for dim in range(len(model.channel_idx_)):
        ch = int(model.channel_idx_[dim])
        stage = int(np.searchsorted(starts, ch, side="right")) - 1
        expected = f"backbone channel {ch} (stride-{(4, 8, 16)[stage]} stage, channel {ch - starts[stage]})"
        assert explain.channel_label(model, dim) == expected
