"""Regions of the map (somad.regions) against oracles: connectivity by an independent breadth-first
search on the lattice, planted structure recovered, cuts equal to scikit-learn's own, shares and
breakdowns against brute-force loops; the region figure draws on every grid shape."""
from __future__ import annotations

import re
from collections import deque

import numpy as np
import pytest
import torch

from somad import figures, regions


def _lattice_neighbours(r: int, c: int, shape: tuple[int, int], topology: str) -> list[tuple[int, int]]:
    """Grid neighbours written out by hand (not from somad.som): 8 on rectangular grids; on hexagonal
    grids (odd rows shifted right by half a cell) the 6 of the offset-row layout."""
    rows, cols = shape
    if topology == "rectangular":
        steps = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    elif r % 2 == 0:
        steps = [(0, -1), (0, 1), (-1, -1), (-1, 0), (1, -1), (1, 0)]
    else:
        steps = [(0, -1), (0, 1), (-1, 0), (-1, 1), (1, 0), (1, 1)]
    return [(r + dr, c + dc) for dr, dc in steps if 0 <= r + dr < rows and 0 <= c + dc < cols]


def _connected(labels: np.ndarray, topology: str) -> bool:
    """Every region one piece: a BFS from one neuron of each region reaches all of its neurons."""
    shape = labels.shape
    for region in np.unique(labels):
        cells = {tuple(p) for p in np.argwhere(labels == region)}
        start = next(iter(cells))
        seen, todo = {start}, deque([start])
        while todo:
            for nb in _lattice_neighbours(*todo.popleft(), shape, topology):
                if nb in cells and nb not in seen:
                    seen.add(nb)
                    todo.append(nb)
        if seen != cells:
            return False
    return True


