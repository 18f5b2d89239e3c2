"""Dashboard tests with streamlit.testing.v1.AppTest (every page, fit form, threshold slider, error
states) and of the pure dashboard helpers (figures, uploads, images)."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dashboard import events, images
from somad import data, figures, jobs, viz
from somad.errors import DataError

REPO = Path(__file__).resolve().parent.parent
PAGES = ["pages/1_model.py", "pages/2_som_explorer.py", "pages/3_test_inspector.py", "pages/4_metrics.py",
         "pages/5_try_an_image.py"]


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / "app.py"), default_timeout=180)


def _clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# ---------------------------------------------------------------------- pages
def test_every_page_renders(app_env):
    at = _app()
    at.run()
    _clean(at)
    assert not at.error
    assert _metric(at, "SOM grid") == "16x16"  # the small model was auto-loaded
    assert _metric(at, "Training images") == str(app_env[2].n_train_)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        _clean(at)
        assert not at.error, [e.value for e in at.error]
    at.switch_page("pages/2_som_explorer.py").run()
    heads = [s.value for s in at.subheader]
    assert any(h.startswith("Nearest training patches of neuron") for h in heads)
    at.switch_page("pages/4_metrics.py").run()
    assert float(_metric(at, "Image AUROC")) > 0.5


def test_neuron_inputs_select_neuron(app_env):
    at = _app()
    at.run()
    at.switch_page("pages/2_som_explorer.py").run()
    at.number_input(key="w_neuron_row").set_value(3).run()
    at.number_input(key="w_neuron_col").set_value(5).run()
    _clean(at)
    assert at.session_state["neuron"] == (3, 5)
    assert "Nearest training patches of neuron (3, 5)" in [s.value for s in at.subheader]


def test_threshold_slider_changes_outcome_counts(app_env, dash_eval):
    at = _app()
    at.run()
    at.switch_page("pages/3_test_inspector.py").run()
    _clean(at)
    n_bad = int(dash_eval.labels.sum())
    n_good = len(dash_eval.labels) - n_bad
    slider = at.slider(key="w_threshold")
    lo, hi = slider.min, slider.max
    slider.set_value(lo).run()
    assert (_metric(at, "TP"), _metric(at, "FP"), _metric(at, "TN")) == (str(n_bad), str(n_good), "0")
    at.slider(key="w_threshold").set_value(hi).run()
    assert (_metric(at, "TP"), _metric(at, "FN"), _metric(at, "TN")) == ("0", str(n_bad), str(n_good))
    _clean(at)
    # the failing-only filter lists exactly FP + FN rows
    at.toggle(key="w_failing").set_value(True).run()
    assert len(at.dataframe[0].value) == n_bad


def test_fit_form_fits_and_saves(monkeypatch, demo_root, tmp_path):
    from streamlit.testing.v1 import AppTest

    models = tmp_path / "models"
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(models))
    at = AppTest.from_file(str(REPO / "pages" / "1_model.py"), default_timeout=180)
    at.run()  # a page run alone reruns once per session (dashboard.state.ensure_navigation); the click then counts
    _clean(at)
    assert any("No saved model" in i.value for i in at.info)
    at.select_slider(key="fit_image_size").set_value(64)
    at.number_input(key="fit_d").set_value(16)
    at.number_input(key="fit_epochs").set_value(2)
    at.text_input(key="fit_name").input("formfit")
    submit = next(b for b in at.button if b.label == "Fit")
    submit.click().run()
    _clean(at)
    assert not at.error, [e.value for e in at.error]
    (job,) = jobs.list_jobs(models)  # the fit runs as a job, outside the session
    assert job.kind == "fit" and job.status in ("queued", "running")
    while jobs.job_info(models, job.id).active:
        time.sleep(0.5)
    assert jobs.job_info(models, job.id).status == "done", jobs.job_info(models, job.id).error
    at.run()  # the job list sees the finished fit, and the session that started it loads its model
    _clean(at)
    out = models / "tiles" / "formfit"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hyperparameters"]["image_size"] == 64 and cfg["hyperparameters"]["d"] == 16
    assert cfg["hyperparameters"]["epochs"] == 2
    assert at.session_state["model_dir"] == str(out)
    assert _metric(at, "SOM grid") == "16x16"


# ---------------------------------------------------------------- error states
def test_root_without_mvtec_layout_shows_error(monkeypatch, tmp_path):
    (tmp_path / "not_a_category").mkdir()
    monkeypatch.setenv("SOMAD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    at = _app()
    at.run()
    _clean(at)
    assert any("No MVTec-layout category" in e.value for e in at.error)
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert any("load or fit a model" in i.value for i in at.info)


def test_bad_somad_device_is_named(monkeypatch, demo_root, tmp_path):
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SOMAD_DEVICE", "gpu")
    at = _app()
    at.run()
    _clean(at)
    (error,) = [e.value for e in at.error]  # one message, no page under it
    assert error.startswith("SOMAD_DEVICE='gpu': device 'gpu' is not a torch device name: use one of cpu")
    assert error.endswith("Start the dashboard with another SOMAD_DEVICE, or without it for cpu.")
    assert not at.info and not at.metric


def test_link_to_a_missing_model_without_any_model(monkeypatch, demo_root, tmp_path):
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    at = _app()
    at.query_params["model"] = "nope"
    at.run()
    _clean(at)
    assert [t.value for t in at.toast] == ["Part of this link was not used: model 'nope' is not saved for 'tiles': "
                                           "no model is saved for it yet."]


def test_damaged_model_shows_error(monkeypatch, demo_root, tmp_path):
    bad = tmp_path / "models" / "tiles" / "broken"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"format": "somad-model", "format_version": 1}))
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    at = _app()
    at.run()
    _clean(at)
    assert any("could not be loaded" in e.value for e in at.error)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        _clean(at)
        assert any("load or fit a model" in i.value for i in at.info)


# ------------------------------------------------------------ pure helpers
def test_point_to_neuron_uses_point_index_of_click_trace():
    grid = (16, 12)
    # what Streamlit 1.67 sends for a click on neuron (3, 7): customdata as a str-keyed dict
    event = {"selection": {"points": [{"curve_number": 1, "point_index": 3 * 12 + 7, "point_number": 3 * 12 + 7,
                                       "x": 7, "y": 3, "customdata": {"0": 3, "1": 7}}],
                           "point_indices": [43], "box": [], "lasso": []}}
    assert events.point_to_neuron(event, grid, curve=1) == (3, 7)
    assert events.point_to_neuron(event, grid, curve=0) is None  # a point of another trace
    assert events.point_to_neuron(event, grid) == (3, 7)
    assert events.point_to_neuron({"selection": {"points": []}}, grid) is None
    assert events.point_to_neuron(None, grid) is None
    out_of_range = {"selection": {"points": [{"curve_number": 1, "point_index": 16 * 12}]}}
    assert events.point_to_neuron(out_of_range, grid) is None
    # attribute-style state object (PlotlyState) works too
    state = SimpleNamespace(selection=SimpleNamespace(points=[{"curve_number": 1, "point_index": 5}]))
    assert events.point_to_neuron(state, grid, curve=1) == (0, 5)


def test_point_to_cell():
    event = {"selection": {"points": [{"curve_number": 1, "point_index": 2 * 16 + 9}]}}
    assert events.point_to_cell(event, (16, 16), curve=1) == (2, 9)


def test_som_map_click_trace_has_one_point_per_neuron():
    vals = np.arange(12, dtype=float).reshape(3, 4)
    fig = figures.som_map(vals, "rectangular", selected=(1, 2))
    click = fig.data[figures.CLICK_TRACE]
    assert len(click.x) == 12
    assert (click.x[6], click.y[6]) == (2, 1)  # point 6 = neuron (1, 2)
    assert fig.data[0].type == "heatmap"
    outline = fig.data[-1]  # the selected neuron's square, one cell around (x 2, y 1)
    assert (min(outline.x), max(outline.x), min(outline.y), max(outline.y)) == (1.5, 2.5, 0.5, 1.5)
    hexfig = figures.som_map(vals, "hexagonal")
    hclick = hexfig.data[figures.CLICK_TRACE]
    assert hclick.marker.symbol == "hexagon" and list(hclick.marker.color) == list(range(12))
    assert hclick.x[4] == pytest.approx(0.5) and hclick.y[4] == pytest.approx(np.sqrt(3) / 2)  # odd row shifted


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (2, 2), (4, 5), (100, 100)])
@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_som_map_draws_tiny_and_odd_grids(shape, topology):
    rows, cols = shape
    sel = (rows - 1, cols - 1)
    fig = figures.som_map(np.random.default_rng(0).random(shape), topology, selected=sel, colorbar_title="U")
    assert len(fig.data[figures.CLICK_TRACE].x) == rows * cols
    xa, ya = fig.layout.xaxis, fig.layout.yaxis
    # integer row/column ticks inside the grid (a 2x2 map had ticks at -0.5, 0.5, 1.5)
    assert list(xa.ticktext) == [str(v) for v in xa.tickvals] and all(0 <= v < cols for v in xa.tickvals)
    assert [int(t) for t in ya.ticktext] == sorted(int(t) for t in ya.ticktext)
    assert all(0 <= int(t) < rows for t in ya.ticktext) and 1 <= len(xa.tickvals) <= figures.MAX_TICKS
    # the selection outline is one cell around the selected neuron and stays inside the axes
    outline = fig.data[-1]
    cx, cy = fig.data[figures.CLICK_TRACE].x[rows * cols - 1], fig.data[figures.CLICK_TRACE].y[rows * cols - 1]
    assert max(outline.x) - min(outline.x) == pytest.approx(1.0)
    assert np.mean(outline.x[:-1]) == pytest.approx(cx) and np.mean(outline.y[:-1]) == pytest.approx(cy)
    assert xa.range[0] <= min(outline.x) and max(outline.x) <= xa.range[1]
    assert ya.range[1] <= min(outline.y) and max(outline.y) <= ya.range[0]
    # a 1xN map keeps a readable plot height for its colour bar; an Nx1 map stays on screen
    plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    assert figures.MIN_PLOT_PX <= plot_h <= figures.MAX_ASPECT * plot_w + 1
    bar = fig.data[0].colorbar if topology == "rectangular" else fig.data[figures.CLICK_TRACE].marker.colorbar
    assert bar.len == 1.0 and bar.title.text == "U"


def test_image_figure_cells():
    img = np.zeros((64, 64, 3), np.uint8)
    fig = figures.image_figure(img, (16, 16), cell_values=np.ones((16, 16)))
    click = fig.data[figures.CLICK_TRACE]
    assert len(click.x) == 256
    assert (click.x[17], click.y[17]) == (6.0, 6.0)  # cell (1, 1) centre in pixels


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_decode_upload_conversions_and_errors():
    rgb, notes = images.decode_upload("a.png", _png(np.full((8, 8, 3), 7, np.uint8)))
    assert rgb.shape == (8, 8, 3) and notes == []
    gray, notes = images.decode_upload("g.png", _png(np.full((8, 8), 100, np.uint8)))
    assert gray.shape == (8, 8, 3) and (gray == 100).all() and "1-channel" in notes[0]
    deep = np.full((8, 8), 65535, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, format="PNG")
    out, notes = images.decode_upload("d.png", buf.getvalue(), rule=data.IntensityRule("integer", 65535.0))
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3) and (out == 255).all() and "16" in notes[0]
    with pytest.raises(DataError, match="not an image"):
        images.decode_upload("x.png", b"this is text, not a picture")
    with pytest.raises(DataError, match="megapixel"):
        images.decode_upload("big.png", _png(np.zeros((20, 20, 3), np.uint8)), max_pixels=100)


def test_highlight_cells_and_contours():
    img = np.zeros((64, 64, 3), np.uint8)
    cells = np.zeros((16, 16), bool)
    cells[2, 3] = True
    out = images.highlight_cells(img, cells)
    assert out[9, 13].any() and not out[30, 30].any()  # inside cell (2, 3) = pixels y 8-11, x 12-15
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    amap = np.zeros((64, 64))
    amap[40:50, 40:50] = 5
    both = images.contours(img, mask, amap, 1.0)
    assert tuple(both[20, 25]) == images.GT_COLOR and tuple(both[40, 45]) == images.PRED_COLOR


def test_hexagonal_model_renders_som_explorer(monkeypatch, demo_root, tmp_path):
    from somad import pipeline

    models = tmp_path / "models"
    pipeline.fit_category(demo_root, "tiles", pipeline.model_path(models, "tiles", "hex"),
                          dict(image_size=64, d=16, epochs=2, cv_folds=2, topology="hexagonal", grid=(8, 10)))
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(models))
    at = _app()
    at.run()
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert not at.error
    assert "SOM 8x10 (hexagonal)" in at.caption[0].value
    at.number_input(key="w_neuron_row").set_value(7).run()
    at.number_input(key="w_neuron_col").set_value(9).run()
    assert at.session_state["neuron"] == (7, 9)
    _clean(at)


# ------------------------------------------------------------------ view state in the URL
def test_url_restores_view_and_follows_it(app_env, dash_eval):
    """A pasted link opens the same model, neuron, image, cell and threshold; the URL follows the view."""
    name = f"{dash_eval.samples[3].defect}/{dash_eval.samples[3].path.name}"
    thr = f"{float(np.median(dash_eval.scores)):.4g}"
    at = _app()
    at.query_params.update({"model": "small", "neuron": "3,5", "image": name, "cell": "2,4", "thr": thr})
    at.run()
    _clean(at)
    assert at.session_state["neuron"] == (3, 5) and at.session_state["image"] == name
    assert at.session_state["cell"] == (2, 4) and at.session_state["threshold"] == float(thr)
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert "Nearest training patches of neuron (3, 5)" in [s.value for s in at.subheader]
    at.switch_page("pages/3_test_inspector.py").run()
    _clean(at)
    assert any(s.value.startswith(f"{name}: score") for s in at.subheader)
    assert any(s.value.startswith("Cell (2, 4): BMU") for s in at.subheader)
    assert at.slider(key="w_threshold").value == pytest.approx(float(thr))
    qp = {k: v[0] if isinstance(v, list) else v for k, v in at.query_params.items()}
    assert (qp["neuron"], qp["image"], qp["cell"], qp["model"], qp["thr"]) == ("3,5", name, "2,4", "small", thr)


def test_link_with_the_models_own_rounded_threshold_is_the_model_threshold(app_env, dash_eval):
    """After a reload the URL's ``thr=`` is the model's threshold to 6 digits: the page uses the exact
    value and its rule, not "set by hand" at the rounded one (which could flip an image scored exactly
    at the threshold)."""
    from dashboard import state

    model_thr = float(app_env[2].threshold_)
    rounded = state.url_float(model_thr)
    assert float(rounded) != model_thr  # the case of the bug: the URL's copy is not the exact value
    at = _app()
    at.query_params.update({"model": "small", "thr": rounded})
    at.run()
    at.switch_page("pages/3_test_inspector.py").run()
    _clean(at)
    assert at.session_state["threshold"] == model_thr
    rule = [c.value for c in at.caption if c.value.startswith("Rule:")]
    assert rule and "deployable threshold" in rule[0] and "by hand" not in rule[0], rule


def test_unreadable_link_falls_back_to_defaults(app_env):
    at = _app()
    at.query_params.update({"model": "gone", "neuron": "x,y"})
    at.run()
    _clean(at)
    assert at.session_state["model_dir"].endswith("small")  # the category's default model
    assert "neuron" not in at.session_state  # "x,y" is not a neuron: the page picks its default


@pytest.mark.parametrize("root, message", [("", "No dataset root given"), ("FILE", "is a file, not a folder")])
def test_blank_or_file_root_says_so(monkeypatch, tmp_path, root, message):
    if root == "FILE":
        root = str(tmp_path / "a_file.txt")
        Path(root).write_text("not a folder")
    monkeypatch.setenv("SOMAD_DATA_DIR", root or " ")
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    at = _app()
    at.run()
    _clean(at)
    assert at.title[0].value == "Model"
    assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_pages_without_model_have_titles(monkeypatch, demo_root, tmp_path):
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(tmp_path / "models"))
    at = _app()
    at.run()
    titles = {"pages/2_som_explorer.py": "SOM explorer", "pages/3_test_inspector.py": "Test inspector",
              "pages/4_metrics.py": "Metrics", "pages/5_try_an_image.py": "Try an image"}
    for page, title in titles.items():
        at.switch_page(page).run()
        _clean(at)
        assert at.title[0].value == title
        assert any("load or fit a model" in i.value for i in at.info)


# --------------------------------------------------------------------- uploads
def test_unlike_training_flags_score_colour_and_shape():
    rng = np.random.default_rng(0)
    ref = images.Reference(max_score=10.0, channel_means=100 + rng.normal(0, 2, (20, 3)), aspect=1.0)
    like = np.full((64, 64, 3), 100, np.uint8)
    assert images.unlike_training(9.0, like, ref) == []
    assert images.unlike_training(14.9, like, ref) == []  # beyond the max, but not far beyond
    far = images.unlike_training(15.1, like, ref)
    assert len(far) == 1 and "far beyond every training and test score" in far[0]
    red = like.copy()
    red[..., 0] = 250
    assert any("colours differ" in r for r in images.unlike_training(9.0, red, ref))
    wide = np.full((64, 128, 3), 100, np.uint8)
    assert [r for r in images.unlike_training(9.0, wide, ref) if "shape (128x64)" in r]


# ------------------------------------------------------------------ one decision rule
def test_f1_optimal_button_reproduces_f1_max(app_env, dash_eval):
    at = _app()
    at.run()
    at.switch_page("pages/3_test_inspector.py").run()
    f1_thr = dash_eval.metrics["image_f1_threshold"]
    next(b for b in at.button if b.label.startswith("F1-optimal")).click().run()
    _clean(at)
    assert at.session_state["threshold"] == pytest.approx(f1_thr)
    tp, fp, fn = (int(_metric(at, k)) for k in ("TP", "FP", "FN"))
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(dash_eval.metrics["image_f1_max"], abs=1e-12)


def test_pixel_threshold_is_the_pixel_f1_threshold_else_the_range_top():
    from somad import viz

    assert viz.pixel_threshold({"pixel_f1_threshold": 3.5}, (0.0, 9.0)) == 3.5
    assert viz.pixel_threshold({"pixel_f1_threshold": float("nan")}, (0.0, 9.0)) == 9.0
    assert viz.pixel_threshold(None, (1.0, 7.0)) == 7.0
    amap = np.zeros((8, 8))
    amap[2:4, 2:4] = 3.5  # exactly at the threshold: inside the predicted region (score >= threshold)
    out = images.contours(np.zeros((8, 8, 3), np.uint8), None, amap, 3.5)
    assert tuple(out[2, 2]) == images.PRED_COLOR
    assert viz.region_caption(amap, 3.5).startswith("predicted region: map ≥ pixel threshold 3.500")
    # a map whose top stays below the pixel threshold outlines nothing, and the caption says so
    assert viz.region_caption(amap, 3.6) == ("no pixel reaches the pixel threshold 3.600 (map top 3.500): nothing "
                                             "outlined; truth (green)")


# ------------------------------------------------------------------ model management
def test_model_list_default_rename_delete(monkeypatch, demo_root, tmp_path, dash_model_env):
    import shutil

    from somad import store

    models = tmp_path / "models"
    for name in ("alpha", "beta"):
        shutil.copytree(dash_model_env[1], models / "tiles" / name)
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(models))
    at = _app()
    at.run()
    _clean(at)
    listed = at.dataframe[0].value
    assert sorted(listed["name"]) == ["alpha", "beta"]
    opened = at.session_state["model_dir"]
    assert opened == str(store.default_model(models, "tiles"))
    other = next(str(models / "tiles" / n) for n in ("alpha", "beta") if str(models / "tiles" / n) != opened)
    at.selectbox(key="w_saved_model").set_value(other).run()
    next(b for b in at.button if b.label == "Make default").click().run()
    _clean(at)
    assert store.default_model(models, "tiles") == Path(other)
    assert (models / "tiles" / store.DEFAULT_FILE).read_text().strip() == Path(other).name
    # a new session opens the default model
    fresh = _app()
    fresh.run()
    assert fresh.session_state["model_dir"] == other
    # rename: the default mark follows the model
    at.text_input(key="w_rename").input("gamma").run()
    next(b for b in at.button if b.label == "Rename").click().run()
    _clean(at)
    assert (models / "tiles" / "gamma").is_dir() and not Path(other).exists()
    assert store.default_model(models, "tiles") == models / "tiles" / "gamma"
    at.text_input(key="w_rename").input("../evil").run()
    next(b for b in at.button if b.label == "Rename").click().run()
    assert any("not a plain folder name" in e.value for e in at.error)
    # delete asks to confirm; cancel keeps the model, confirm removes it
    next(b for b in at.button if b.label == "Delete...").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert (models / "tiles" / "gamma").is_dir()
    next(b for b in at.button if b.label == "Delete...").click().run()
    next(b for b in at.button if b.label == "Yes, delete").click().run()
    _clean(at)
    assert not (models / "tiles" / "gamma").exists()
    assert [p.name for p in (models / "tiles").iterdir() if p.name.startswith(".")] == []
    assert list(at.dataframe[0].value["name"]) == [Path(opened).name]


def test_default_marker_is_hidden_legacy_marker_read_oldest_by_saved_at(dash_model_env, tmp_path):
    """The marker cannot collide with a model folder (not even 'DEFAULT' or, where case is ignored,
    'default'); a DEFAULT file of earlier versions still counts; unmarked, the default is the oldest
    by the config's saved_at (never the newest: a new fit does not take it over)."""
    import json
    import os
    import shutil

    from somad import store

    models = tmp_path / "models"
    for name, saved in (("DEFAULT", "2026-01-02T00:00:00"), ("older", "2026-01-01T00:00:00")):
        shutil.copytree(dash_model_env[1], models / "tiles" / name)
        cfg = json.loads((models / "tiles" / name / "config.json").read_text())
        (models / "tiles" / name / "config.json").write_text(json.dumps(dict(cfg, saved_at=saved)))
    (models / "tiles" / "older" / "notes.txt").write_text("touched later")
    os.utime(models / "tiles" / "older", None)
    assert store.default_model(models, "tiles") == models / "tiles" / "older"  # oldest by saved_at, not mtime
    store.set_default(models, "tiles", "DEFAULT")
    assert store.default_model(models, "tiles") == models / "tiles" / "DEFAULT"
    (models / "tiles" / store.DEFAULT_FILE).unlink()
    legacy = tmp_path / "legacy"
    for name in ("a", "default"):
        shutil.copytree(dash_model_env[1], legacy / "tiles" / name)
    (legacy / "tiles" / "DEFAULT").write_text("a\n")
    assert store.default_model(legacy, "tiles") == legacy / "tiles" / "a"


