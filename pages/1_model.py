"""Model page: dataset root, category, saved models, fit form with live progress, model card."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import actions, config, form, loaders, roles, state, widgets
from dashboard.keys import Keys
from somad import compare, pipeline, store
from somad.errors import SomadError
from somad.model import check_params
from somad.persistence import read_config
from somad.replay import REPLAY_HELP

state.ensure_navigation()
ss = st.session_state
st.title("Model")
st.caption("Pick a dataset and a category, then load a saved SOM or fit a new one.")


# ------------------------------------------------------------------ role (viewer / presenter)
def _unlock() -> None:
    ok, message = roles.unlock(ss.pop(Keys.W_PASSWORD, ""))
    ss[Keys.ROLE_MESSAGE] = (ok, message)


def render_role() -> None:
    """On a read-only server: who this session is, and the presenter unlock (password from secrets.toml)."""
    if not roles.read_only_server():
        return
    ok_message = ss.pop(Keys.ROLE_MESSAGE, None)
    if roles.is_presenter():
        c1, c2 = st.columns([5, 1])
        c1.success(ok_message[1] if ok_message and ok_message[0] else
                   "Presenter mode (this browser tab only): you can fit, rename, delete and mark models.",
                   icon=":material/edit:")
        c2.button("Lock", on_click=roles.lock, help="back to viewer mode in this tab")
        return
    st.info("**Viewer mode.** This dashboard is shared read-only: browse every page, try your own images and "
            "download reports; fitting, renaming, deleting and marking models are off.", icon=":material/visibility:")
    if roles.unlock_offered():
        with st.expander("Presenter? Unlock this tab"):
            with st.form("unlock_form", clear_on_submit=True, border=False):
                st.text_input("Presenter password", type="password", key=Keys.W_PASSWORD)
                st.form_submit_button("Unlock presenter mode", on_click=_unlock)
    if ok_message and not ok_message[0]:
        st.error(ok_message[1], icon=":material/lock:")


# ------------------------------------------------------------------ dataset root
def _pick_root() -> None:
    ss[Keys.DATA_DIR] = ss[Keys.W_ROOT_PICK]
    ss[Keys.W_DATA_DIR] = ss[Keys.W_ROOT_PICK]


def _typed_root() -> None:
    ss[Keys.DATA_DIR] = ss[Keys.W_DATA_DIR].strip()


def render_root() -> tuple[str, list[str]]:
    """Dataset root picker; returns the root and its categories (stops the page with a message if none).

    With fixed roots (``SOMAD_DATA_ROOTS``, or a viewer session) only those are offered: no free text."""
    if state.roots_fixed():
        offered = [str(r) for r in config.offered_roots()]
        current_root = next((r for r in offered if config.root_allowed(ss.get(Keys.DATA_DIR, ""), [r])), offered[0])
        ss[Keys.DATA_DIR] = current_root
        if ss.get(Keys.W_ROOT_PICK) != current_root:
            ss[Keys.W_ROOT_PICK] = current_root
        st.selectbox("Dataset root", offered, key=Keys.W_ROOT_PICK, on_change=_pick_root,
                     help="the data sets this dashboard shows (fixed by whoever runs it)")
    else:
        ss.setdefault(Keys.W_DATA_DIR, ss.get(Keys.DATA_DIR, str(config.data_dir())))
        c1, c2 = st.columns([3, 2])
        c1.text_input("Dataset root (MVTec layout: <root>/<category>/train/good, test/<defect>, "
                      "ground_truth/<defect>)", key=Keys.W_DATA_DIR, on_change=_typed_root)
        c2.selectbox("or pick a known root", [str(r) for r in config.offered_roots()], index=None,
                     placeholder="known roots...", key=Keys.W_ROOT_PICK, on_change=_pick_root)
    picked = ss.get(Keys.DATA_DIR, str(config.data_dir()))
    found, err = state.categories(picked)
    if err:
        st.error(err)
        st.stop()
    return picked, found

# -------------------------------------------------------------------- category
def render_category(root: str, cats: list[str]) -> str:
    """Category picker with image counts; returns the category."""
    counts = {c: loaders.category_counts(root, c) for c in cats}

    def label(c: str) -> str:
        n = counts[c]
        return f"{c}  ({n['train']} train, {n['test']} test, {n['defect types']} defect types)"

    if ss.get(Keys.CATEGORY) not in cats:
        _open_category(root, cats[0])
    if ss.get(Keys.W_CATEGORY) not in cats:
        ss[Keys.W_CATEGORY] = ss[Keys.CATEGORY]
    picked = st.selectbox("Category", cats, key=Keys.W_CATEGORY, format_func=label, on_change=_pick_category,
                          args=(root,), help="changing it opens that category's default model")
    ss[Keys.CATEGORY] = picked
    if counts[picked]["train"] == 0:
        st.warning(f"'{picked}' has no readable training image in {Path(root) / picked / 'train' / 'good'}.")
    return picked


def _open_category(root: str, cat: str) -> None:
    """Make ``cat`` the session's category and open its default model (none when it has no model yet)."""
    ss[Keys.CATEGORY] = cat
    default = store.default_model(config.models_dir(), cat)
    state.select_model(str(default) if default else None, str(Path(root).resolve()), cat)


