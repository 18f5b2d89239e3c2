"""SOM: training quality, errors, U-matrix, grid geometry, neighbourhood (fast, synthetic data)."""
import math

import numpy as np
import pytest
import torch

from somad.som import (SOM, _neighbourhood_sums, exact_bmu, grid_coordinates, hit_map, topographic_error,
                       u_matrix)


def _blobs(n=1500, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, d, generator=g) * 4
    return centres[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, d, generator=g)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_qe_decreases_vs_init_and_te_in_unit_interval(topology):
    x = _blobs()
    som = SOM((6, 7), topology=topology, epochs=8, device=torch.device("cpu"))
    init = x.mean(0) + 0.01 * torch.randn(42, 5, generator=torch.Generator().manual_seed(0))
    som.fit(x, init=init)
    qe0 = float(exact_bmu(x, init)[1].mean())
    assert som.quantization_error_ < 0.8 * qe0
    assert 0.0 <= som.topographic_error_ <= 1.0
    assert som.quantization_error_ == pytest.approx(float(som.bmu_dist_.mean()))
    assert som.weights_.shape == (42, 5) and som.bmu_.shape == (1500,)


def test_local_search_close_to_exact_search():
    x = _blobs(seed=1)
    init = x[:64].clone()
    local = SOM((8, 8), epochs=6, search_radius=2).fit(x, init=init)
    exact = SOM((8, 8), epochs=6, search_radius=None).fit(x, init=init)
    assert local.quantization_error_ <= 1.1 * exact.quantization_error_


def test_separable_neighbourhood_equals_dense_kernel():
    som = SOM((5, 7))
    g = torch.Generator().manual_seed(0)
    sums, counts = torch.randn(35, 4, generator=g), torch.rand(35, generator=g)
    dense = _neighbourhood_sums(som, sums, counts, 1.3, som._grid_d2(torch.device("cpu")))
    sep = _neighbourhood_sums(som, sums, counts, 1.3, None)
    torch.testing.assert_close(sep[0], dense[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sep[1], dense[1], rtol=1e-5, atol=1e-5)


def test_u_matrix_hand_computed_2x2():
    w = np.array([[0, 0], [3, 4], [0, 1], [6, 8]], dtype=np.float32)  # neurons (0,0) (0,1) (1,0) (1,1)
    # rectangular 8-neighbourhood: every neuron neighbours the other three
    d01, d02, d03, d12, d13, d23 = 5, 1, 10, math.hypot(3, 3), 5, math.hypot(6, 7)
    expected = np.array([[(d01 + d02 + d03) / 3, (d01 + d12 + d13) / 3],
                         [(d02 + d12 + d23) / 3, (d03 + d13 + d23) / 3]])
    np.testing.assert_allclose(u_matrix(w, (2, 2)), expected, rtol=1e-6)


def test_hexagonal_six_neighbours_at_distance_one():
    xy = grid_coordinates((5, 5), "hexagonal")
    for j in (6, 7, 12, 13, 18):  # interior neurons, even and odd rows
        dist = np.linalg.norm(xy - xy[j], axis=1)
        assert np.sum(np.isclose(dist, 1.0)) == 6
        assert np.sort(dist)[7] > 1.01
    with pytest.raises(ValueError):
        grid_coordinates((2, 2), "triangular")


def test_topographic_error_and_hit_map():
    top2 = torch.tensor([[0, 1], [0, 4], [0, 8], [5, 3]])  # 3x3 grid: adjacent, diagonal, far, far
    assert topographic_error(top2, (3, 3)) == pytest.approx(0.5)
    hits = hit_map(torch.tensor([0, 0, 8, 4]), (3, 3))
    assert hits.tolist() == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_minisom_backend_runs_and_bad_params_raise():
    x = _blobs(n=200)
    som = SOM((4, 4), epochs=2, backend="minisom").fit(x, init=x[:16].clone())
    assert np.isfinite(som.quantization_error_)
    with pytest.raises(ValueError):
        SOM((4, 4), epochs=0)
