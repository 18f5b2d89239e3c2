"""Compare models: the current model against another of its category, on the same test split."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import config, loaders, state, widgets
from dashboard.keys import Keys
from somad import compare, data, figures, pipeline
from somad.decision import is_anomalous
from somad.errors import SomadError


def _picked_other() -> None:
    st.session_state[Keys.COMPARE] = st.session_state[Keys.W_COMPARE]


def render_pick(cur) -> tuple[str, str] | None:
    """The other model of the category (the URL's ``vs``, else the first other one); None when there is none."""
    ss = st.session_state
    names = [p.name for p in pipeline.list_models(config.models_dir(), cur.category)]
    mine = Path(cur.model_dir).name
    others = [n for n in names if n != mine]
    if not others:
        st.info(f"Only one model is saved for **{cur.category}** (`{mine}`): fit another one on the **Model** page "
                "(e.g. another SOM grid or backbone) to compare the two.")
        st.page_link(state.PAGES["model"], label="Go to the Model page", icon=":material/model_training:")
        return None
    if ss.get(Keys.COMPARE) not in others:
        if ss.get(Keys.COMPARE):
            st.toast(f"The model '{ss[Keys.COMPARE]}' is not saved for '{cur.category}': comparing with "
                     f"'{others[0]}' instead.")
        ss[Keys.COMPARE] = others[0]
    ss[Keys.W_COMPARE] = ss[Keys.COMPARE]
    a, b = st.columns(2)
    a.markdown(f"**A: `{mine}`** (the loaded model; change it on the Model page)")
    b.selectbox("B: compare with", others, key=Keys.W_COMPARE, on_change=_picked_other)
    return mine, ss[Keys.COMPARE]


def _load_other(cur, name: str):
    """Model B and both evaluations, or None after a message."""
    path = pipeline.model_path(config.models_dir(), cur.category, name)
    try:
        other = loaders.get_model(path, cur.device)
        with st.spinner(f"Scoring the test images of '{cur.category}' with both models (once per model)..."):
            ev_a = loaders.get_evaluation(cur.model_dir, cur.data_dir, cur.category, cur.device)
            ev_b = loaders.get_evaluation(path, cur.data_dir, cur.category, cur.device)
    except SomadError as exc:
        st.error(f"Cannot compare with '{name}': {exc}")
        return None
    except Exception as exc:  # never a traceback in the page
        st.error(f"Cannot compare with '{name}' ({type(exc).__name__}: {exc}).")
        return None
    loaders.mark_evaluated(cur.model_dir, cur.data_dir, cur.category, cur.device)
    loaders.mark_evaluated(path, cur.data_dir, cur.category, cur.device)
    return other, ev_a, ev_b


def _describe(m) -> str:
    return (f"{m.backbone}, {m.image_size} px, SOM {m.grid_[0]}x{m.grid_[1]} {m.topology}, "
            f"{m.n_train_} training images, threshold {m.threshold_:.3f}")


def render_metrics(cur, other, names, ev_a, ev_b) -> None:
    st.subheader("Metrics")
    st.caption(f"A `{names[0]}`: {_describe(cur.model)}  \nB `{names[1]}`: {_describe(other)}")
    rows = compare.metrics_table(ev_a.metrics, ev_b.metrics, names)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"difference": st.column_config.NumberColumn(f"difference ({names[1]} − {names[0]})",
                                                                            format="%+.4f")})


def render_verdicts(cur, other, names, ev_a, ev_b) -> None:
    st.subheader("Test images whose verdict differs")
    rows, counts = compare.verdict_differences(ev_a, ev_b, cur.model.threshold_, other.threshold_, names)
    st.caption(f"Each model at its own deployable threshold ({cur.model.threshold_:.3f} and {other.threshold_:.3f}); "
               f"{counts['common']} test images in both evaluations.")
    if not rows:
        st.success("Both models give the same verdict on every test image.")
        return
    st.markdown(f"**{counts['differ']}** images differ: `{names[0]}` is right on {counts['right_a']}, "
                f"`{names[1]}` on {counts['right_b']}.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _picked_image() -> None:
    state.select_image(st.session_state[Keys.W_COMPARE_IMAGE])


def render_heatmaps(cur, other, names, ev_a, ev_b) -> None:
    """Both heatmaps of one test image, at the image's own size, each on its model's colour range."""
    ss = st.session_state
    st.subheader("Both heatmaps of one test image")
    keys_b = {compare.image_key(s): i for i, s in enumerate(ev_b.samples)}
    keys = [compare.image_key(s) for s in ev_a.samples if compare.image_key(s) in keys_b]
    if not keys:
        st.info("The two evaluations share no test image.")
        return
    if ss.get(Keys.IMAGE) not in keys:
        differ = compare.verdict_differences(ev_a, ev_b, cur.model.threshold_, other.threshold_, names)[0]
        ss[Keys.IMAGE] = differ[0]["image"] if differ else keys[0]
    ss[Keys.W_COMPARE_IMAGE] = ss[Keys.IMAGE]
    st.selectbox("Test image", keys, key=Keys.W_COMPARE_IMAGE, on_change=_picked_image)
    i = [compare.image_key(s) for s in ev_a.samples].index(ss[Keys.IMAGE])
    j = keys_b[ss[Keys.IMAGE]]
    try:
        original = data.read_image(ev_a.samples[i].path, cur.model.intensity_)
    except data.DataError as exc:
        st.warning(f"The test image cannot be read: {exc}")
        return
    cols = st.columns(2)
    for col, name, m, ev, k in ((cols[0], names[0], cur.model, ev_a, i), (cols[1], names[1], other, ev_b, j)):
        verdict = "anomalous" if is_anomalous(ev.scores[k], m.threshold_) else "normal"
        heat = compare.heat_at_own_size(original, ev.maps[k], m.pixel_range_, ev.metrics)
        col.image(heat, width="stretch",
                  caption=f"{name}: score {ev.scores[k]:.3f} → {verdict} (threshold {m.threshold_:.3f}); "
                          f"colours on {name}'s own scale (yellow from its pixel threshold); "
                          f"{heat.shape[1]}x{heat.shape[0]} px")
    st.caption(f"Shown at the test image's own size ({original.shape[1]}x{original.shape[0]} px, scaled to fit "
               "the display); each model's map is resized from its own image size.")


def render_curves(names, ev_a, ev_b) -> None:
    st.subheader("ROC and PRO curves")
    curves = compare.curve_pairs([(names[0], ev_a), (names[1], ev_b)])
    left, right = st.columns(2)
    with left:
        if curves["roc"]:
            widgets.chart(figures.roc_overlay(curves["roc"]), "cmp_roc")
        else:
            st.info("The test split has only one class of images, so no ROC curve can be drawn.")
    with right:
        if curves["pro"]:
            widgets.chart(figures.pro_overlay(curves["pro"]), "cmp_pro")
        else:
            st.info("The test split has no ground-truth masks, so no PRO curve can be drawn.")


state.ensure_navigation()
st.title("Compare models")
current = state.require_model()
picked = render_pick(current)
if picked is not None:
    loaded = _load_other(current, picked[1])
    if loaded is not None:
        other_model, eval_a, eval_b = loaded
        render_metrics(current, other_model, picked, eval_a, eval_b)
        render_verdicts(current, other_model, picked, eval_a, eval_b)
        render_heatmaps(current, other_model, picked, eval_a, eval_b)
        render_curves(picked, eval_a, eval_b)
