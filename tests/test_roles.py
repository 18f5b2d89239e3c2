"""A dashboard left running for stakeholders: viewers cannot write (hidden and refused on the server),
the presenter unlock, allowed data roots, links that cannot lie, a default model that only moves when
someone moves it, a vanished model, and a category change that opens that category's model."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dashboard import actions, config, links, roles
from dashboard.roles import ViewerRefused
from somad import store

REPO = Path(__file__).resolve().parent.parent
WRITE_BUTTONS = {"Make default", "Rename", "Delete...", "Fit", "Fit a demo model", "Yes, delete"}


def _app(page: str = "app.py"):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / page), default_timeout=180)


def _clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _labels(at) -> set[str]:
    return {b.label for b in at.button}


@pytest.fixture()
def two_models(monkeypatch, tmp_path, demo_root, dash_model_env):
    """A tmp models dir with tiles/alpha (older) and tiles/beta (newer), unmarked; env points the app at it."""
    import json

    models = tmp_path / "models"
    for name, saved in (("alpha", "2026-01-01T00:00:00"), ("beta", "2026-01-02T00:00:00")):
        shutil.copytree(dash_model_env[1], models / "tiles" / name)
        cfg = models / "tiles" / name / "config.json"
        cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), saved_at=saved)))
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(models))
    return models


# ------------------------------------------------------------------------ the guard
def test_viewer_write_functions_are_refused(monkeypatch, two_models):
    """The functions the Model page's buttons call refuse a viewer, whatever the page shows."""
    monkeypatch.setenv("SOMAD_READ_ONLY", "1")
    models = two_models
    assert not roles.can_write() and roles.role_label() == "viewer"
    calls = [(actions.make_default, (models, "tiles", "beta")), (actions.rename, (models, "tiles", "alpha", "x")),
             (actions.delete, (models, "tiles", "alpha")), (actions.check_fit, ())]
    for fn, args in calls:
        with pytest.raises(ViewerRefused, match="viewers cannot"):
            fn(*args)
    assert sorted(p.name for p in store.list_models(models, "tiles")) == ["alpha", "beta"]
    assert store.marked_name(models, "tiles") == ""
    monkeypatch.setenv("SOMAD_READ_ONLY", "0")  # an editor: the same call goes through
    actions.make_default(models, "tiles", "beta")
    assert store.marked_name(models, "tiles") == "beta"


def test_password_check_is_throttled():
    now = [100.0]
    throttle = roles.Throttle(base_s=1.0, cap_s=4.0, clock=lambda: now[0])
    assert roles.check_password("x", None, throttle)[0] is False  # no password configured: nobody unlocks
    ok, msg = roles.check_password("guess", "s3cret", throttle)
    assert not ok and msg == "Wrong password. The next try is possible in 1 s."
    ok, msg = roles.check_password("s3cret", "s3cret", throttle)  # during the wait even the right one is not compared
    assert not ok and msg.startswith("Too many wrong passwords")
    now[0] += 1.0
    assert roles.check_password("guess", "s3cret", throttle)[1].endswith("in 2 s.")
    now[0] += 2.0
    assert roles.check_password("guess", "s3cret", throttle)[1].endswith("in 4 s.")
    now[0] += 4.0
    assert roles.check_password("guess", "s3cret", throttle)[1].endswith("in 4 s.")  # capped
    now[0] += 4.0
    assert roles.check_password("s3cret", "s3cret", throttle)[0] is True
    assert throttle.failures == 0 and throttle.wait_left() == 0


def test_viewer_session_has_no_write_controls_and_presenter_unlocks(monkeypatch, two_models):
    monkeypatch.setenv("SOMAD_READ_ONLY", "1")
    at = _app()
    at.secrets["presenter_password"] = "open sesame"
    at.query_params.update({"password": "open sesame"})  # a password in a link unlocks nothing
    at.run()
    _clean(at)
    assert any("Viewer mode" in i.value for i in at.info)
    assert not _labels(at) & WRITE_BUTTONS, _labels(at)
    assert not [t for t in at.text_input if t.key in ("w_data_dir", "w_rename", "fit_name")]
    assert any("unknown link parameter 'password' ignored" in t.value for t in at.toast)
    roles.THROTTLE.succeeded()
    at.text_input(key="w_password").input("open sesam")
    next(b for b in at.button if b.label == "Unlock presenter mode").click().run()
    _clean(at)
    assert any(e.value.startswith("Wrong password") for e in at.error)
    assert not _labels(at) & WRITE_BUTTONS
    roles.THROTTLE.succeeded()  # skip the wait the wrong try started
    at.text_input(key="w_password").input("open sesame")
    next(b for b in at.button if b.label == "Unlock presenter mode").click().run()
    _clean(at)
    assert {"Default", "Rename", "Delete..."} <= _labels(at)  # "Default": the selected model is the default
    fresh = _app()  # another browser session stays a viewer
    fresh.secrets["presenter_password"] = "open sesame"
    fresh.run()
    assert not _labels(fresh) & WRITE_BUTTONS
    next(b for b in at.button if b.label == "Lock").click().run()
    assert not _labels(at) & WRITE_BUTTONS