def _weights(shape, d=5, seed=0):
    """Smooth weights with some structure (a SOM-like codebook): a gradient plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    r, c = np.divmod(np.arange(rows * cols), cols)
    base = np.stack([np.sin(r / 3.0), np.cos(c / 4.0), r / max(rows, 1), c / max(cols, 1)], 1)
    return np.c_[base, rng.normal(0, 0.3, (rows * cols, d - 4))].astype(np.float32)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (6, 7), (11, 8)])
@pytest.mark.parametrize("n", [None, 1, 3, 6])
def test_region_labels_connected(shape, topology, n):
    w = _weights(shape)
    bmu = np.random.default_rng(1).integers(0, shape[0] * shape[1], 500)
    reg = regions.map_regions(w, shape, topology, bmu, n)
    assert reg.labels.shape == shape
    assert sorted(np.unique(reg.labels)) == list(range(reg.n))
    if n is not None:
        assert reg.n == n and not reg.auto
    else:
        best = max(reg.silhouette.values())  # the fewest regions within the tolerance of the best silhouette
        assert reg.auto and reg.n == min(k for k, v in reg.silhouette.items() if v >= best - 0.01)
    assert _connected(reg.labels, topology)
    hits = np.bincount(bmu, minlength=shape[0] * shape[1])
    share = np.array([hits[reg.labels.ravel() == k].sum() for k in range(reg.n)]) / hits.sum()
    np.testing.assert_allclose(reg.train_share, share)
    assert np.all(np.diff(reg.train_share) <= 0)  # R1 holds the most training patches
    for k, (r, c) in enumerate(reg.typical):
        assert reg.labels[r, c] == k


def test_large_grid_regions_connected():
    shape, topology = (100, 100), "hexagonal"
    reg = regions.map_regions(_weights(shape, d=4), shape, topology, np.arange(10000), 5)
    assert reg.n == 5 and _connected(reg.labels, topology)


def test_tiny_maps_have_one_region():
    reg = regions.map_regions(np.zeros((1, 3), np.float32), (1, 1), "rectangular", np.zeros(4, int))
    assert reg.n == 1 and reg.labels.tolist() == [[0]] and reg.typical == [(0, 0)]
    with pytest.raises(ValueError, match="between 1 and 2"):
        regions.map_regions(np.zeros((2, 3), np.float32), (1, 2), "rectangular", np.zeros(4, int), 3)


def test_auto_finds_planted_bands():
    """Three vertical bands of clearly different weights: the silhouette picks 3 and the bands come back."""
    shape = (12, 12)
    rng = np.random.default_rng(0)
    band = np.arange(144) % 12 // 4
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], np.float32)
    w = centres[band] + rng.normal(0, 0.1, (144, 3)).astype(np.float32)
    reg = regions.map_regions(w, shape, "rectangular", np.arange(144))
    assert reg.n == 3
    for b in range(3):
        assert len(np.unique(reg.labels.ravel()[band == b])) == 1


def test_cut_equals_sklearn():
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    shape = (7, 9)
    w = _weights(shape, seed=3)
    children = regions.merge_tree(w, shape, "hexagonal")
    for k in (2, 4, 7):
        ours = regions.cut_tree(children, 63, k)
        ref = AgglomerativeClustering(n_clusters=k, linkage="ward",
                                      connectivity=regions.connectivity(shape, "hexagonal")).fit(w).labels_
        assert adjusted_rand_score(ref, ours) == 1.0


def _toy():
    """A 2x3 map in 2 regions, 2 test images of 2x2 feature cells."""
    reg = regions.Regions(np.array([[0, 0, 1], [0, 1, 1]]), 2, False, {}, np.array([.6, .4]), [(0, 0), (1, 2)],
                          np.array([3, 3]))
    bmu = np.array([0, 2, 5, 1, 4, 4, 3, 0])
    scores = np.array([1.0, 5.0, 2.0, 0.5, 7.0, 3.0, 1.0, 2.5])
    defect = np.array([[[False, True], [False, False]], [[True, True], [False, False]]])
    return reg, bmu, scores, defect


def test_region_mass_brute_force():
    reg, bmu, scores, defect = _toy()
    lab = reg.labels.ravel()
    mass = regions.region_mass(reg, bmu, scores, 2.0, defect)
    excess = [max(0.0, s - 2.0) for s in scores]
    per = [sum(e for e, b in zip(excess, bmu) if lab[b] == k) for k in range(2)]
    np.testing.assert_allclose(mass.mass_share, np.array(per) / sum(excess))
    d_lab = [lab[b] for b, d in zip(bmu, defect.ravel()) if d]
    np.testing.assert_allclose(mass.defect_share, [d_lab.count(0) / 3, d_lab.count(1) / 3])
    np.testing.assert_allclose(mass.test_share, [np.mean(lab[bmu] == 0), np.mean(lab[bmu] == 1)])
    assert mass.n_defect_cells == 3 and mass.total_mass == pytest.approx(sum(excess))
    assert regions.region_mass(reg, bmu, scores, 2.0, None).defect_share is None


def test_image_breakdown_brute_force():
    reg, bmu, scores, defect = _toy()
    lab = reg.labels.ravel()
    b = regions.image_breakdown(reg, bmu, scores, 1, (2, 2), 2.0, defect[1])
    img_bmu, img_s = bmu[4:], scores[4:]  # labels 1, 1, 0, 0
    assert b.cells.tolist() == [2, 2]
    np.testing.assert_allclose(b.max_score, [max(img_s[lab[img_bmu] == k]) for k in range(2)])
    excess = np.clip(img_s - 2.0, 0, None)  # 5, 1, 0, 0.5
    np.testing.assert_allclose(b.mass_share, [0.5 / 6.5, 6 / 6.5])
    assert b.defect_cells.tolist() == [0, 2] and b.hottest == 1
    assert "92% of its anomaly mass lands in R2" in regions.breakdown_sentence(reg, b, "x.png")
    marks = regions.cells_on_map(bmu, 1, (2, 2), defect[1], (2, 3))
    assert marks.ravel()[4] == 2 and marks.sum() == 2


def test_region_positions_brute_force():
    reg, bmu, _, _ = _toy()
    major, agree = regions.region_positions(reg, bmu, (2, 2))
    lab = reg.labels.ravel()[bmu].reshape(2, 4)
    for p in range(4):
        votes = np.bincount(lab[:, p], minlength=2)
        assert major.ravel()[p] == votes.argmax() and agree.ravel()[p] == votes.max() / 2


def test_cell_masks_any_pixel():
    m = np.zeros((1, 8, 8), bool)
    m[0, 5, 2] = True
    cells = regions.cell_masks(m, (2, 2))
    assert cells[0].tolist() == [[False, False], [True, False]]


@pytest.mark.parametrize("shape,topology", [((1, 12), "rectangular"), ((1, 12), "hexagonal"),
                                            ((100, 100), "rectangular"), ((100, 100), "hexagonal")])
def test_region_map_draws(shape, topology):
    labels = np.arange(shape[0] * shape[1]).reshape(shape) * 4 // (shape[0] * shape[1])
    marks = np.zeros(shape, int)
    marks[0, 3] = 5
    fig = figures.region_map(labels, topology, "r", typical=[(0, 0), (0, 3), (0, 6), (0, 9)][:4], marks=marks,
                             selected=(0, 1))
    click = fig.data[figures.CLICK_TRACE]
    assert len(click.x) == shape[0] * shape[1]
    assert fig.data[2].customdata.tolist() == [5]  # the marked neuron and its count
    assert [t for t in fig.data[3].text] == ["<b>R1</b>", "<b>R2</b>", "<b>R3</b>", "<b>R4</b>"]


def test_region_map_looked_at_only_is_one_heatmap_with_its_own_hover():
    labels = np.arange(12).reshape(3, 4) // 3
    fig = figures.region_map(labels, "rectangular", "r", hover={"hits": np.full((3, 4), 7.0)}, clickable=False,
                             typical=[(0, 0), (0, 3), (1, 2), (2, 1)])
    heat = fig.data[0]
    assert heat.type == "heatmap" and [t.type for t in fig.data[1:]] == ["scatter"]  # no marker per neuron
    assert "region R%{customdata[0]:.0f}" in heat.hovertemplate and "hits %{customdata[1]" in heat.hovertemplate
    assert np.asarray(heat.customdata)[2, 3].tolist() == [4, 7]  # neuron (2, 3): region R4, 7 hits
    assert (heat.zmin, heat.zmax) == (-0.5, 3.5) and list(heat.colorbar.ticktext) == ["R1", "R2", "R3", "R4"]


def test_region_image_tints_cells():
    img = np.zeros((8, 8, 3), np.uint8)
    out = figures.region_image(img, np.array([[0, 1], [1, 0]]), alpha=1.0)
    assert tuple(out[0, 0]) == tuple(int(figures.REGION_COLORS[0][i:i + 2], 16) for i in (1, 3, 5))
    assert tuple(out[0, 7]) == tuple(int(figures.REGION_COLORS[1][i:i + 2], 16) for i in (1, 3, 5))


def test_model_regions_on_fitted_model(tiny_model):
    reg = regions.model_regions(tiny_model)
    assert 3 <= reg.n <= 8 and _connected(reg.labels, tiny_model.topology)
    assert reg.train_share.sum() == pytest.approx(1.0)
    hits = torch.bincount(tiny_model.train_bmu_.cpu(), minlength=256).numpy()
    for r, c in reg.typical:
        assert hits[r * 16 + c] > 0


def _caption_facts(text: str) -> tuple[int, int, dict, float, set]:
    """What a :func:`regions.how_chosen` caption claims, read back from its words: the count it opens with,
    the count the rule gives, the printed silhouettes, the printed cutoff and the candidates said to qualify."""
    head = int(re.match(r"(\d+) regions, chosen automatically\.", text).group(1))
    printed = {int(k): float(v) for k, v in re.findall(r"(\d+): (-?\d+\.\d+)", text.split("The best")[0])}
    cutoff = float(re.search(r"at least (-?\d+\.\d+)", text).group(1))
    rule = re.search(r"\): (\d+) \((?:the only one that does|([\d, ]+) also qualif\w+)\)\.$", text)
    also = {int(k) for k in rule.group(2).split(", ")} if rule.group(2) else set()
    return head, int(rule.group(1)), printed, cutoff, also | {int(rule.group(1))}


def _check_caption(reg) -> None:
    head, rule_n, printed, cutoff, qualifying = _caption_facts(regions.how_chosen(reg))
    assert head == rule_n == reg.n
    assert set(printed) == set(reg.silhouette)
    best = max(reg.silhouette.values())
    assert qualifying == {k for k, v in reg.silhouette.items() if v >= best - regions.SILHOUETTE_TOLERANCE}
    assert reg.n == min(qualifying)
    # the numbers as printed tell the same story as the words
    assert qualifying == {k for k, v in printed.items() if v >= cutoff}


def _random_weights(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(shape[0] * shape[1], 8)).astype(np.float32)


def _bands(shape=(12, 12)):
    rng = np.random.default_rng(0)
    band = np.arange(shape[0] * shape[1]) % shape[1] // (shape[1] // 3)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], np.float32)
    return centres[band] + rng.normal(0, 0.1, (len(band), 3)).astype(np.float32)


@pytest.mark.parametrize("weights,shape,structure", [
    (_bands(), (12, 12), "strong"),  # clear clusters: silhouette near 1
    (_weights((11, 8)), (11, 8), None),  # smooth gradient
    (_random_weights((10, 10)), (10, 10), "none"),  # no structure at all
])
def test_caption_count_is_the_chosen_count(weights, shape, structure):
    reg = regions.map_regions(weights, shape, "rectangular", np.arange(shape[0] * shape[1]))
    _check_caption(reg)
    best = max(reg.silhouette.values())
    if structure is not None:
        assert regions.structure(best) == structure
    note = regions.structure_note(reg)
    if regions.structure(best) in ("strong", "reasonable"):
        assert note is None
    else:
        assert f"{best:.3f}" in note and "Kaufman & Rousseeuw 1990" in note
    if structure == "none":
        assert best <= 0.25 and "no substantial cluster structure" in note and "convenience partition" in note
    if structure == "strong":
        assert best > 0.7 and reg.n == 3


def test_caption_on_fitted_demo_models(tiny_model, dash_model_env):
    """The demo tiles models (16x16 maps): the caption's count is the count drawn."""
    for model in (tiny_model, dash_model_env[2]):
        reg = regions.model_regions(model)
        _check_caption(reg)
        assert reg.n == len(np.unique(reg.labels))


