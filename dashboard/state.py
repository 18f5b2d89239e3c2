"""Per-session state (``st.session_state``): dataset root, category, current model, selected
neuron / test image / cell, threshold. Pages read the current model through :func:`require_model`."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from somad import data, demo, pipeline, store
from somad.errors import SomadError
from somad.persistence import is_model_dir

from . import config, links, loaders, roles
from .keys import Keys


SELECTIONS = (Keys.NEURON, Keys.IMAGE, Keys.CELL, Keys.THRESHOLD, Keys.W_THRESHOLD, Keys.W_NEURON_ROW,
              Keys.W_NEURON_COL, Keys.LAST_CLICK, Keys.DRAWN_SELECTION, Keys.N_REGIONS, Keys.W_N_REGIONS, Keys.W_FOOTPRINT_IMAGE)
"""What a change of model resets."""

URL_KEYS = {"root": Keys.DATA_DIR, "category": Keys.CATEGORY, "model": Keys.MODEL_DIR, "image": Keys.IMAGE,
            "neuron": Keys.NEURON, "cell": Keys.CELL, "thr": Keys.THRESHOLD, "regions": Keys.N_REGIONS,
            "vs": Keys.COMPARE, "footprint": Keys.FOOTPRINT}
"""Query parameter -> session key of the view state kept in the URL."""


@dataclass(frozen=True)
class PageSpec:
    """One page of the app: its file, title, icon and URL path ('' for the default page)."""

    path: str
    title: str
    icon: str
    url_path: str = ""


PAGE_SPECS = {
    "model": PageSpec("pages/1_model.py", "Model", ":material/model_training:"),
    "som": PageSpec("pages/2_som_explorer.py", "SOM explorer", ":material/grid_on:", "som_explorer"),
    "inspector": PageSpec("pages/3_test_inspector.py", "Test inspector", ":material/image_search:",
                          "test_inspector"),
    "metrics": PageSpec("pages/4_metrics.py", "Metrics", ":material/monitoring:", "metrics"),
    "try": PageSpec("pages/5_try_an_image.py", "Try an image", ":material/upload:", "try_an_image"),
    "compare": PageSpec("pages/6_compare.py", "Compare models", ":material/compare:", "compare"),
}
PAGES = {name: spec.path for name, spec in PAGE_SPECS.items()}


@dataclass
class Current:
    """The model the pages work on."""

    model: object
    model_dir: str
    data_dir: str
    category: str
    device: str


_entry = threading.local()  # .active: app.py's navigation is running this page in this thread


def navigation(position: str = "sidebar"):
    """``st.navigation`` over :data:`PAGE_SPECS` (the default page first)."""
    pages = [st.Page(config.REPO / spec.path, title=spec.title, icon=spec.icon, default=not spec.url_path,
                     **({"url_path": spec.url_path} if spec.url_path else {}))
             for spec in PAGE_SPECS.values()]
    return st.navigation(pages, position=position)


def run_app() -> None:
    """The entry script's body: navigation, sidebar, the view state into the URL, the chosen page,
    then the view state into the URL again (the page may have changed it).

    The first write is what a page that ends early with ``st.stop()`` leaves in the URL: after a
    stop, Streamlit drops what the script still sends, the second write included.
    """
    init()
    nav = navigation()
    if st.session_state.get(Keys.LINK_REFUSED):
        st.error(st.session_state.pop(Keys.LINK_REFUSED), icon=":material/block:")
    sidebar(current(show_errors=False))
    write_url()
    _entry.active = True
    try:
        nav.run()
    finally:
        _entry.active = False
        write_url()


def ensure_navigation() -> None:
    """Call first in every page file.

    Streamlit treats a ``pages/`` folder next to the entry script as a legacy (v1) multipage app
    until ``st.navigation`` has been called once in the server process, so the first request for a
    page URL such as ``/som_explorer`` runs that page file alone, without ``app.py``. Such a run is
    detected here (``app.py`` marks the runs it starts) and answered with the public API: calling
    ``st.navigation`` switches Streamlit to navigation mode (documented: "disregard v1 behavior"),
    and ``st.rerun`` then runs ``app.py`` and this page through its ``st.Page``. No private attribute
    is written; ``tests/test_browser.py`` opens a page URL on a fresh server to check this.
    """
    if not getattr(_entry, "active", False) and not st.session_state.get(Keys.NAV_RERUN):
        st.session_state[Keys.NAV_RERUN] = True  # once per session, so a page run alone (AppTest) goes on
        navigation(position="hidden")
        st.rerun()
    init()


def categories(root: str | Path) -> tuple[list[str], str | None]:
    """Categories under ``root`` and an error message (None when fine)."""
    if not str(root).strip():
        return [], "No dataset root given: type the folder that holds the categories, or pick a known root."
    try:
        found = data.list_categories(root)
    except SomadError as exc:
        return [], str(exc)
    if not found:
        return [], (f"No MVTec-layout category under {root}: a category is a folder with train/good/ "
                    "(and test/<defect>/, ground_truth/<defect>/ for evaluation). Pick another root.")
    return found, None


def init() -> None:
    """Fill defaults once per session: the view state from the URL where it checks out
    (:func:`restore_link`), else the data root (demo data generated if needed), the first category
    that has a saved model, and its default model (:func:`somad.store.default_model`)."""
    ss = st.session_state
    if ss.get(Keys.INIT):
        return
    try:
        device = config.device()
    except SomadError as exc:  # nothing works without a device: one message, no page
        navigation(position="hidden")  # else Streamlit lists the pages/ files itself
        st.error(str(exc))
        st.stop()
    ss[Keys.INIT] = True
    _ensure_demo(config.data_dir())
    ss.setdefault(Keys.DEVICE, device)
    restore_link({param: st.query_params.get(param) for param in st.query_params})


def roots_fixed() -> bool:
    """True when the data roots are a fixed list (``SOMAD_DATA_ROOTS`` set, or a viewer session):
    no free-text root, and a link's root must be one of :func:`dashboard.config.offered_roots`."""
    return config.allowed_roots() is not None or not roles.can_write()


