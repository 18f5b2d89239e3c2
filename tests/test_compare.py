"""Two models side by side (somad.compare, the Compare models page), the regions and replay sections of
the SOM explorer and the Model page's headline metrics, with AppTest (no browser); the report's new
sections."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from somad import compare, figures

REPO = Path(__file__).resolve().parent.parent


def _ev(names, labels, scores, metrics=None):
    samples = [SimpleNamespace(defect=n.split("/")[0], path=Path("/x") / n) for n in names]
    return SimpleNamespace(samples=samples, labels=np.array(labels), scores=np.array(scores, float),
                           metrics=metrics or {})


def test_metrics_table_difference():
    rows = compare.metrics_table({"image_auroc": 0.9, "aupro": 0.8, "threshold": 3.0, "n_test": 10},
                                 {"image_auroc": 0.95, "aupro": None, "threshold": 4.5, "n_test": 10}, ("a", "b"))
    by = {r["metric"]: r for r in rows}
    assert by["Image AUROC"]["difference"] == pytest.approx(0.05)
    assert np.isnan(by["AUPRO"]["b"]) and np.isnan(by["AUPRO"]["difference"])
    assert by["Image threshold"]["difference"] == pytest.approx(1.5)
    assert by["Test images"]["difference"] == 0
    assert list(rows[0]) == ["metric", "a", "b", "difference"]


def test_verdict_differences_by_name():
    """Matched by <defect>/<file> whatever the order; at or above each model's own threshold is anomalous."""
    a = _ev(["good/0.png", "crack/1.png", "crack/2.png", "good/3.png", "hole/9.png"], [0, 1, 1, 0, 1],
            [1.0, 5.0, 2.0, 3.0, 8.0])
    b = _ev(["crack/2.png", "good/3.png", "crack/1.png", "good/0.png", "good/7.png"], [1, 0, 1, 0, 0],
            [10.0, 9.9, 20.0, 10.0, 1.0])
    rows, counts = compare.verdict_differences(a, b, 3.0, 10.0, ("A", "B"))
    # A: 0 normal, 1 anomalous, 2 normal, 3 anomalous (3.0 >= 3.0). B: 0 anomalous (10 >= 10), 1 anomalous,
    # 2 anomalous, 3 normal
    assert [r["image"] for r in rows] == ["crack/2.png", "good/0.png", "good/3.png"]
    assert [r["right"] for r in rows] == ["B", "A", "B"]
    assert rows[0]["verdict A"] == "normal" and rows[0]["verdict B"] == "anomalous"
    assert counts == {"common": 4, "differ": 3, "only_a": 1, "only_b": 1, "right_a": 1, "right_b": 2}


def test_heat_at_own_size_keeps_the_image_geometry():
    original = np.full((300, 500, 3), 128, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[:, 32:] = 10.0
    out = compare.heat_at_own_size(original, amap, (0.0, 10.0))
    assert out.shape == (300, 500, 3)
    assert not np.array_equal(out[:, 10], out[:, 490])  # left cold, right hot: the map was resized across


def test_overlays_have_one_curve_per_model():
    fig = figures.roc_overlay([("a", np.r_[0, 1], np.r_[0, 1], 0.5), ("b", np.r_[0, .5, 1], np.r_[0, 1, 1], .75)])
    assert [t.name for t in fig.data[:2]] == ["a: AUROC 0.500", "b: AUROC 0.750"]
    fig = figures.pro_overlay([("a", np.r_[0, 1], np.r_[0, 1], 0.4)])
    assert fig.data[0].name == "a: AUPRO@0.3 0.400"


def test_headline_missing_is_nan():
    h = compare.headline({"image_auroc": 0.9, "pixel_auroc": float("nan")})
    assert h["Image AUROC"] == 0.9 and np.isnan(h["Pixel AUROC"]) and np.isnan(h["AUPRO"])


# ---------------------------------------------------------------- pages (AppTest)
@pytest.fixture()
def two_env(monkeypatch, two_models_env, demo_root):
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(two_models_env[0]))
    return two_models_env