def test_caption_where_rounding_would_contradict_the_rule():
    """Silhouettes 0.0149 and 0.0251 print as 0.01 and 0.03 at two decimals, which reads as if 3 regions were
    within 0.01 of the best; the caption prints enough decimals that its numbers agree with the rule."""
    scores = {3: 0.0149, 4: 0.0251, 5: 0.0200, 6: 0.0}
    reg = regions.Regions(np.zeros((2, 2), np.int64), regions.choose_n(scores), True, scores, np.ones(1), [(0, 0)],
                          np.ones(1, np.int64))
    assert reg.n == 4
    _check_caption(reg)
    assert "3: 0.0149" in regions.how_chosen(reg)
    manual = regions.Regions(reg.labels, 5, False, {}, reg.train_share, reg.typical, reg.neurons)
    assert regions.how_chosen(manual) == "5 regions, as chosen by the user." and regions.structure_note(manual) is None


def test_silhouette_reading_bands():
    """Kaufman & Rousseeuw (1990): > 0.70 strong, 0.51-0.70 reasonable, 0.26-0.50 weak, <= 0.25 none."""
    assert [regions.structure(v) for v in (0.9, 0.71, 0.6, 0.51, 0.5, 0.26, 0.25, 0.05, -0.2)] == [
        "strong", "strong", "reasonable", "reasonable", "weak", "weak", "none", "none", "none"]
