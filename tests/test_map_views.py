"""The map views of issue 19 in the dashboard (AppTest): a test image's footprint on the U-matrix and
the cells that chose a neuron, where a neuron lives in the images, a clicked cell's place on the map,
its distance to every neuron and its crops beside normal training patches; on 1xN, hexagonal and
100x100 grids; the footprint in the URL."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dashboard.keys import Keys
from somad.words import plural

REPO = Path(__file__).resolve().parent.parent


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / "app.py"), default_timeout=240)


def _clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _qp(at) -> dict:
    return {k: v[0] if isinstance(v, list) else v for k, v in at.query_params.items()}


def _chart_titles(at) -> list[str]:
    import json

    out = []
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out.append(spec.get("layout", {}).get("title", {}).get("text", ""))
    return out


def test_footprint_on_som_explorer_and_url_round_trip(app_env, dash_eval):
    model = app_env[2]
    i = int(np.flatnonzero(dash_eval.labels == 1)[0])
    name = f"{dash_eval.samples[i].defect}/{dash_eval.samples[i].path.name}"
    h, w = model.feature_shape_
    bmu = dash_eval.patches.neighbours[i * h * w:(i + 1) * h * w, 0].numpy()
    j = int(np.bincount(bmu).argmax())
    r, c = divmod(j, model.grid_[1])
    at = _app()
    at.query_params.update({"model": "small", "image": name, "footprint": "1", "neuron": f"{r},{c}"})
    at.run()
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    titles = _chart_titles(at)
    assert titles[0] == "Footprint of the image on the U-matrix"
    assert any(t.startswith(f"Where neuron ({r}, {c}) lives") for t in titles)
    text = " ".join(m.value for m in at.markdown)
    assert f"Neuron ({r}, {c}) was chosen by **{plural(int((bmu == j).sum()), 'cell')}** of this image" in text
    assert f"its {h * w} cells chose {len(np.unique(bmu))} neurons" in text
    assert _qp(at)["footprint"] == "1" and _qp(at)["image"] == name
    # switching the overlay off clears it from the view state (write_url then leaves it out of the URL)
    at.toggle(key="w_footprint").set_value(False).run()
    _clean(at)
    assert at.session_state["footprint"] is None
    assert _chart_titles(at)[0].startswith("U-matrix")


def test_good_image_footprint_says_no_defect(app_env, dash_eval):
    i = int(np.flatnonzero(dash_eval.labels == 0)[0])
    name = f"{dash_eval.samples[i].defect}/{dash_eval.samples[i].path.name}"
    at = _app()
    at.query_params.update({"model": "small", "image": name, "footprint": "1"})
    at.run()
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert any("a good image: it has no defect region to mark" in c.value for c in at.caption)


def test_cell_panel_shows_map_distance_and_crops(app_env, dash_eval):
    i = int(np.argmax(dash_eval.scores))
    name = f"{dash_eval.samples[i].defect}/{dash_eval.samples[i].path.name}"
    at = _app()
    at.query_params.update({"model": "small", "image": name, "cell": "4,5"})
    at.run()
    at.switch_page("pages/3_test_inspector.py").run()
    _clean(at)
    titles = _chart_titles(at)
    assert "Where the clicked cell lands: its BMU on the image's footprint" in titles
    assert "Distance of cell (4, 5) to every neuron" in titles
    caps = " ".join(c.value for c in at.caption)
    assert "Nearest normal training patches of its BMU" in caps
    # the contributions are behind a toggle: closed, their chart is neither built nor sent with each click
    assert not any(t.startswith("Why ") for t in titles)
    at.toggle(key=Keys.W_CONTRIB).set_value(True).run()
    _clean(at)
    assert any(t.startswith("Why ") and "top features of the distance to neuron" in t for t in _chart_titles(at))


@pytest.mark.parametrize("topology, grid", [("hexagonal", (1, 12)), ("rectangular", (100, 100))])
def test_every_view_draws_on_odd_grids(monkeypatch, demo_root, tmp_path, topology, grid):
    """The pages on a 1xN hexagonal and a 100x100 rectangular model (the figures themselves are drawn
    for both topologies on 1xN, Nx1 and 100x100 in tests/test_projection.py)."""
    from somad import pipeline

    models = tmp_path / "models"
    pipeline.fit_category(demo_root, "tiles", pipeline.model_path(models, "tiles", "odd"),
                          dict(image_size=64, d=8, epochs=1, cv_folds=2, topology=topology, grid=grid, k=2))
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(models))
    from somad import data

    sample = data.test_samples(demo_root, "tiles")[-1]
    at = _app()
    at.query_params.update({"model": "odd", "footprint": "1", "cell": "3,3",
                            "image": f"{sample.defect}/{sample.path.name}"})
    at.run()
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert _chart_titles(at)[0] == "Footprint of the image on the U-matrix"
    at.switch_page("pages/3_test_inspector.py").run()
    _clean(at)
    assert any(t.startswith("Distance of cell (3, 3)") for t in _chart_titles(at))


def test_pages_show_no_source_strings(app_env, dash_eval):
    """Streamlit's "magic" writes a page's bare expressions into the page: with it on, the attribute
    docstrings of a page's constants appeared at the top of the Test inspector. It is off
    (``.streamlit/config.toml``, ``runner.magicEnabled``); checked on every page with such strings."""
    import ast

    at = _app()
    at.query_params.update({"model": "small"})
    at.run()
    checked = 0
    for page in sorted((REPO / "pages").glob("*.py")):
        body = ast.parse(page.read_text()).body[1:]  # the module docstring is never shown
        strings = [n.value.value for n in body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                   and isinstance(n.value.value, str)]
        if not strings:
            continue
        at.switch_page(f"pages/{page.name}").run()
        _clean(at)
        shown = [m.value for m in at.markdown]
        assert not [s for s in strings if s in shown], page.name
        checked += 1
    assert checked  # the Test inspector has such strings