# ------------------------------------------------------------------------ allowed roots
def test_link_outside_allowed_roots_is_refused_alike(monkeypatch, two_models, demo_root, tmp_path):
    monkeypatch.setenv("SOMAD_DATA_ROOTS", str(demo_root))
    secret = tmp_path / "private"
    shutil.copytree(demo_root / "tiles", secret / "tiles")
    messages = []
    for root in (str(secret), str(tmp_path / "missing"), f"{demo_root}/../../{secret.name}"):
        at = _app()
        at.query_params["root"] = root
        at.run()
        _clean(at)
        assert at.session_state["data_dir"] == str(demo_root)
        messages.append([e.value for e in at.error])
        assert not any(str(tmp_path) in str(el.value) for el in [*at.error, *at.toast, *at.warning])
    assert messages[0] == messages[1] == messages[2] == [config.ROOT_REFUSED]
    assert not [t for t in at.text_input if t.key == "w_data_dir"]  # no free-text root
    assert at.selectbox(key="w_root_pick").options == [str(demo_root)]


def test_root_allowed_compares_resolved_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "b", target_is_directory=True)
    roots = [tmp_path / "a"]
    assert config.root_allowed(tmp_path / "x" / ".." / "a", roots)
    assert not config.root_allowed(tmp_path / "a" / "..", roots)
    assert not config.root_allowed(tmp_path / "link", roots)
    assert not config.root_allowed("", roots)


# ------------------------------------------------------------------------ links
def test_parse_link_drops_what_cannot_be_used():
    values, dropped = links.parse_link({"thr": "nan", "neuron": "3,-1", "cell": "2,4", "image": "good/000.png",
                                        "zoom": "9"}, ["thr", "neuron", "cell", "image"])
    assert values == {"cell": (2, 4), "image": "good/000.png"}
    assert dropped == ["unknown link parameter 'zoom' ignored",
                       "threshold 'nan' is not a finite number ≥ 0: the model's deployable threshold is used",
                       "neuron '3,-1' is not 'row,col': the page picks one"]
    for bad in ("inf", "-5", "1e999", "x"):
        assert links.parse_link({"thr": bad}, ["thr"])[0] == {}
    assert links.parse_link({"thr": "32.5"}, ["thr"])[0] == {"thr": 32.5}
    values = {"neuron": (16, 0), "cell": (15, 15), "image": "hole/999.png"}
    dropped = links.check_ranges(values, (16, 16), (16, 16), ["good/000.png"])
    assert values == {"cell": (15, 15)} and len(dropped) == 2
    assert dropped[0] == "neuron 16,0 is outside the model's 16x16 SOM: the page picks one"


def test_nan_threshold_link_is_dropped_with_a_toast(app_env, dash_eval):
    at = _app()
    at.query_params.update({"model": "small", "thr": "nan", "neuron": "99,1"})
    at.run()
    _clean(at)
    (toast,) = [t.value for t in at.toast]
    assert "threshold 'nan' is not a finite number" in toast and "neuron 99,1 is outside" in toast
    at.switch_page("pages/3_test_inspector.py").run()
    _clean(at)
    assert at.session_state["threshold"] == pytest.approx(float(app_env[2].threshold_))
    fn = sum((dash_eval.labels == 1) & (dash_eval.scores < app_env[2].threshold_))
    assert next(m.value for m in at.metric if m.label == "FN") == str(fn)


# ------------------------------------------------------------------------ default model
def test_default_only_moves_when_someone_moves_it(two_models, dash_model_env):
    models = two_models
    assert store.default_model(models, "tiles").name == "alpha"  # unmarked: the oldest, not the newest
    assert store.pin_default(models, "tiles") == "alpha"
    shutil.copytree(dash_model_env[1], models / "tiles" / "default")  # a newer model named 'default'
    assert store.default_model(models, "tiles").name == "alpha"
    assert store.pin_default(models, "tiles") is None  # already marked: nothing written
    store.delete_model(models, "tiles", "alpha")  # the marked one goes: the name rule, then the oldest
    assert store.default_model(models, "tiles").name == "default"
    empty = models.parent / "empty"
    assert store.pin_default(empty, "tiles") is None and not (empty / "tiles").exists()


def test_vanished_model_opens_the_default_with_a_browser_message(two_models):
    models = two_models
    at = _app()
    at.query_params["model"] = "beta"
    at.run()
    _clean(at)
    assert at.session_state["model_dir"] == str(models / "tiles" / "beta")
    store.delete_model(models, "tiles", "beta")  # e.g. from another browser session
    at.switch_page("pages/2_som_explorer.py").run()
    _clean(at)
    # one warning about the model (the page may add its own, e.g. the regions' weak-structure note)
    (warning,) = [w.value for w in at.warning if "you were looking at" in w.value]
    assert warning == ("The model **beta** you were looking at was renamed or deleted (perhaps from another "
                       "browser): the default model **alpha** of **tiles** is shown instead.")
    assert at.session_state["model_dir"] == str(models / "tiles" / "alpha")
    texts = [str(el.value) for el in [*at.error, *at.warning, *at.info, *at.toast]]
    assert not any("python -m" in t or "somad fit" in t for t in texts)


def test_category_change_opens_its_default_model(two_models, dash_model_env):
    models = two_models
    shutil.copytree(dash_model_env[1], models / "washers" / "w1")
    at = _app()
    at.run()
    assert at.session_state["model_dir"].endswith("alpha")
    at.selectbox(key="w_category").set_value("washers").run()
    _clean(at)
    assert at.session_state["model_dir"] == str(models / "washers" / "w1")
    assert at.session_state["category"] == "washers"