def test_a_clicked_point_is_drawn_by_plotly_only_where_the_click_markers_are_drawn(monkeypatch):
    """Hexagonal maps draw their click markers: after a click on the chart itself plotly shows the
    clicked point, and the figure's parameters stay those of the previous run (so Streamlit neither
    re-sends nor redraws it); a selection made elsewhere is drawn as a marker, and the first click
    after that bakes the point in once. Rectangular maps do not draw their click markers
    (``maxdisplayed``): their figure never shows the selection, which is outlined over the chart
    (:func:`widgets.map_outline`), so a click changes no figure there either."""
    from dashboard import widgets
    from dashboard.keys import Keys

    ss: dict = {}
    monkeypatch.setattr(widgets.st, "session_state", ss)
    draw = widgets.map_selection
    assert draw("hex", None, "hexagonal") == (None, None)  # nothing selected yet
    widgets.new_click("hex", (2, 3))
    assert draw("hex", (2, 3), "hexagonal") == (None, None)  # clicked: plotly shows it, the figure is as before
    widgets.new_click("hex", (4, 5))
    assert draw("hex", (4, 5), "hexagonal") == (None, None)
    widgets.new_click("hex", None)  # the selection came from the URL or a link: drawn as a marker
    assert draw("hex", (7, 1), "hexagonal") == ((7, 1), None)
    widgets.new_click("hex", (2, 2))  # first click after it: the figure changes once, point baked in
    assert draw("hex", (2, 2), "hexagonal") == (None, (2, 2))
    widgets.new_click("hex", (6, 6))
    assert draw("hex", (6, 6), "hexagonal") == (None, (2, 2))  # and stays so
    assert ss[Keys.DRAWN_SELECTION]["hex"] == (None, (2, 2))
    assert draw("hexmap", (3, 3), "hexagonal", clickable=False) == ((3, 3), None)  # looked at: ringed in the figure
    ss[Keys.DRAWN_SELECTION]["rect"] = ((1, 1), None)
    widgets.new_click("rect", (6, 6))
    assert draw("rect", (6, 6), "rectangular") == (None, None)  # never in the figure: outlined over it
    assert draw("rectmap", (6, 6), "rectangular", clickable=False) == (None, None)
    assert "rect" not in ss[Keys.DRAWN_SELECTION]

    rect = figures.som_map(np.ones((3, 5)), "rectangular")
    box = widgets.map_outline(rect, (3, 5), "rectangular", (1, 2))
    assert box == figures.map_cell_css((3, 5), "rectangular", 420, (1, 2), widgets.OUTLINE_PX)
    assert widgets.map_outline(rect, (3, 5), "rectangular", None) is None
    assert widgets.map_outline(rect, (3, 5), "hexagonal", (1, 2)) is None
    css = widgets.outline_css("som_umatrix", box)
    assert ".st-key-som_umatrix .svg-container::after" in css and figures.SELECT_COLOR in css
    assert f"left:{box['left']};margin-top:{box['margin-top']};" in css
    with pytest.raises(ValueError, match="keyed chart"):
        widgets.chart(rect, None, outline=box)  # the CSS rule is on the chart's key
    assert "white" in widgets.outline_css("heat_0", box, "white")

    hexagonal = figures.som_map(np.ones((3, 5)), "hexagonal", preselected=(1, 2))
    assert list(hexagonal.data[figures.CLICK_TRACE].selectedpoints) == [1 * 5 + 2] and len(hexagonal.data) == 2
    assert hexagonal.data[figures.CLICK_TRACE].selected.marker.color == figures.SELECT_COLOR


