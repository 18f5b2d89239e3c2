"""SOM: training quality, errors, U-matrix, grid geometry, neighbourhood (fast, synthetic data)."""
import math

import numpy as np
import pytest
import torch

from minisom import MiniSom

from somad.som import (HEX_NEIGHBOUR_LIMIT, SOM, _minisom_lattice, _neighbourhood_sums, _new_minisom, _set_codebook,
                       exact_bmu, grid_coordinates, hit_map, neighbour_pairs, topographic_error, u_matrix, smallest_k)


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
    with pytest.raises(ValueError, match="topology must be one of"):
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
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        SOM((4, 4), epochs=0)


def _coordinate_neighbours(xy, j):
    """Indices within one hexagonal neighbour distance of ``xy[j]``."""
    dist = np.linalg.norm(xy - xy[j], axis=1)
    return {int(i) for i in np.flatnonzero((dist > 0) & (dist < HEX_NEIGHBOUR_LIMIT))}


def _minisom_xy(ms):
    xx, yy = ms.get_euclidean_coordinates()
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def test_hexagonal_neighbours_of_2_2_on_4x5_somad_minisom_and_backend():
    somad_set = {(1, 1), (1, 2), (2, 1), (2, 3), (3, 1), (3, 2)}
    pairs = neighbour_pairs((4, 5), "hexagonal")
    centre = 2 * 5 + 2
    somad = {int(b) for a, b in pairs if a == centre} | {int(a) for a, b in pairs if b == centre}
    assert {divmod(j, 5) for j in somad} == somad_set
    # MiniSom's own hexagonal lattice on the same 4x5 grid is the transposed graph ...
    raw = _coordinate_neighbours(_minisom_xy(MiniSom(4, 5, 2, topology="hexagonal")), centre)
    assert {divmod(j, 5) for j in raw} == {(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 2)}
    # ... so the backend builds MiniSom(5, 4) and maps its neurons to somad's: the same neighbours.
    order = _minisom_lattice((4, 5), "hexagonal").ravel()
    ms = _new_minisom((4, 5), "hexagonal", 2, sigma=1.0, learning_rate=1.0)
    backend = _coordinate_neighbours(_minisom_xy(ms), int(np.flatnonzero(order == centre)[0]))
    assert {divmod(int(order[j]), 5) for j in backend} == somad_set


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
@pytest.mark.parametrize("shape", [(4, 5), (5, 4), (3, 3), (6, 6)])
def test_minisom_lattice_has_somad_neuron_distances(shape, topology):
    order = _minisom_lattice(shape, topology).ravel()
    assert sorted(order.tolist()) == list(range(shape[0] * shape[1]))
    xy = np.empty((len(order), 2))
    xy[order] = _minisom_xy(_new_minisom(shape, topology, 2, sigma=1.0, learning_rate=1.0))
    ref = grid_coordinates(shape, topology)
    np.testing.assert_allclose(np.linalg.norm(xy[:, None] - xy[None], axis=2),
                               np.linalg.norm(ref[:, None] - ref[None], axis=2), atol=1e-12)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
@pytest.mark.parametrize("shape", [(6, 6), (5, 6)])  # even and odd row counts: mirrored and shifted lattice
def test_minisom_backend_matches_torch_backend(shape, topology):
    """Same data, init and schedule (sigma 2 -> 0.5, lr 0.9 -> 0.3): >= 99% same BMUs, weights within 1e-5.

    Before the backend ran one MiniSom epoch per schedule step on somad's lattice, these agreed on
    22-92% of the BMUs and their weights differed by up to 0.57.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 3, generator=g)
    init = x[torch.randperm(400, generator=g)[:shape[0] * shape[1]]].clone()
    kw = dict(topology=topology, sigma=2.0, sigma_final=0.5, learning_rate=0.9, learning_rate_final=0.3,
              epochs=6, search_radius=None)
    calls = []
    ref = SOM(shape, backend="torch", **kw).fit(x, init=init)
    ms = SOM(shape, backend="minisom", **kw).fit(x, init=init, progress=lambda *a: calls.append(a))
    assert float((ms.bmu_ == ref.bmu_).float().mean()) >= 0.99
    torch.testing.assert_close(ms.weights_, ref.weights_, rtol=0, atol=1e-5)
    assert calls == [(e, 6) for e in range(1, 7)]


def test_set_codebook_refuses_a_minisom_whose_weights_are_a_copy():
    ms = _new_minisom((2, 3), "rectangular", 4, sigma=1.0, learning_rate=1.0)
    codebook = np.arange(24, dtype=np.float64).reshape(3, 2, 4)
    _set_codebook(ms, codebook)
    np.testing.assert_array_equal(ms.get_weights(), codebook)

    class CopyingMiniSom:
        def get_weights(self):
            return np.zeros((3, 2, 4))

    with pytest.raises(RuntimeError, match="get_weights\\(\\) returns a copy"):
        _set_codebook(CopyingMiniSom(), codebook)


@pytest.mark.parametrize("m", [3136, 3000, 700, 100])
def test_smallest_k_equals_topk(m):
    """Exact against ``topk``: random rows, rows whose k smallest share one block or sit in the
    columns past the last whole block, and tied rows (the tied values are equal, whichever column)."""
    g = torch.Generator().manual_seed(m)
    d = torch.rand(300, m, generator=g)
    c = min(128, m - 4)
    d[:100, c:c + 4] = -1.0 - torch.rand(100, 4, generator=g)      # all four in one block
    d[100:200, -3:] = -1.0 - torch.rand(100, 3, generator=g)     # in the tail (when m % 64 != 0)
    d[200:250] = torch.round(d[200:250] * 20) / 20                 # heavy ties
    ref = d.topk(4, dim=1, largest=False)
    val, idx = smallest_k(d, 4)
    assert torch.equal(val, ref.values)
    assert torch.equal(d.gather(1, idx), val)                       # the columns hold those values
    assert (idx.sort(1).values.diff(dim=1) > 0).all()               # four distinct columns
    untied = torch.ones(300, dtype=torch.bool)
    untied[200:250] = False
    assert torch.equal(idx[untied], ref.indices[untied])