def _pick_category(root: str) -> None:
    _open_category(root, ss[Keys.W_CATEGORY])


# ---------------------------------------------------------------- saved models
def fit_now(params: dict, name: str, force: bool, max_train: int | None, replay: bool = False) -> None:
    """Fit with one live progress bar per stage, save, and make it the current model."""
    try:
        actions.check_fit()
    except SomadError as exc:
        st.error(str(exc))
        return
    out = pipeline.model_path(models_dir, category, name)
    box = st.container(border=True)
    box.write(f"Fitting **{category}** → `{out}`")
    bars: dict[str, object] = {}
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = box.progress(0.0, text=stage)
        frac = min(1.0, done / max(total, 1))
        bars[stage].progress(frac, text=f"{stage}: {done}/{total}  ({time.perf_counter() - t0:.1f} s)")

    try:
        pipeline.fit_category(Path(root).resolve(), category, out, params, max_train_images=max_train,
                              force=force, progress=progress, replay=replay)
    except SomadError as exc:
        box.error(f"Fitting failed: {exc}")
        return
    except Exception as exc:  # never a traceback in the page
        box.error(f"Fitting failed ({type(exc).__name__}: {exc}). Check the hyperparameters and try again.")
        return
    box.success(f"Fitted and saved in {time.perf_counter() - t0:.1f} s: {out}")
    state.select_model(str(out), str(Path(root).resolve()), category)
    st.rerun()


def _load(path: str) -> None:
    state.select_model(path, str(Path(root).resolve()), category)


def _make_default(name: str) -> None:
    try:
        actions.make_default(models_dir, category, name)
    except SomadError as exc:
        ss[Keys.MODEL_MESSAGE] = str(exc)


def _rename(name: str) -> None:
    try:
        new = actions.rename(models_dir, category, name, ss.get(Keys.W_RENAME, ""))
    except SomadError as exc:
        ss[Keys.MODEL_MESSAGE] = str(exc)
        return
    if ss.get(Keys.MODEL_DIR) == str(pipeline.model_path(models_dir, category, name)):
        ss[Keys.MODEL_DIR] = str(new)
    ss[Keys.W_SAVED_MODEL] = str(new)


def _delete(name: str) -> None:
    was_current = ss.get(Keys.MODEL_DIR) == str(pipeline.model_path(models_dir, category, name))
    ss.pop(Keys.CONFIRM_DELETE, None)
    try:
        actions.delete(models_dir, category, name)
    except SomadError as exc:
        ss[Keys.MODEL_MESSAGE] = str(exc)
        return
    ss.pop(Keys.W_SAVED_MODEL, None)
    if was_current:
        nxt = store.default_model(models_dir, category)
        state.select_model(str(nxt) if nxt else None, str(Path(root).resolve()), category)