def test_map_cell_box_is_the_cell_in_figure_pixels():
    """The pixel box of a neuron, by hand: a square grid fills its plot, a wide grid is centred
    vertically and a tall one horizontally (plotly's equal-aspect axes; checked against plotly.js in
    tests/test_browser.py), and the boxes of neighbours tile."""
    s = 420
    plot_w = s - figures.MAP_MARGIN["l"] - figures.MAP_MARGIN["r"]
    px = plot_w / 10.2  # 10 columns and the 0.1 cell padding of the axis ranges on each side
    left, top, w, h = figures.map_cell_box((10, 10), "rectangular", s, (2, 3))
    assert (left, top, w, h) == pytest.approx((40 + 3.1 * px, 40 + 2.1 * px, px, px))
    right = figures.map_cell_box((10, 10), "rectangular", s, (2, 4))
    assert right[0] == pytest.approx(left + w) and right[1] == pytest.approx(top)
    wide = figures.map_cell_box((2, 20), "rectangular", s, (0, 0))
    plot_h = int(figures._plot_px((2, 20), "rectangular", s)[1])
    px = min(plot_w / 20.2, plot_h / 2.2)
    assert wide == pytest.approx((40 + 0.1 * px, 40 + (plot_h - 2.2 * px) / 2 + 0.1 * px, px, px))
    tall = figures.map_cell_box((30, 3), "rectangular", s, (29, 2))
    plot_h = int(figures._plot_px((30, 3), "rectangular", s)[1])
    px = min(plot_w / 3.2, plot_h / 30.2)
    assert tall == pytest.approx((40 + (plot_w - 3.2 * px) / 2 + 2.1 * px, 40 + 29.1 * px, px, px))
    with pytest.raises(ValueError, match="outside the 10x10 grid"):
        figures.map_cell_box((10, 10), "rectangular", s, (10, 0))


