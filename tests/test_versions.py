"""Teaching a model (SOMAD.partial_fit) and its versions (somad.versions): exactness against a fit with
the same SOM on the enlarged training set, provenance, concurrency, read-only folders, old formats."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from somad import data
from somad.model import SOMAD
from somad.patches import PatchMemory
from somad.som import exact_bmu

from conftest import TINY


def _new_normal(images: np.ndarray) -> np.ndarray:
    """The same parts under dimmer, warmer light: a pixel-wise colour gain."""
    return np.clip(images.astype(np.float32) * np.array([0.8, 0.7, 0.55]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def split(demo_root):
    samples = data.train_samples(demo_root, "tiles")
    images, _ = data.load_split(samples, TINY["image_size"])
    paths = [str(s.path) for s in samples]
    return images[:8], paths[:8], _new_normal(images[8:11]), [f"new/{i}.png" for i in range(3)]


@pytest.fixture(scope="module")
def parent(split):
    images, paths, _, _ = split
    return SOMAD(**TINY).fit(images, paths)


def fixed_som_refit(parent: SOMAD, images: np.ndarray, paths: list[str], indices: np.ndarray) -> SOMAD:
    """What ``fit`` does on ``images`` with the SOM held at ``parent``'s weights: features, exact BMUs
    (fit's final search), Gaussians from statistics accumulated over all patches, and the cross-fitted
    threshold over training images ``indices`` (the parent's plus the added ones), searched afresh."""
    ref = SOMAD(**parent.get_params())
    for name in ("feature_shape_", "grid_", "channel_idx_", "stage_offsets_", "intensity_", "som_train_images_"):
        setattr(ref, name, copy.deepcopy(getattr(parent, name)))
    ref._extractor, ref._extractor_key = parent._extractor, parent._extractor_key
    ref.som_weights_ = parent.som_weights_
    ref.n_train_, ref.train_paths_ = len(images), list(paths)
    feats = ref.extractor.extract(images, 4, ref.torch_device)
    store = PatchMemory(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]))
    near, dist = exact_bmu(store.tensor(), ref.som_weights_, k=2)
    ref.train_bmu_, ref.train_bmu_dist_ = near[:, 0], dist[:, 0]
    stats = ref._fit_gaussians(store, None)
    ref.threshold_indices_ = np.asarray(indices)
    scores, maps, _ = ref._cross_fitted_scores(store.take(ref._image_rows(ref.threshold_indices_)), None, stats,
                                               None)
    ref._set_threshold(scores, maps)
    return ref


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


def test_partial_fit_equals_fixed_som_refit(parent, split):
    images, paths, new, new_paths = split
    taught = copy.deepcopy(parent).partial_fit(new, new_paths)
    indices = np.concatenate([parent.threshold_indices_, [8, 9, 10]])
    ref = fixed_som_refit(parent, np.concatenate([images, new]), paths + new_paths, indices)
    assert taught.n_train_ == 11 and taught.som_train_images_ == 8
    assert taught.train_paths_[-3:] == new_paths
    assert _rel(taught.means_, ref.means_) < 1e-4
    assert _rel(taught.covariances_, ref.covariances_) < 1e-4
    assert torch.equal(taught.counts_, ref.counts_)
    assert torch.equal(taught.train_bmu_, ref.train_bmu_)
    assert abs(taught.threshold_ - ref.threshold_) <= 1e-4 * abs(ref.threshold_)
    np.testing.assert_allclose(taught.train_scores_, ref.train_scores_, rtol=1e-4)
    np.testing.assert_allclose(taught.pixel_range_, ref.pixel_range_, rtol=1e-4)
    # the new normal moved the model: a test that cannot fail would not see this
    assert _rel(taught.covariances_, parent.covariances_) > 1e-3
    assert taught.threshold_ != parent.threshold_
    assert len(taught.train_scores_) == len(parent.train_scores_) + 3
    assert taught.quantization_error_ == pytest.approx(float(ref.train_bmu_dist_.mean()), rel=1e-5)


def test_partial_fit_twice_equals_once(parent, split):
    _, _, new, new_paths = split
    once = copy.deepcopy(parent).partial_fit(new, new_paths)
    twice = copy.deepcopy(parent).partial_fit(new[:1], new_paths[:1]).partial_fit(new[1:], new_paths[1:])
    assert _rel(twice.covariances_, once.covariances_) < 1e-4
    assert twice.threshold_ == pytest.approx(once.threshold_, rel=1e-4)


def test_partial_fit_refuses_other_arrays(parent):
    from somad.errors import ParameterError

    with pytest.raises(ParameterError, match="uint8"):
        copy.deepcopy(parent).partial_fit(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ParameterError, match="paths"):
        copy.deepcopy(parent).partial_fit(np.zeros((2, 64, 64, 3), np.uint8), ["a.png"])
