"""Scoring: exact kNN, grouped Mahalanobis, blur (fast, synthetic data)."""
import numpy as np
import pytest
import torch

from somad.scoring import (IMAGE_SCORES, PatchScores, anomaly_maps, gaussian_blur, image_scores, mahalanobis_pairs,
                           score_patches)
from somad.som import exact_bmu


def _model(m=37, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, d, generator=g)
    means = w + 0.1 * torch.randn(m, d, generator=g)
    a = torch.randn(m, d, d, generator=g) * 0.3
    covs = a @ a.transpose(1, 2) + 0.5 * torch.eye(d)
    factors = torch.linalg.inv(torch.linalg.cholesky(covs))
    return w, means, covs, factors


def test_exact_knn_equals_brute_force():
    w, *_ = _model()
    x = torch.randn(500, w.shape[1], generator=torch.Generator().manual_seed(1))
    idx, dist = exact_bmu(x, w, k=4, chunk=64)
    full = torch.cdist(x.double(), w.double())
    ref_d, ref_i = full.sort(dim=1)
    assert torch.equal(idx, ref_i[:, :4])
    np.testing.assert_allclose(dist.numpy(), ref_d[:, :4].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_segment", [1, 4, 64])
def test_grouped_mahalanobis_equals_naive(max_segment):
    w, means, covs, factors = _model()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, w.shape[1], generator=g)
    neurons = torch.randint(0, len(w), (300, 4), generator=g)
    neurons[:50] = 3  # one neuron with many pairs: several segments
    got = mahalanobis_pairs(x, neurons, means, factors, max_segment=max_segment, block_bytes=4096)
    prec = np.linalg.inv(covs.double().numpy())
    xn, mn = x.double().numpy(), means.double().numpy()
    ref = np.empty((300, 4))
    for i in range(300):
        for j in range(4):
            diff = xn[i] - mn[neurons[i, j]]
            ref[i, j] = np.sqrt(diff @ prec[neurons[i, j]] @ diff)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4)


def test_score_patches_is_min_over_knn_and_chunking_invariant():
    w, means, covs, factors = _model()
    x = torch.randn(200, w.shape[1], generator=torch.Generator().manual_seed(3))
    ps = score_patches(x, w, means, factors, k=4, chunk=37)
    assert isinstance(ps, PatchScores)
    whole = score_patches(x, w, means, factors, k=4)
    torch.testing.assert_close(ps.scores, whole.scores)
    torch.testing.assert_close(ps.scores, ps.mahalanobis.min(1).values)
    assert torch.equal(ps.neighbours, exact_bmu(x, w, k=4)[0])
    assert torch.equal(ps.best, ps.neighbours.gather(1, ps.mahalanobis.argmin(1, keepdim=True))[:, 0])
    # k larger than the map is clipped
    assert score_patches(x[:5], w[:3], means[:3], factors[:3], k=10).neighbours.shape == (5, 3)


def test_score_patches_device_parameter_cpu():
    w, means, covs, factors = _model()
    dev = torch.device("cpu")
    x = torch.randn(64, w.shape[1]).to(dev)
    ps = score_patches(x, w.to(dev), means.to(dev), factors.to(dev))
    assert ps.scores.device == dev and ps.scores.dtype == torch.float32


def test_blur_matches_scipy_mirror():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    maps = rng.random((2, 40, 40)).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(maps), 2.0).numpy()
    # torch 'reflect' padding excludes the edge sample: scipy's 'mirror' mode
    ref = np.stack([ndimage.gaussian_filter(m.astype(np.float64), 2.0, mode="mirror", truncate=4.0) for m in maps])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    other = np.stack([ndimage.gaussian_filter(m.astype(np.float64), 2.0, mode="reflect") for m in maps])
    assert np.abs(got - other).max() > 1e-3
    assert gaussian_blur(torch.from_numpy(maps), 0) is not None


def test_anomaly_maps_shape_and_constant_map():
    maps = anomaly_maps(torch.full((3, 8, 8), 2.5), 32, blur_sigma=4.0)
    assert maps.shape == (3, 32, 32)
    torch.testing.assert_close(maps, torch.full((3, 32, 32), 2.5))


def test_image_score_rules_on_known_maps():
    # 20 x 20 = 400 pixels: top_mean averages the 20 hottest (5 %), max takes one
    maps = torch.ones(2, 20, 20)
    maps[0, :2, :10] = 3.0
    maps[0, 5, 5] = 23.0        # 23 + 19 * 3 over 20 pixels = 4.0
    maps[1, 7, 7] = 41.0        # a lone hot pixel: (41 + 19) / 20 = 3.0
    patch = torch.zeros(2, 5, 5)
    torch.testing.assert_close(image_scores("top_mean", patch, maps), torch.tensor([4.0, 3.0]))
    torch.testing.assert_close(image_scores("max", patch, maps), torch.tensor([23.0, 41.0]))
    # fewer than 20 pixels: top_mean is the maximum
    small = torch.tensor([[[1.0, 7.0], [3.0, 2.0]]])
    assert image_scores("top_mean", small, small).item() == 7.0
    assert set(IMAGE_SCORES) == {"max", "top_mean"}


@pytest.mark.parametrize("shape,size,sigma", [((3, 8, 8), 32, 4.0), ((2, 6, 10), 40, 2.5), ((1, 5, 5), 20, 0.0)])
def test_anomaly_maps_equal_upsampling_then_blur(shape, size, sigma):
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(5)
    patch = torch.rand(shape, generator=g) * 30
    want = gaussian_blur(F.interpolate(patch[:, None], size=(size, size), mode="bilinear",
                                       align_corners=False)[:, 0], sigma)
    got = anomaly_maps(patch, size, sigma)
    assert got.shape == (shape[0], size, size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