def test_rectangular_click_traces_are_hovered_and_clicked_but_not_drawn():
    """Every clickable map on a rectangular grid and every clickable image keeps one point per cell in
    :data:`figures.CLICK_TRACE` (for hover and clicks) but lets plotly draw only one, nearly transparent:
    a 56x56 U-matrix drew in ~14 ms instead of ~130 ms (``benchmarks/click_breakdown.py --pages``)."""
    rng = np.random.default_rng(0)
    u = rng.random((4, 6))
    counts = np.zeros((4, 6), int)
    counts[1, 1] = 2
    scale = viz.HeatScale.for_model((0.0, 1.0))
    figs = [figures.som_map(u, "rectangular"), figures.region_map(np.zeros((4, 6), int), "rectangular"),
            figures.footprint_map(u, counts, np.where(counts > 0, 0.5, np.nan), counts * 0, "rectangular", scale),
            figures.distance_map_figure(u, [(0, 0)], "rectangular"),
            figures.image_figure(np.zeros((32, 48, 3), np.uint8), (4, 6))]
    for fig in figs:
        click = fig.data[figures.CLICK_TRACE]
        assert click.type == "scatter" and len(click.x) == 24 and click.marker.maxdisplayed == 1
        assert click.selected.marker.color is None  # no style that would draw a clicked point
        assert "%{customdata[" in click.hovertemplate
    assert figures.som_map(u, "hexagonal").data[figures.CLICK_TRACE].marker.maxdisplayed is None
    # the hover names the value as the colour bar does ("value" without a title)
    assert "<br>U %{customdata[2]" in figures.som_map(u, colorbar_title="U").data[figures.CLICK_TRACE].hovertemplate
    assert "<br>value %{customdata[2]" in figures.som_map(u).data[figures.CLICK_TRACE].hovertemplate