def render_saved_models() -> None:
    """The category's models: load one, mark the default (opened by new sessions), rename, delete."""
    st.subheader("Saved models")
    if not saved:
        if not roles.can_write():
            st.info(f"No model is saved for **{category}** yet: the presenter can fit one.")
            return
        st.info(f"No saved model for **{category}** in `{models_dir}` yet. Fit one: the demo settings take "
                "about 15 s on a quiet 2-core CPU (longer while other jobs run).")
        settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in config.DEMO_PARAMS.items())
        if st.button("Fit a demo model", type="primary", help=f"small settings: {settings}; the rest default"):
            fit_now(dict(config.DEMO_PARAMS), "demo", force=True, max_train=None)
        return
    default = store.default_model(models_dir, category)
    st.dataframe(pd.DataFrame([_model_row(p, p == default) for p in saved]), hide_index=True, width="stretch")
    names = [str(p) for p in saved]
    if ss.get(Keys.W_SAVED_MODEL) not in names:
        ss[Keys.W_SAVED_MODEL] = ss[Keys.MODEL_DIR] if ss.get(Keys.MODEL_DIR) in names else str(default)
    pick = st.selectbox("Model", names, format_func=lambda s: Path(s).name, key=Keys.W_SAVED_MODEL)
    name = Path(pick).name
    loaded = ss.get(Keys.MODEL_DIR) == pick
    a, b, c, d = st.columns([1, 1, 2, 1])
    a.button("Loaded" if loaded else "Load", disabled=loaded, type="primary", on_click=_load, args=(pick,))
    if not roles.can_write():  # viewers load models for their own session; every change is refused anyway
        return
    b.button("Default" if Path(pick) == default else "Make default", disabled=Path(pick) == default,
             on_click=_make_default, args=(name,), help="the model a new session (or a link without a model) opens")
    c.text_input("New name", key=Keys.W_RENAME, placeholder="new name", label_visibility="collapsed")
    c.button("Rename", on_click=_rename, args=(name,), disabled=not ss.get(Keys.W_RENAME, "").strip())
    d.button("Delete...", on_click=lambda: ss.__setitem__(Keys.CONFIRM_DELETE, name))
    if ss.get(Keys.MODEL_MESSAGE):
        st.error(ss.pop(Keys.MODEL_MESSAGE))
    if ss.get(Keys.CONFIRM_DELETE) == name:
        st.warning(f"Delete the model **{name}** of **{category}** from `{models_dir}`? This cannot be undone.")
        y, n = st.columns([1, 5])
        y.button("Yes, delete", type="primary", on_click=_delete, args=(name,))
        n.button("Cancel", on_click=lambda: ss.pop(Keys.CONFIRM_DELETE, None))


def _model_row(p: Path, is_default: bool) -> dict:
    row = {"name": p.name, "default": "✓" if is_default else "", "loaded": "✓" if str(p) == ss.get(Keys.MODEL_DIR)
           else ""}
    try:
        cfg = read_config(p)
        hp = cfg["hyperparameters"]
        row.update({"backbone": hp["backbone"], "image size": hp["image_size"],
                    "SOM": f"{cfg['grid'][0]}x{cfg['grid'][1]} {hp['topology']}", "saved": cfg.get("saved_at", "?")})
    except (SomadError, KeyError, TypeError):
        row["backbone"] = "(unreadable config)"
    return row


# ------------------------------------------------- headline metrics of the saved models (issue 19 item 7)
def render_model_metrics() -> None:
    """Each saved model's headline metrics where this server has evaluated it, and the way to compare two."""
    if not saved:
        return
    data_dir = str(Path(root).resolve())
    rows, missing = [], []
    for p in saved:
        mt = loaders.evaluated_metrics(p, data_dir, category)
        if mt is None and current is not None and str(p) == current.model_dir:
            mt = loaders.evaluated_metrics(p, current.data_dir, category)
        if mt is None:
            missing.append(p.name)
            continue
        rows.append({"model": p.name, **{k: round(v, 4) for k, v in compare.headline(mt).items()}})
    with st.expander("Headline metrics of the saved models", expanded=bool(rows)):
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if missing:
            st.caption(f"Not evaluated in this server yet: {', '.join(missing)}. A model is evaluated when it is "
                       "loaded and a page scores its test split, or when the **Compare models** page compares it.")
        if len(saved) > 1:
            st.page_link(state.PAGES["compare"], label="Compare two models of this category",
                         icon=":material/compare:")