def root_permitted(root: str) -> bool:
    """May this session open dataset root ``root``? (Always, unless :func:`roots_fixed`.)"""
    return not roots_fixed() or config.root_allowed(root, config.offered_roots())


def restore_link(params: dict[str, str]) -> None:
    """Set the session's view from a link's query parameters, checking every value
    (:mod:`dashboard.links`): a root outside the allowed ones is refused with
    :data:`dashboard.config.ROOT_REFUSED`; an unknown category or model, a non-finite or negative
    threshold, a neuron, cell or image the model does not have, and unknown parameters are dropped;
    one toast says what was dropped."""
    ss = st.session_state
    values, dropped = links.parse_link(params, URL_KEYS)
    root = values.get("root")
    if root is not None and not root_permitted(str(root)):
        ss[Keys.LINK_REFUSED] = config.ROOT_REFUSED  # shown by run_app, above the page
        root = None
    ss.setdefault(Keys.DATA_DIR, str(root) if root is not None else str(config.data_dir()))
    cats, _ = categories(ss[Keys.DATA_DIR])
    with_model = [c for c in cats if store.default_model(config.models_dir(), c)]
    category = values.get("category")
    if category is not None and category not in cats:
        dropped.append(f"category {str(category)[:40]!r} is not in this data set")
        category = None
    ss.setdefault(Keys.CATEGORY, category or (with_model or cats or [None])[0])
    dropped += _restore_model(values.get("model"))
    if {"neuron", "cell", "image"} & set(values):
        dropped += links.check_ranges(values, *_link_context())
    for param in ("neuron", "cell", "thr", "image", "regions", "vs"):
        if param in values:
            ss[URL_KEYS[param]] = None if param == "regions" and values[param] == 0 else values[param]
    if "footprint" in values:
        if values["footprint"] == "1":
            ss[Keys.FOOTPRINT] = "1"
        else:
            dropped.append(f"footprint {str(values['footprint'])[:20]!r} is not '1': the map is shown without it")
    if dropped:
        st.toast(links.dropped_message(dropped), icon=":material/link_off:", duration="long")


