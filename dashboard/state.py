"""Per-session state (``st.session_state``): dataset root, category, current model, selected
neuron / test image / cell, threshold. Pages read the current model through :func:`require_model`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from somad import data, demo, pipeline
from somad.errors import SomadError

from . import config, loaders

PAGES = {
    "model": "pages/1_model.py",
    "som": "pages/2_som_explorer.py",
    "inspector": "pages/3_test_inspector.py",
    "metrics": "pages/4_metrics.py",
    "try": "pages/5_try_an_image.py",
}


@dataclass
class Current:
    """The model the pages work on."""

    model: object
    model_dir: str
    data_dir: str
    category: str
    device: str


def ensure_navigation() -> None:
    """Call first in every page file.

    Streamlit 1.67 treats a ``pages/`` folder next to the entry script as a legacy (v1) multipage
    app until the entry script has called ``st.navigation`` once in the server process, so the
    first request for a page URL such as ``/som_explorer`` would run the page file alone, without
    ``app.py``. Here such a run switches the server to ``st.navigation`` mode and reruns, which
    runs ``app.py`` and then this page through its ``st.Page``.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future Streamlit without that class: nothing to fix
        init()
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
    init()


def categories(root: str | Path) -> tuple[list[str], str | None]:
    """Categories under ``root`` and an error message (None when fine)."""
    try:
        found = data.list_categories(root)
    except SomadError as exc:
        return [], str(exc)
    if not found:
        return [], (f"No MVTec-layout category under {root}: a category is a folder with train/good/ "
                    "(and test/<defect>/, ground_truth/<defect>/ for evaluation). Pick another root.")
    return found, None


def init() -> None:
    """Fill defaults once per session: data root (demo data generated if needed), the first
    category that has a saved model, and its newest model."""
    ss = st.session_state
    if ss.get("_init"):
        return
    ss["_init"] = True
    root = config.data_dir()
    if root.resolve() == config.DEMO_DIR.resolve() and not (root.is_dir() and any(root.iterdir())):
        try:
            with st.spinner("Generating the demo data set (first start only)..."):
                demo.ensure_demo(root)
        except OSError as exc:
            st.error(f"Cannot write the demo data to {root}: {exc}. Set SOMAD_DATA_DIR to a writable folder.")
    ss.setdefault("data_dir", str(root))
    ss.setdefault("device", config.device())
    cats, _ = categories(ss["data_dir"])
    chosen = None
    for cat in cats:
        if pipeline.list_models(config.models_dir(), cat):
            chosen = cat
            break
    ss.setdefault("category", chosen or (cats[0] if cats else None))
    if chosen and "model_dir" not in ss:
        select_model(str(pipeline.list_models(config.models_dir(), chosen)[0]), ss["data_dir"], chosen)


def select_model(model_dir: str | None, data_dir: str | None = None, category: str | None = None) -> None:
    """Make ``model_dir`` the current model (evaluated on ``data_dir``/``category``); resets selections."""
    ss = st.session_state
    ss["model_dir"] = model_dir
    ss["model_data"] = (data_dir or ss.get("data_dir"), category or ss.get("category"))
    for key in ("neuron", "image_idx", "cell", "threshold", "neuron_row", "neuron_col", "_last_click"):
        ss.pop(key, None)


def current(show_errors: bool = True) -> Current | None:
    """The current model, or None (with an st.error when it fails to load)."""
    ss = st.session_state
    model_dir = ss.get("model_dir")
    if not model_dir:
        return None
    data_dir, category = ss.get("model_data", (ss.get("data_dir"), ss.get("category")))
    device = ss.get("device", "cpu")
    try:
        model = loaders.get_model(model_dir, device)
    except SomadError as exc:
        if show_errors:
            st.error(f"The model at {model_dir} could not be loaded: {exc}")
        return None
    except Exception as exc:  # torch / safetensors surprises: never a traceback in the page
        if show_errors:
            st.error(f"The model at {model_dir} could not be loaded ({type(exc).__name__}: {exc}). "
                     "Fit it again on the Model page.")
        return None
    return Current(model, str(model_dir), str(data_dir), str(category), device)


def require_model() -> Current:
    """The current model, or stop the page with an st.info pointing at the Model page."""
    cur = current()
    if cur is None:
        st.info("No model is loaded: load or fit a model on the **Model** page.")
        st.page_link(PAGES["model"], label="Go to the Model page", icon=":material/model_training:")
        st.stop()
    return cur


def require_evaluation(cur: Current):
    """The cached evaluation of the current model on its category's test split, or stop with a message."""
    try:
        with st.spinner(f"Scoring the test images of '{cur.category}' (once per model)..."):
            ev = loaders.get_evaluation(cur.model_dir, cur.data_dir, cur.category, cur.device)
    except SomadError as exc:
        st.warning(f"Cannot evaluate on the test split of '{cur.category}' under {cur.data_dir}: {exc}")
        st.stop()
    except Exception as exc:
        st.error(f"Scoring the test images failed ({type(exc).__name__}: {exc}).")
        st.stop()
    loaders.mark_evaluated(cur.model_dir, cur.data_dir, cur.category, cur.device)
    return ev


def threshold(cur: Current) -> float:
    """The session's image threshold (default: the model's deployable ``threshold_``)."""
    ss = st.session_state
    if ss.get("threshold") is None:
        ss["threshold"] = float(cur.model.threshold_)
    return float(ss["threshold"])


def sidebar(cur: Current | None) -> None:
    """Short summary of the current model in the sidebar."""
    with st.sidebar:
        if cur is None:
            st.caption("No model loaded.")
            return
        m = cur.model
        st.caption(f"**Model** `{Path(cur.model_dir).name}` · category **{cur.category}**  \n"
                   f"{m.backbone}, {m.image_size}px, SOM {m.grid_[0]}x{m.grid_[1]} {m.topology}  \n"
                   f"threshold {threshold(cur):.3f}")
