"""Acting on the inspection, screen side (dashboard/teaching.py): the slider's rule, the CSV export,
uploads kept for provenance, confirmation and viewer refusal (leaks: tests/test_versions.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard import roles, teaching
from somad.errors import SomadError


def test_slider_rule_names_its_origin_or_the_hand():
    assert teaching.slider_rule(31.2, "F1-optimal on 83 test images", by_hand=False) == "F1-optimal on 83 test images"
    assert teaching.slider_rule(31.2, "F1-optimal on 83 test images", by_hand=True) == \
        "set by hand at 31.2 from the F1-optimal on 83 test images"
    assert teaching.slider_rule(5.0, None, by_hand=False) == "set by hand at 5"
    assert teaching.f1_origin(83) == "F1-optimal on 83 test images"
    assert teaching.curve_origin(0.05, 0.9, "40 validation images") == \
        "point picked on the trade-off curve of 40 validation images (false-alarm rate 5 %, recall 90 %)"


def test_export_table_keeps_rows_order_and_adds_path_threshold_notes():
    table = pd.DataFrame({"#": [2, 0], "image": ["crack/c.png", "good/a.png"], "defect type": ["crack", "good"],
                          "ground truth": ["anomalous", "normal"], "score": [3.5, 9.0],
                          "predicted": ["normal", "anomalous"], "outcome": ["FN", "FP"]})
    paths = [Path("/d/good/a.png"), Path("/d/good/b.png"), Path("/d/crack/c.png")]
    out = teaching.export_table(table, paths, 4.25, notes=["taught to this model (leak)", "", ""])
    assert list(out.columns) == list(teaching.CSV_COLUMNS)
    assert out["path"].tolist() == ["/d/crack/c.png", "/d/good/a.png"]
    assert out["note"].tolist() == ["", "taught to this model (leak)"]
    assert (out["threshold"] == 4.25).all()
    text = teaching.csv_bytes(out).decode()
    assert text.splitlines()[0] == ",".join(teaching.CSV_COLUMNS)
    assert text.splitlines()[1].startswith("crack/c.png,/d/crack/c.png,crack,anomalous,3.5,4.25,normal,FN,")


def test_store_uploads_content_named_once_and_refused_for_viewers(tmp_path, monkeypatch):
    got = teaching.store_uploads(tmp_path, "tiles", [("a b.png", b"xx"), ("again.png", b"xx"), ("c.png", b"yy")])
    assert [p.parent for p in got] == [tmp_path / "tiles" / teaching.UPLOADS_DIR] * 3
    assert got[0].name.endswith("-a_b.png") and got[0].read_bytes() == b"xx"
    assert got[0].name[:16] == got[1].name[:16] != got[2].name[:16]
    monkeypatch.setenv(roles.READ_ONLY_ENV, "1")
    with pytest.raises(roles.ViewerRefused, match="teach the model"):
        teaching.store_uploads(tmp_path, "tiles", [("d.png", b"zz")])
    with pytest.raises(roles.ViewerRefused, match="save a threshold"):
        teaching.save_threshold_version(tmp_path, 1.0, "rule")
    with pytest.raises(roles.ViewerRefused, match="mark a model as the default"):
        teaching.make_default(tmp_path / "tiles" / "x")
    marked = teaching.Marked(["good/a.png"], [tmp_path / "a.png"], np.array([0]), np.array([1.0]))
    with pytest.raises(roles.ViewerRefused):
        teaching.teach_version(tmp_path, marked)
    assert not (tmp_path / "tiles" / teaching.UPLOADS_DIR / "d.png").exists()


def test_marking_defective_images_needs_confirmation(dash_eval):
    bad = int(np.flatnonzero(dash_eval.labels == 1)[0])
    good = int(np.flatnonzero(dash_eval.labels == 0)[0])
    marked = teaching.marked_from_split(dash_eval, [good, bad])
    assert marked.names == [f"good/{dash_eval.samples[good].path.name}",
                            f"{dash_eval.samples[bad].defect}/{dash_eval.samples[bad].path.name}"]
    assert marked.labels.tolist() == [0, 1] and marked.defective == [dash_eval.samples[bad].path]
    assert marked.scores_now.tolist() == pytest.approx([dash_eval.scores[good], dash_eval.scores[bad]])
    with pytest.raises(SomadError, match="1 of the marked images are labelled defective"):
        teaching.check_confirmed(marked, confirmed=False)
    teaching.check_confirmed(marked, confirmed=True)
    teaching.check_confirmed(teaching.marked_from_split(dash_eval, [good]), confirmed=False)


def _version(models: Path, name: str, base_cfg: dict, saved_at: str, provenance: dict | None = None,
             threshold: float | None = None) -> Path:
    folder = models / "tiles" / name
    folder.mkdir(parents=True)
    cfg = dict(base_cfg, saved_at=saved_at)
    if threshold is not None:
        cfg["threshold"] = threshold
    if provenance:
        cfg["provenance"] = provenance
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_version_table_and_compare(dash_model_env, tmp_path):
    from dashboard import versions_view

    base_cfg = json.loads((dash_model_env[1] / "config.json").read_text())
    thr0 = base_cfg["threshold"]
    _version(tmp_path, "base", base_cfg, "2026-01-01T00:00:00")
    _version(tmp_path, "taught", base_cfg, "2026-01-02T00:00:00", threshold=thr0 + 1, provenance={
        "parent": {"name": "base", "path": str(tmp_path / "tiles" / "base")}, "kind": "teach",
        "time": "2026-01-02T00:00:00Z", "note": "warm light",
        "added": [{"path": "/x/a.png", "sha256": "00"}, {"path": "/x/b.png", "sha256": "11", "confirmed_defective": True}],
        "threshold_before": thr0, "threshold_after": thr0 + 1})
    _version(tmp_path, "thr", base_cfg, "2026-01-03T00:00:00", threshold=7.25, provenance={
        "parent": {"name": "taught", "path": "/moved/elsewhere/taught"}, "kind": "threshold", "time": "2026-01-03T00:00:00Z", "rule": "set by hand at 7.25",
        "threshold_before": thr0 + 1, "threshold_after": 7.25, "added": []})
    found = versions_view.category_versions(tmp_path, "tiles")
    assert [v.name for v in found] == ["thr", "taught", "base"]
    by = {v.name: v for v in found}
    by["base"].metrics = {"image_auroc": 0.9}
    by["taught"].metrics = versions_view.known_metrics({"image_auroc": 0.95, "pixel_auroc": None})
    table = versions_view.version_table(found, default="base", loaded="thr").set_index("version")
    assert table.loc["thr", "threshold"] == f"{thr0 + 1:.3f} → 7.250"
    assert table.loc["thr", "rule"] == "set by hand at 7.25" and table.loc["thr", ""] == "open"
    assert table.loc["taught", "images added"] == 2 and table.loc["taught", "parent"] == "base"
    assert table.loc["taught", "image AUROC"] == "0.900 → 0.950"
    assert table.loc["taught", "pixel AUROC"] == ""
    assert "warm light" in table.loc["taught", "note"] and "1 defective-labelled" in table.loc["taught", "note"]
    assert table.loc["base", "change"] == "fit" and table.loc["base", ""] == "default"
    cmp = versions_view.compare(by["taught"], by["base"])
    assert cmp.loc["images added (this step)", "taught"] == "a.png, b.png"
    assert cmp.loc["image AUROC", "base"] == "0.900" and cmp.loc["AUPRO", "base"] == "not evaluated"
    assert cmp.loc["parent", "base"] == "(a fit)"


# ---------------------------------------------------------------------- Test inspector (AppTest)
def _inspector(monkeypatch=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/3_test_inspector.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_false_alarm_target_sets_slider_and_rule(app_env, dash_eval):
    from somad import operating

    model = app_env[2]
    at = _inspector()
    assert any(c.startswith("Rule: deployable threshold (percentile") for c in _captions(at))
    at.toggle(key="w_open_operating").set_value(True).run()
    at.number_input(key="w_far_target").set_value(50.0).run()
    want = operating.threshold_at_false_alarm_rate(model.train_scores_, 0.5)
    next(b for b in at.button if b.key == "w_use_far").click().run()
    assert not at.exception
    assert at.session_state["threshold"] == pytest.approx(want.threshold)
    assert f"Rule: {want.rule}." in _captions(at)
    # moved by hand afterwards: the rule says so and where it started from
    at.slider(key="w_threshold").set_value(want.threshold + 0.01).run()
    rule = next(c for c in _captions(at) if c.startswith("Rule: "))
    assert rule.startswith("Rule: set by hand at ") and rule.endswith(f"from the {want.rule}.")
    # the trade-off curve of the test split is drawn on demand, with the current threshold marked
    def curves():
        return [m for m in at.get("plotly_chart") if "current threshold" in (m.proto.spec or "")]

    assert not curves()
    at.toggle(key="w_show_curve").set_value(True).run()
    assert not at.exception and len(curves()) == 1


def test_viewer_sees_no_write_controls(app_env, monkeypatch):
    from dashboard import roles

    monkeypatch.setenv(roles.READ_ONLY_ENV, "1")
    at = _inspector()
    labels = [t.label for t in at.toggle]
    assert not any(lab.startswith(("Save this threshold", "Mark as normal")) for lab in labels), labels
    monkeypatch.delenv(roles.READ_ONLY_ENV)
    at = _inspector()
    labels = [t.label for t in at.toggle]
    assert any(lab.startswith("Save this threshold") for lab in labels)
    assert any(lab.startswith("Mark as normal") for lab in labels)


def test_model_page_lists_versions_opens_and_makes_default(monkeypatch, demo_root, tmp_path, dash_model_env):
    """A saved threshold makes a version; the Model page lists it with its change, opens it and marks it default."""
    import shutil

    from streamlit.testing.v1 import AppTest

    from somad import store, versions

    models = tmp_path / "models"
    shutil.copytree(dash_model_env[1], models / "tiles" / "small")
    new = versions.save_threshold(models / "tiles" / "small", 4.5, rule="set by hand at 4.5", note="fewer alarms")
    store.set_default(models, "tiles", "small")
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(models))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=180)
    at.run()  # the Model page is the default page
    assert not at.exception, [e.value for e in at.exception]
    assert "Versions" in [s.value for s in at.subheader]
    table = next(d.value for d in at.dataframe if "version" in d.value.columns).set_index("version")
    assert table.loc[new.name, "change"] == "threshold" and table.loc[new.name, "parent"] == "small"
    assert table.loc[new.name, "threshold"].endswith("→ 4.500") and table.loc[new.name, "note"] == "fewer alarms"
    at.selectbox(key="w_version_pick").set_value(new.name).run()
    next(b for b in at.button if b.key == "w_version_default").click().run()
    assert store.marked_name(models, "tiles") == new.name
    next(b for b in at.button if b.key == "w_version_open").click().run()
    assert not at.exception
    assert at.session_state["model_dir"] == str(new)


def test_teach_job_arguments_and_free_version_name(tmp_path):
    for name in ("small", "small-v2", "small-v3"):
        (tmp_path / "tiles" / name).mkdir(parents=True)
    assert teaching.free_version_name(tmp_path / "tiles" / "small") == "small-v4"
    assert teaching.free_version_name(tmp_path / "tiles" / "small-v3") == "small-v4"
    a, b = tmp_path / "a.png", tmp_path / "test" / "crack" / "b.png"
    marked = teaching.Marked(["good/a.png", "crack/b.png"], [a, b], np.array([0, 1]), np.array([1.0, 2.0]))
    argv = teaching.teach_argv(tmp_path / "tiles" / "small", marked, confirmed=True, note="new light",
                               name="small-v4", device="cpu")
    assert argv == ["teach", "--model-dir", str((tmp_path / "tiles" / "small").resolve()), "--name", "small-v4",
                    "--device", "cpu", "--note", "new light", "--confirm-defective", str(a.resolve()), str(b.resolve())]
    plain = teaching.Marked(["good/a.png"], [a], np.array([0]), np.array([1.0]))
    assert "--confirm-defective" not in teaching.teach_argv(tmp_path, plain, confirmed=True, note=None, name="x")


def test_write_url_sends_the_view_even_when_the_server_copy_already_matches(monkeypatch):
    """st.query_params is the server's copy, set before the change is sent: when a run is cut short
    right then, the copy matches while the browser still shows the parent's model= and thr=. The
    URL must be sent anyway (it was skipped, and a reload after "Mark as normal" opened the parent)."""
    from types import SimpleNamespace

    from dashboard import state
    from dashboard.keys import Keys

    sent = []

    class ServerCopy(dict):
        def from_dict(self, values):
            sent.append(dict(values))
            self.clear()
            self.update(values)

    ss = {Keys.MODEL_DIR: "/models/tiles/small-v2", Keys.CATEGORY: "tiles", Keys.THRESHOLD: 32.57774353,
          Keys.CELL: (2, 4), Keys.DATA_DIR: ""}
    want = {"category": "tiles", "model": "small-v2", "cell": "2,4", "thr": "32.5777"}
    assert state.view_params(ss) == want
    fake = SimpleNamespace(session_state=ss, query_params=ServerCopy(want))  # the copy already says so
    monkeypatch.setattr(state, "st", fake)
    state.write_url()
    state.write_url()
    assert sent == [want, want]