def _link_context() -> tuple[tuple[int, int] | None, tuple[int, int] | None, list[str] | None]:
    """(SOM grid, feature map shape, test image names) of the session's model, for
    :func:`dashboard.links.check_ranges`; None for what cannot be read (the page then says why)."""
    ss = st.session_state
    grid = shape = names = None
    if ss.get(Keys.MODEL_DIR):
        try:
            model = loaders.get_model(ss[Keys.MODEL_DIR], ss.get(Keys.DEVICE, "cpu"))
            grid, shape = tuple(model.grid_), tuple(model.feature_shape_)
        except Exception:  # a damaged model: the pages show the loading error
            pass
        root, category = ss.get(Keys.MODEL_DATA, (ss.get(Keys.DATA_DIR), ss.get(Keys.CATEGORY)))
        try:
            names = [f"{s.defect}/{s.path.name}" for s in data.test_samples(root, category)]
        except Exception:  # no usable test split: the pages say so
            pass
    return grid, shape, names


def _ensure_demo(root: Path) -> None:
    if root.resolve() == config.DEMO_DIR.resolve() and not (root.is_dir() and any(root.iterdir())):
        try:
            with st.spinner("Generating the demo data set (first start only)..."):
                demo.ensure_demo(root)
        except OSError as exc:
            st.error(f"Cannot write the demo data to {root}: {exc}. Set SOMAD_DATA_DIR to a writable folder.")


def _restore_model(name: str | None) -> list[str]:
    """Select the URL's model of the session's category, else that category's default model;
    returns the reason when the link's model was not used."""
    ss = st.session_state
    category = ss.get(Keys.CATEGORY)
    if not category:
        return []
    chosen = pipeline.model_path(config.models_dir(), category, name) if name else None
    dropped = []
    if chosen is None or chosen not in pipeline.list_models(config.models_dir(), category):
        fallback = store.default_model(config.models_dir(), category)
        if name:
            dropped.append(f"model {str(name)[:40]!r} is not saved for '{category}': "
                           + ("opened the default model" if fallback else "no model is saved for it yet"))
        chosen = fallback
    if chosen is not None:
        select_model(str(chosen), ss[Keys.DATA_DIR], category)
    return dropped


def url_float(value: float) -> str:
    """A float as the URL writes it (6 significant digits)."""
    return f"{value:.6g}"


def view_params(ss) -> dict[str, str]:
    """The query parameters of the view state in ``ss`` (a session state): :data:`URL_KEYS` with a
    value, the model by its folder name, pairs as ``r,c``, floats to 6 significant digits."""
    want = {}
    for param, key in URL_KEYS.items():
        value = ss.get(key)
        if value is None or value == "":
            continue
        if key == Keys.MODEL_DIR:
            value = Path(value).name
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, float):
            value = url_float(value)
        want[param] = str(value)
    return want


def write_url() -> None:
    """Mirror the view state (:func:`view_params`) in the page URL, always sending it.

    Never skipped when ``st.query_params`` already holds these values: that server-side copy is not
    the browser's URL. Streamlit sets it (and the query string a later ``st.rerun`` carries) before
    it sends the change, and the change is lost when the run is cut short at that moment (a pending
    ``st.stop``/rerun request, or a click that makes Streamlit replace the running script: its
    messages are then ignored while it may still write that shared copy). A run that compared with
    the copy then saw "already there" and never resent it, so after "Mark as normal" or "Save this
    threshold" the URL could keep the parent's ``model=`` and ``thr=`` and a reload opened the parent.
    Sending every time costs one small message per run; the browser changes its history only when
    the URL differs.
    """
    st.query_params.from_dict(view_params(st.session_state))


