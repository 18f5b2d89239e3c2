"""Model page: dataset root, category, saved models, fit form with live progress, model card."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import config, form, loaders, state
from somad import pipeline
from somad.errors import SomadError
from somad.persistence import read_config

state.ensure_navigation()
ss = st.session_state
st.title("Model")
st.caption("Pick a dataset and a category, then load a saved SOM or fit a new one.")

# ------------------------------------------------------------------ dataset root
roots = [str(r) for r in config.known_roots()]


def _pick_root() -> None:
    ss["data_dir"] = ss["w_root_pick"]
    ss["w_data_dir"] = ss["w_root_pick"]


def _typed_root() -> None:
    ss["data_dir"] = ss["w_data_dir"].strip()


ss.setdefault("w_data_dir", ss.get("data_dir", str(config.data_dir())))
c1, c2 = st.columns([3, 2])
c1.text_input("Dataset root (MVTec layout: <root>/<category>/train/good, test/<defect>, ground_truth/<defect>)",
              key="w_data_dir", on_change=_typed_root)
c2.selectbox("or pick a known root", roots, index=None, placeholder="known roots...", key="w_root_pick",
             on_change=_pick_root)
root = ss.get("data_dir", str(config.data_dir()))
cats, err = state.categories(root)
if err:
    st.error(err)
    st.stop()

# -------------------------------------------------------------------- category
counts = {c: loaders.category_counts(root, c) for c in cats}


def _label(c: str) -> str:
    n = counts[c]
    return f"{c}  ({n['train']} train, {n['test']} test, {n['defect types']} defect types)"


if ss.get("category") not in cats:
    ss["category"] = cats[0]
if ss.get("w_category") not in cats:
    ss["w_category"] = ss["category"]


def _pick_category() -> None:
    ss["category"] = ss["w_category"]


category = st.selectbox("Category", cats, key="w_category", format_func=_label, on_change=_pick_category)
ss["category"] = category
if counts[category]["train"] == 0:
    st.warning(f"'{category}' has no readable training image in {Path(root) / category / 'train' / 'good'}.")

# ---------------------------------------------------------------- saved models
models_dir = config.models_dir()
saved = pipeline.list_models(models_dir, category)
cur = state.current(show_errors=True)


def _model_label(p: Path) -> str:
    try:
        cfg = read_config(p)
        hp = cfg["hyperparameters"]
        return (f"{p.name}  ·  {hp['backbone']}, {hp['image_size']}px, SOM {cfg['grid'][0]}x{cfg['grid'][1]} "
                f"{hp['topology']}, saved {cfg.get('saved_at', '?')}")
    except (SomadError, KeyError, TypeError):
        return f"{p.name}  ·  (unreadable config)"


def fit_now(params: dict, name: str, force: bool, max_train: int | None) -> None:
    """Fit with one live progress bar per stage, save, and make it the current model."""
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
                              force=force, progress=progress)
    except SomadError as exc:
        box.error(f"Fitting failed: {exc}")
        return
    except Exception as exc:  # never a traceback in the page
        box.error(f"Fitting failed ({type(exc).__name__}: {exc}). Check the hyperparameters and try again.")
        return
    box.success(f"Fitted and saved in {time.perf_counter() - t0:.1f} s: {out}")
    state.select_model(str(out), str(Path(root).resolve()), category)
    st.rerun()


st.subheader("Saved models")
if saved:
    names = [str(p) for p in saved]
    default = names.index(ss["model_dir"]) if ss.get("model_dir") in names else 0
    pick = st.selectbox("Saved models of this category (newest first)", names, index=default,
                        format_func=lambda s: _model_label(Path(s)), key="w_saved_model")
    loaded = ss.get("model_dir") == pick
    if st.button("Loaded" if loaded else "Load this model", disabled=loaded, type="primary"):
        state.select_model(pick, str(Path(root).resolve()), category)
        st.rerun()
else:
    st.info(f"No saved model for **{category}** in `{models_dir}` yet. Fit one: the demo settings take "
            "well under a minute on a laptop CPU.")
    if st.button("Fit a demo model", type="primary", help=f"settings: {config.DEMO_PARAMS}"):
        fit_now(dict(config.DEMO_PARAMS), "demo", force=True, max_train=None)

# -------------------------------------------------------------------- fit form
with st.expander("Fit a new model", expanded=False):
    with st.form("fit_form"):
        params = form.fit_form_params()
        a, b, c = st.columns(3)
        name = a.text_input("Model name", "default", key="fit_name")
        max_train = b.number_input("Max training images (0 = all)", 0, 100000, 0, key="fit_max_train")
        force = c.checkbox("Overwrite an existing model of that name", value=False, key="fit_force")
        submitted = st.form_submit_button("Fit", type="primary")
    if submitted:
        if not name.strip() or "/" in name or name.startswith("."):
            st.error("The model name must be a plain folder name (no '/', not starting with '.').")
        else:
            fit_now(params, name.strip(), force, int(max_train) or None)

# ------------------------------------------------------------------ model card
st.subheader("Model card")
if cur is None:
    st.info("No model loaded yet: load a saved model or fit one above.")
    st.stop()
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
    hp = m.get_params()
    if hp["grid"] is None:
        hp["grid"] = f"{m.grid_[0]}x{m.grid_[1]} (feature-map size)"
    st.dataframe(pd.DataFrame({"value": [str(v) for v in hp.values()]}, index=list(hp.keys())),
                 width="stretch", height=300)
with right:
    st.markdown("**Fit**")
    st.write(f"Model dir `{cur.model_dir}`  \nData `{cur.data_dir}` / **{cur.category}**  \n"
             f"Feature map {m.feature_shape_[0]}x{m.feature_shape_[1]} cells, d = {len(m.channel_idx_)}  \n"
             f"Deployable threshold **{m.threshold_:.3f}** ({m.threshold_percentile:g}th percentile of "
             f"{m.cv_folds}-fold cross-fitted training scores)  \n"
             f"Pixel colour range {m.pixel_range_[0]:.2f} – {m.pixel_range_[1]:.2f} (one scale for the category)")
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
    else:
        st.caption("Not evaluated yet in this session (the other pages evaluate on first use).")