def test_freeze_long_lived_hides_live_objects_from_the_collector_but_not_new_garbage():
    """What is alive when a model loads is frozen (the post-run collections skip it); cyclic garbage
    made afterwards is still collected, and frozen objects are still freed by reference counting."""
    import gc
    import weakref

    from dashboard import memory

    class Node:
        pass

    kept = Node()
    before = gc.get_freeze_count()
    try:
        memory.freeze_long_lived()
        assert gc.get_freeze_count() > before and gc.get_freeze_count() >= 1
        cycle = Node()
        cycle.me = cycle
        ref = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert ref() is None  # new cyclic garbage: collected
        frozen_ref = weakref.ref(kept)
        del kept
        assert frozen_ref() is None  # a frozen object without references: freed by its refcount
    finally:
        gc.unfreeze()


def test_a_stretched_chart_is_drawn_at_the_column_width_only(monkeypatch):
    """Streamlit draws a new figure at the width in its spec before the column's: a stretched chart
    (the Test inspector's heatmap) must carry no width of its own, or it jumps under the cursor as it
    appears; a chart drawn at its content width (the outlined maps) keeps its width."""
    from dashboard import widgets

    shown = []
    monkeypatch.setattr(widgets.st, "plotly_chart", lambda fig, **kw: shown.append((fig.layout.width, kw["width"])))
    img = np.zeros((32, 32, 3), np.uint8)
    widgets.chart(figures.image_figure(img, (4, 4), size=400), "heat_0", clickable=True)
    widgets.chart(figures.som_map(np.ones((3, 5)), size=420), "som_umatrix", clickable=True, width="content")
    assert shown == [(None, "stretch"), (420, "content")]