NEW_VERSION_KEEPS = (Keys.IMAGE, Keys.CELL)
"""What opening a new version (taught, threshold saved) of the open model keeps: the same test split,
so the engineer goes on looking at the image they acted on."""

NEW_VERSION_FOLDS = (Keys.W_OPEN_MARK, Keys.W_OPEN_SAVE, Keys.W_OPEN_OPERATING)
"""The panels that made the new version, folded once it opens (they would aim at it again)."""


def select_model(model_dir: str | None, data_dir: str | None = None, category: str | None = None,
                 new_version: bool = False) -> None:
    """Make ``model_dir`` the current model (evaluated on ``data_dir``/``category``); resets selections,
    except :data:`NEW_VERSION_KEEPS` when ``new_version`` (a version just made from the open model)."""
    ss = st.session_state
    ss[Keys.MODEL_DIR] = model_dir
    ss[Keys.MODEL_DATA] = (data_dir or ss.get(Keys.DATA_DIR), category or ss.get(Keys.CATEGORY))
    ss.pop(Keys.W_SAVED_MODEL, None)  # the Model page's picker then follows the loaded model
    for key in SELECTIONS:
        if not (new_version and key in NEW_VERSION_KEEPS):
            ss.pop(key, None)
    if new_version:  # folded by dashboard.teach_panel.section before the toggle is drawn again (a widget's
        ss[Keys.FOLD_PANELS] = set(NEW_VERSION_FOLDS)  # value cannot be set once it is drawn in this run)


def select_image(name: str) -> None:
    """Make test image ``name`` ("<defect>/<file>") the selected one; clears the selected cell."""
    ss = st.session_state
    if ss.get(Keys.IMAGE) != name:
        ss[Keys.IMAGE] = name
        ss.pop(Keys.CELL, None)


def current(show_errors: bool = True) -> Current | None:
    """The current model, or None (with an st.error when it fails to load)."""
    ss = st.session_state
    model_dir = ss.get(Keys.MODEL_DIR)
    if not model_dir:
        return None
    data_dir, category = ss.get(Keys.MODEL_DATA, (ss.get(Keys.DATA_DIR), ss.get(Keys.CATEGORY)))
    if not is_model_dir(model_dir):  # renamed or deleted since (by another session, or on disk)
        model_dir = _replace_vanished(model_dir, data_dir, category)
        if model_dir is None:
            return None
    device = ss.get(Keys.DEVICE, "cpu")
    try:
        model = loaders.get_model(model_dir, device)
    except SomadError as exc:
        if not is_model_dir(model_dir):  # removed while loading: the same browser-worded message
            return current(show_errors) if _replace_vanished(model_dir, data_dir, category) else None
        if show_errors:
            st.error(f"The model at {model_dir} could not be loaded: {exc}")
        return None
    except Exception as exc:  # torch / safetensors surprises: never a traceback in the page
        if show_errors:
            st.error(f"The model at {model_dir} could not be loaded ({type(exc).__name__}: {exc}). "
                     "Fit it again on the Model page.")
        return None
    return Current(model, str(model_dir), str(data_dir), str(category), device)


def vanished_message(name: str, category: str, fallback: str | None) -> str:
    """Browser-worded: the session's model ``name`` is gone, and what opened instead."""
    instead = (f"the default model **{fallback}** of **{category}** is shown instead." if fallback else
               f"no other model of **{category}** is saved: fit one on the Model page.")
    return f"The model **{name}** you were looking at was renamed or deleted (perhaps from another browser): {instead}"


def _replace_vanished(model_dir: str, data_dir: str, category: str) -> str | None:
    """Open the category's default model in place of the vanished ``model_dir`` and say so; returns it (or None)."""
    fallback = store.default_model(config.models_dir(), category) if category else None
    st.warning(vanished_message(Path(model_dir).name, category, fallback.name if fallback else None),
               icon=":material/info:")
    select_model(str(fallback) if fallback else None, data_dir, category)
    return str(fallback) if fallback else None