# -------------------------------------------------------------------- fit form
def render_fit_form() -> None:
    if not roles.can_write():
        return
    with st.expander("Fit a new model", expanded=False):
        with st.form("fit_form"):
            params = form.fit_form_params()
            a, b, c = st.columns(3)
            name = a.text_input("Model name", "default", key="fit_name")
            max_train = b.number_input("Max training images (0 = all)", 0, 100000, 0, key="fit_max_train")
            force = c.checkbox("Overwrite an existing model of that name", value=False, key="fit_force")
            keep_replay = c.checkbox("Keep a training replay", value=False, key="fit_replay", help=REPLAY_HELP)
            submitted = st.form_submit_button("Fit", type="primary")
        if submitted:
            try:
                check_params(params)  # the CLI's check, before any work (somad.model)
                fit_now(params, store.check_name(name), force, int(max_train) or None, keep_replay)
            except SomadError as exc:
                st.error(str(exc))


# ------------------------------------------------------------------ model card
def render_model_card(cur) -> None:
    """Hyperparameters, fit statistics, evaluation and the HTML report of the loaded model."""
    st.subheader("Model card")
    if cur is None:
        st.info("No model loaded yet: load a saved model or fit one above.")
        return
    m = cur.model
    if cur.category != category:
        st.caption(f"The loaded model is for **{cur.category}**; the category picker shows **{category}**.")
    cols = st.columns(5)
    cols[0].metric("Training images", m.n_train_)
    cols[1].metric("SOM grid", f"{m.grid_[0]}x{m.grid_[1]}")
    cols[2].metric("Quantization error", f"{m.quantization_error_:.3f}")
    cols[3].metric("Topographic error", f"{m.topographic_error_:.3f}")
    cols[4].metric("Fit time", f"{sum(m.timings_.values()):.1f} s")
    left, right = st.columns(2)
    with left:
        st.markdown("**Hyperparameters**")
        hp = m.params_summary()
        st.dataframe(pd.DataFrame({"value": list(hp.values())}, index=list(hp.keys())),
                     width="stretch", height=300)
    with right:
        st.markdown("**Fit**")
        st.write(f"Model dir `{cur.model_dir}`  \nData `{cur.data_dir}` / **{cur.category}**  \n"
                 f"Feature map {m.feature_shape_[0]}x{m.feature_shape_[1]} cells, d = {len(m.channel_idx_)}  \n"
                 f"Deployable threshold **{m.threshold_:.3f}** ({m.threshold_rule})  \n"
                 f"Pixel values: {m.intensity_.describe()}  \n"
                 f"Pixel scores of the training images {m.pixel_range_[0]:.2f} – {m.pixel_range_[1]:.2f} (the heatmaps' "
                 "blue range)")
        st.caption("Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in m.timings_.items()))
        st.markdown("**Evaluation**")
        if loaders.has_evaluation(cur.model_dir, cur.data_dir, cur.category, cur.device) or st.button(
                "Evaluate on the test split"):
            ev = state.require_evaluation(cur)
            mt = ev.metrics
            e = st.columns(4)
            e[0].metric("Image AUROC", f"{mt['image_auroc']:.3f}")
            e[1].metric("Pixel AUROC", f"{mt['pixel_auroc']:.3f}")
            e[2].metric("AUPRO", f"{mt['aupro']:.3f}")
            e[3].metric("F1-max", f"{mt['image_f1_max']:.3f}")
            st.caption(f"{mt['n_test']} test images ({mt['n_anomalous']} defective); details on the Metrics page.")
            widgets.report_button(cur)
        else:
            st.caption("Not evaluated yet in this session (the other pages evaluate on first use).")


render_role()
root, cats = render_root()
category = render_category(root, cats)
models_dir = config.models_dir()
saved = pipeline.list_models(models_dir, category)
current = state.current(show_errors=True)
render_saved_models()
render_model_metrics()
render_fit_form()
render_model_card(current)