def _app(query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at


def _clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_compare_page_from_the_url(two_env):
    """A link with model=small&vs=hex96 opens both: metrics with their difference, both heatmaps of one test
    image at its own size, the curves; a 64 px 16x16 model against a 96 px 8x12 hexagonal one."""
    at = _app({"model": "small", "vs": "hex96", "image": "hole/001.png"})
    at.run()
    at.switch_page("pages/6_compare.py").run()
    _clean(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["compare"] == "hex96"
    table = at.dataframe[0].value
    assert list(table.columns) == ["metric", "small", "hex96", "difference"]
    auroc = table.set_index("metric").loc["Image AUROC"]
    assert auroc["difference"] == pytest.approx(auroc["hex96"] - auroc["small"])
    heads = [s.value for s in at.subheader]
    assert heads == ["Metrics", "Test images whose verdict differs", "Both heatmaps of one test image",
                     "ROC and PRO curves"]
    captions = " ".join(c.value for c in at.caption)
    assert "16x16 rectangular" in captions and "8x12 hexagonal" in captions
    caps = [i.proto.imgs[0].caption for i in at.get("image")]
    assert len(caps) == 2 and caps[0].startswith("small: score") and caps[1].startswith("hex96: score")
    assert all("x" in c.split("; ")[-1] for c in caps)  # each says its pixel size
    assert at.selectbox(key="w_compare_image").value == at.session_state["image"] == "hole/001.png"


def test_compare_page_with_one_model_says_what_is_missing(app_env):
    at = _app()
    at.run()
    at.switch_page("pages/6_compare.py").run()
    _clean(at)
    assert any("Only one model is saved" in i.value for i in at.info)


def test_som_explorer_regions_and_replay(two_env):
    """The regions section (number from the URL, changed by the input) and the replay of a model that kept one;
    the model without one says how to get it."""
    at = _app({"model": "hex96", "regions": "3"})
    at.run()
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert at.session_state["n_regions"] == 3
    assert "Regions of the map" in [s.value for s in at.subheader]
    assert any("3 regions, as chosen by the user" in c.value for c in at.caption)
    summary = at.dataframe[0].value
    assert list(summary["region"]) == ["R1", "R2", "R3"]
    assert "test anomaly mass" in summary.columns
    assert not any("fitted without a training replay" in i.value for i in at.info)
    at.number_input(key="w_n_regions").set_value(0).run()
    _clean(at)
    assert at.session_state["n_regions"] is None
    assert any("chosen automatically" in c.value for c in at.caption)
    at.switch_page("pages/1_model.py").run()
    at.selectbox(key="w_saved_model").set_value(str(two_env[1])).run()
    at.button[0].click().run()  # Load the model without a replay
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    assert any("fitted without a training replay" in i.value for i in at.info)


def test_model_page_lists_headline_metrics(two_env):
    at = _app({"model": "small", "vs": "hex96"})
    at.run()
    at.switch_page("pages/6_compare.py").run()  # evaluates both
    at.switch_page("pages/1_model.py").run()
    _clean(at)
    tables = [d.value for d in at.dataframe if "Image AUROC" in getattr(d.value, "columns", [])]
    assert tables and sorted(tables[0]["model"]) == ["hex96", "small"]


def test_report_has_regions_and_replay(two_models_env, demo_root):
    from somad import pipeline, report

    model = two_models_env[3]
    ev = pipeline.evaluate_model(model, demo_root, "tiles", return_patches=True)
    text = report.build_report(model, ev)
    assert "<h2>SOM regions</h2>" in text and "test anomaly mass" in text
    assert "Training replay: epoch 2 of 2" in text and "Play" in text
    assert "<script src=" not in text  # self-contained: plotly.js embedded, no CDN


def test_link_region_count_is_checked():
    from dashboard import links
    from dashboard.state import URL_KEYS

    values, dropped = links.parse_link({"regions": "4", "vs": "hex96"}, URL_KEYS)
    assert values == {"regions": 4, "vs": "hex96"} and not dropped
    for bad in ("-1", "21", "x", "2.5"):
        values, dropped = links.parse_link({"regions": bad}, URL_KEYS)
        assert "regions" not in values and "number of regions" in dropped[0]