def require_model() -> Current:
    """The current model, or stop the page with an st.info pointing at the Model page."""
    cur = current()
    if cur is None:
        st.info("No model is loaded: load or fit a model on the **Model** page.")
        st.page_link(PAGES["model"], label="Go to the Model page", icon=":material/model_training:")
        st.stop()
    return cur


def scored_evaluation(model_dir: str, data_dir: str, category: str, device: str):
    """The evaluation of ``model_dir`` on the test split from the on-disk cache, after waiting for a
    "score" job when it is not there yet (count and time left shown, :func:`dashboard.jobs_view.wait_for_scores`).

    Raises:
        SomadError: the split cannot be scored, or the job failed or was cancelled (its reason).
    """
    from somad.scorecache import NotCached

    from . import jobs_view

    try:
        return loaders.get_evaluation(model_dir, data_dir, category, device)
    except NotCached:
        job = jobs_view.wait_for_scores(config.models_dir(), model_dir, data_dir, category, device)
        if job.status != "done":
            raise SomadError(f"scoring the test split did not finish ({job.status}"
                             + (f": {job.error}" if job.error else "") + "); reload the page to try again") from None
        return loaders.get_evaluation(model_dir, data_dir, category, device)


def require_evaluation(cur: Current):
    """The evaluation of the current model on its category's test split, or stop with a message.

    Read from the cache next to the model (:mod:`somad.scorecache`); on the first visit a "score"
    job computes it (one per model and data, shared by every session and kept over restarts) while
    the page shows the count of images scored and the time left (:func:`dashboard.jobs_view.wait_for_scores`).
    """
    ev = evaluation(cur)
    if ev is None:
        st.stop()
    return ev


def evaluation(cur: Current):
    """As :func:`require_evaluation`, but None after a message saying why there is none (the page goes on)."""
    try:
        return scored_evaluation(cur.model_dir, cur.data_dir, cur.category, cur.device)
    except SomadError as exc:
        st.warning(f"Cannot evaluate on the test split of '{cur.category}' under {cur.data_dir}: {exc}")
    except Exception as exc:
        st.error(f"Scoring the test images failed ({type(exc).__name__}: {exc}).")
    return None


def image_names(ev) -> list[str]:
    """``"<defect>/<file name>"`` of every test image of an evaluation (the key of :data:`Keys.IMAGE`)."""
    return [f"{s.defect}/{s.path.name}" for s in ev.samples]


def threshold(cur: Current) -> float:
    """The session's image threshold (default: the model's deployable ``threshold_``). A value that
    reads as the model's own in the URL (:func:`url_float`, e.g. after a reload) is the model's exact
    threshold: the rounded copy would call the rule "set by hand" and could flip an image that scores
    exactly the saved threshold."""
    ss = st.session_state
    model_thr = float(cur.model.threshold_)
    if ss.get(Keys.THRESHOLD) is None or url_float(float(ss[Keys.THRESHOLD])) == url_float(model_thr):
        ss[Keys.THRESHOLD] = model_thr
    return float(ss[Keys.THRESHOLD])


def sidebar(cur: Current | None) -> None:
    """Short summary of the current model in the sidebar."""
    with st.sidebar:
        if roles.read_only_server():
            st.caption(":material/visibility: **Viewer**: this dashboard is shared read-only." if not roles.can_write()
                       else ":material/edit: **Presenter** mode (this browser tab).")
        if cur is None:
            st.caption("No model loaded.")
            return
        m = cur.model
        st.caption(f"**Model** `{Path(cur.model_dir).name}` · category **{cur.category}**  \n"
                   f"{m.backbone}, {m.image_size}px, SOM {m.grid_[0]}x{m.grid_[1]} {m.topology}  \n"
                   f"threshold {threshold(cur):.3f}")
