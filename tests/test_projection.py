"""somad.projection against oracles: footprint counts vs a brute-force BMU loop, the distance map vs
torch.cdist, neuron positions vs a loop over the training patches; the map figures draw on 1xN and
100x100 grids, rectangular and hexagonal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from somad import explain, figures, projection, viz
from somad.scoring import PatchScores


def test_cell_mask_marks_every_cell_a_defect_pixel_touches():
    mask = np.zeros((64, 64), bool)
    mask[10, 40] = True  # one pixel: cell (2, 10) of a 16x16 map (4 px cells)
    mask[60:64, 0:8] = True  # two whole cells
    got = projection.cell_mask(mask, (16, 16))
    expected = np.zeros((16, 16), bool)
    expected[2, 10] = expected[15, 0] = expected[15, 1] = True
    np.testing.assert_array_equal(got, expected)
    assert not projection.cell_mask(np.zeros((64, 64)), (16, 16)).any()


def test_footprint_counts_match_a_brute_force_bmu_loop(dash_model_env, dash_eval):
    model = dash_model_env[2]
    ev = dash_eval
    h, w = model.feature_shape_
    i = int(np.flatnonzero(ev.labels == 1)[0])
    feats = model.features(ev.images[i:i + 1])[0]  # (d, h, w)
    weights = model.som_weights_.cpu()
    defect = projection.cell_mask(ev.masks[i], (h, w))
    assert defect.any()
    counts = np.zeros(model.grid_, np.int64)
    dcounts = np.zeros(model.grid_, np.int64)
    best = np.full(model.grid_, -np.inf)
    scores = ev.patches.scores[i * h * w:(i + 1) * h * w].numpy().reshape(h, w)
    for r in range(h):
        for c in range(w):
            d = ((weights - feats[:, r, c]) ** 2).sum(1)
            j = int(torch.argmin(d))
            nr, nc = divmod(j, model.grid_[1])
            counts[nr, nc] += 1
            dcounts[nr, nc] += int(defect[r, c])
            best[nr, nc] = max(best[nr, nc], scores[r, c])
    fp = projection.image_footprint(ev.patches, i, (h, w), model.grid_, ev.masks[i])
    np.testing.assert_array_equal(fp.counts, counts)
    np.testing.assert_array_equal(fp.defect_counts, dcounts)
    assert fp.counts.sum() == h * w and fp.defect_counts.sum() == defect.sum()
    np.testing.assert_allclose(fp.max_score[counts > 0], best[counts > 0], rtol=1e-6)
    assert np.isnan(fp.max_score[counts == 0]).all()
    # reverse direction: the cells that chose a neuron are explain.neuron_cells
    top = tuple(int(v) for v in np.unravel_index(int(np.argmax(counts)), counts.shape))
    np.testing.assert_array_equal(fp.cells_of(top), explain.neuron_cells(ev.patches, top, model.grid_, i, (h, w)))
    assert fp.cells_of(top).sum() == counts[top]
    with pytest.raises(ValueError, match="outside the"):
        projection.image_footprint(ev.patches, len(ev.labels), (h, w), model.grid_)


def test_ground_truth_note_says_what_is_missing():
    assert "good image" in projection.ground_truth_note(0, None)
    assert "no ground-truth mask" in projection.ground_truth_note(1, None)
    assert "no ground-truth mask" in projection.ground_truth_note(1, np.zeros((4, 4), bool))
    assert projection.ground_truth_note(1, np.ones((4, 4), bool)) is None


@pytest.mark.parametrize("grid", [(1, 7), (5, 3), (100, 100)])
def test_distance_map_matches_torch_cdist(grid):
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(grid[0] * grid[1], 12, generator=g) * 3
    x = torch.randn(12, generator=g)
    got = projection.distance_map(weights, x, grid)
    expected = torch.cdist(x[None].double(), weights.double())[0].numpy().reshape(grid)
    assert got.shape == grid and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    near = projection.nearest_neurons(got, 3)
    flat = np.argsort(expected.ravel(), kind="stable")[:3]
    assert near == [divmod(int(j), grid[1]) for j in flat]
    with pytest.raises(ValueError, match="13 features"):
        projection.distance_map(weights, torch.zeros(13), grid)


def test_patch_on_map_bmu_is_the_scored_bmu(dash_model_env, dash_eval):
    model = dash_model_env[2]
    ev = dash_eval
    h, w = model.feature_shape_
    i = len(ev.labels) - 1
    feats = model.features(ev.images[i:i + 1])[0]
    for r, c in ((0, 0), (h // 2, w // 3), (h - 1, w - 1)):
        pm = projection.patch_on_map(model, feats, r, c)
        ex = explain.explain_cell(ev.patches, i, r, c, (h, w), model.grid_)
        assert pm.nearest[0] == ex.bmu
        assert pm.nearest == [(nr, nc) for nr, nc, _ in ex.neighbours]  # the same k nearest, same order
        assert pm.gap >= 1.0 and pm.median_ratio > 0
        (r0, c0), (r1, c1) = (divmod(int(j), pm.dist.shape[1]) for j in np.argsort(pm.dist, axis=None)[:2])
        # oracle: the two nearest neurons are rectangular grid neighbours (8-connected)
        assert model.topology == "rectangular" and pm.adjacent == (max(abs(r0 - r1), abs(c0 - c1)) == 1)
        assert ("not neighbours" in pm.where()) == (not pm.adjacent) or pm.median_ratio > projection.FAR_RATIO
    with pytest.raises(ValueError, match="outside"):
        projection.patch_on_map(model, feats, h, 0)


def test_neuron_positions_match_a_loop_over_training_patches(dash_model_env):
    model = dash_model_env[2]
    h, w = model.feature_shape_
    bmu = model.train_bmu_.numpy()
    j = int(np.argmax(np.bincount(bmu)))
    neuron = divmod(j, model.grid_[1])
    expected = np.zeros((h, w), np.int64)
    for p in np.flatnonzero(bmu == j):
        expected[(p // w) % h, p % w] += 1
    got = projection.neuron_positions(model, neuron)
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == model.hit_map()[neuron]
    assert projection.position_spread(got) >= 0
    one = np.zeros((h, w))
    one[3, 4] = 5
    assert projection.position_spread(one) == 0.0
    assert np.isnan(projection.position_spread(np.zeros((h, w))))


def test_mean_image_skips_unreadable_files():
    imgs = {"a": np.full((8, 8, 3), 10, np.uint8), "b": np.full((8, 8, 3), 30, np.uint8)}

    def load(path, size, rule):
        if path not in imgs:
            raise OSError("gone")
        return imgs[path]

    np.testing.assert_array_equal(projection.mean_image(["a", "x", "b"], 8, load), np.full((8, 8, 3), 20))
    assert projection.mean_image(["x"], 8, load) is None
    assert projection.mean_image([], 8, load) is None


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
@pytest.mark.parametrize("grid", [(1, 9), (9, 1), (100, 100)])
def test_projection_figures_draw_every_grid(grid, topology):
    rng = np.random.default_rng(1)
    m = grid[0] * grid[1]
    h = w = 6
    bmu = rng.integers(0, m, h * w)
    patches = PatchScores(torch.rand(h * w), torch.as_tensor(bmu)[:, None], torch.rand(h * w, 1))
    mask = np.zeros((24, 24), bool)
    mask[:8, :8] = True
    fp = projection.image_footprint(patches, 0, (h, w), grid, mask)
    u = rng.random(grid)
    fig = figures.footprint_map(u, fp.counts, fp.max_score, fp.defect_counts, topology,
                                viz.HeatScale.for_model((0.0, 0.5), 0.6), selected=divmod(int(bmu[0]), grid[1]))
    click = fig.data[figures.CLICK_TRACE]
    assert len(click.x) == m
    if topology == "hexagonal":  # the click markers carry the colours, those outside the footprint hidden
        assert int((np.asarray(click.marker.color) > figures.HIDDEN).sum()) == len(np.unique(bmu))
        rings = fig.data[2]
    else:  # a heatmap over the grey one carries them (gaps outside); the click markers are not drawn
        assert int(np.isfinite(np.asarray(fig.data[2].z, float)).sum()) == len(np.unique(bmu))
        assert click.marker.maxdisplayed == 1
        rings = fig.data[3]
    assert len(rings.x) == int((fp.defect_counts > 0).sum())  # the defect rings
    dist = rng.random(grid)
    near = projection.nearest_neurons(dist, min(4, m))
    fig = figures.distance_map_figure(dist, near, topology)
    assert len(fig.data[figures.CLICK_TRACE].x) == m
    fig.to_json()
    pos = figures.positions_figure(np.zeros((24, 24, 3), np.uint8), np.arange(36).reshape(6, 6))
    assert np.isnan(pos.data[1].z[0][0]) and pos.data[1].z[5][5] == 35


def _plotly_rgb(colorscale, values: np.ndarray, cmin: float = 0.0, cmax: float = 1.0) -> np.ndarray:
    """What plotly draws for ``values`` on ``colorscale`` over ``cmin..cmax``: linear interpolation in
    RGB(A) between the stops (plotly.js ``makeColorScaleFunc``), written out with numpy, float (n, 3)
    in 0..255 (n, 4 with alpha when a stop has one)."""
    stops = np.array([float(p) for p, _ in colorscale])
    parts = [[float(v) for v in c[c.index("(") + 1:-1].split(",")] for _, c in colorscale]
    width = max(len(p) for p in parts)
    rgba = np.array([p + [1.0] * (width - len(p)) for p in parts])
    positions = (np.asarray(values, float) - cmin) / (cmax - cmin)
    return np.stack([np.interp(positions, stops, rgba[:, ch]) for ch in range(width)], 1)


def test_footprint_colours_are_the_heatmap_colours(dash_model_env, dash_eval):
    """Issue 19 follow-up: a neuron of the footprint has the colour the heatmap gives its score (the
    category's heat scale, one for every image), and the colour bar has the heatmap's ticks."""
    model = dash_model_env[2]
    ev = dash_eval
    scale = viz.heat_scale(model.pixel_range_, ev.metrics)
    u = model.u_matrix()
    heat = figures.image_figure(ev.images[0], model.feature_shape_, cell_values=np.zeros(model.feature_shape_),
                                scale=scale)
    heat_bar = heat.data[-1].marker.colorbar
    lo_img, hi_img = int(np.argmin(ev.scores)), int(np.argmax(ev.scores))
    seen = []
    for i, topology in ((lo_img, "rectangular"), (hi_img, "rectangular"), (hi_img, "hexagonal")):
        fp = projection.image_footprint(ev.patches, i, model.feature_shape_, model.grid_, ev.masks[i])
        fig = figures.footprint_map(u, fp.counts, fp.max_score, fp.defect_counts, topology, scale)
        chosen = fp.counts.ravel() > 0
        scores = fp.max_score.ravel()[chosen]
        if topology == "hexagonal":  # coloured click markers, transparent outside the footprint
            marker = fig.data[figures.CLICK_TRACE].marker
            colours = _plotly_rgb(marker.colorscale, np.asarray(marker.color, float), marker.cmin, marker.cmax)
            assert (colours[chosen, 3] == 1).all() and (colours[~chosen, 3] == 0).all()
            assert (marker.cmin, marker.cmax) == (figures.HIDDEN, 1.0)
            shown, bar = colours[chosen, :3], marker.colorbar
        else:  # a heatmap over the grey U-matrix, with gaps outside the footprint
            colour = fig.data[2]
            z = np.asarray(colour.z, float).ravel()
            assert np.isnan(z[~chosen]).all() and (colour.zmin, colour.zmax) == (0, 1)
            shown, bar = _plotly_rgb(colour.colorscale, z[chosen], 0.0, 1.0)[:, :3], colour.colorbar
        on_heatmap = scale.colorize(scores[None].astype(np.float64))[0].astype(float)
        assert np.abs(shown - on_heatmap).max() <= 2.0  # one 8-bit step of rounding, 1/1023 of the colour map
        assert list(bar.tickvals) == list(heat_bar.tickvals)
        assert list(bar.ticktext) == list(heat_bar.ticktext)
        seen.append(scores)
    assert seen[1].max() > seen[0].max()  # the two images span different ranges, on one scale
    # the pixel threshold's tick sits where the colour turns yellow, on both colour bars
    ticks = scale.ticks()
    knee = [p for p, v, _ in ticks if v == scale.knee]
    assert knee == [0.5] and f"{scale.knee:.1f}" in heat_bar.ticktext
    np.testing.assert_allclose(_plotly_rgb(heat.data[-1].marker.colorscale, np.array([0.5]))[0],
                               255 * np.array(viz.HEAT_COLORS[3][1]), atol=0.5)
    assert [v for _, v, _ in ticks] == sorted(v for _, v, _ in ticks) and ticks[-1][1] == pytest.approx(scale.top)


def test_heat_scale_ticks():
    """The colour bar's ticks sit where the scale puts their scores: training top at 0.3, pixel threshold at
    0.5, the top at 1; without an evaluation (threshold = training top) the repeated tick is dropped."""
    s = viz.HeatScale.for_model((2.0, 30.0), 40.0)
    assert [(round(p, 6), round(v, 6)) for p, v, _ in s.ticks()] == [
        (0.0, 2.0), (0.3, 30.0), (0.5, 40.0), (0.75, round(40 * 10 ** 0.25, 6)), (1.0, round(40 * 10 ** 0.5, 6))]
    assert [t[2] for t in s.ticks()][:3] == ["2.0", "30.0", "40.0"]
    p = viz.HeatScale.for_model((0.0, 10.0))
    assert [round(t[0], 6) for t in p.ticks()] == [0.0, 0.5, 0.75, 1.0]


def test_maps_that_are_not_clicked_draw_no_marker_per_neuron():
    """clickable=False (the Test inspector's cell panel): a rectangular map is heatmaps with their own
    hover, the same values, and only the few markers of the defect rings; hexagonal maps keep markers."""
    rng = np.random.default_rng(2)
    grid = (7, 5)
    u = rng.random(grid)
    counts = np.zeros(grid, int)
    counts[1, 2], counts[3, 4] = 3, 1
    defect = np.zeros(grid, int)
    defect[1, 2] = 2
    max_score = np.where(counts > 0, rng.random(grid), np.nan)
    scale = viz.HeatScale.for_model((0.0, 1.0))
    fig = figures.footprint_map(u, counts, max_score, defect, "rectangular", scale, (1, 2), clickable=False)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap", "scatter", "scatter"]
    foot = fig.data[1]
    z = np.asarray(foot.z, dtype=float)
    assert z[1, 2] == scale.normalise(max_score[1, 2]) and z[3, 4] == scale.normalise(max_score[3, 4])
    assert np.isnan(z).sum() == 33  # the neurons outside the footprint are gaps
    # row, col, cells, defect cells, score, U
    np.testing.assert_allclose(np.asarray(foot.customdata)[1, 2], [1, 2, 3, 2, max_score[1, 2], u[1, 2]], rtol=1e-6)
    assert foot.hovertemplate == figures.FOOTPRINT_HOVER
    assert (foot.zmin, foot.zmax) == (0, 1) and list(foot.colorbar.tickvals) == [t[0] for t in scale.ticks()]
    assert len(fig.data[2].x) == 1  # one defect ring
    assert fig.data[3].line.color == figures.SELECT_COLOR  # the BMU's outline
    dist = rng.random(grid)
    fig = figures.distance_map_figure(dist, [(0, 0), (0, 1)], "rectangular", clickable=False)
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "scatter"]
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), dist)
    # the hover names the value as the colour bar does
    assert fig.data[0].hovertemplate.startswith("neuron (row %{y}, col %{x})<br>distance %{z:.4~g}")
    plain = figures.som_map(u, "rectangular", hover={"hits": counts}, clickable=False)
    assert len(plain.data) == 1 and np.asarray(plain.data[0].customdata)[3, 4].tolist() == [1]
    hexa = figures.distance_map_figure(dist, [(0, 0)], "hexagonal", clickable=False)
    assert len(hexa.data[figures.CLICK_TRACE].x) == grid[0] * grid[1]  # hexagons need their markers
