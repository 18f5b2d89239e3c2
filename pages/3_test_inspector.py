"""Test inspector: all test images with outcomes at a threshold; why one pixel scored what it did."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.figures import NO_MODEBAR
from dashboard import events, figures, images, loaders, state
from somad import explain

state.ensure_navigation()
ss = st.session_state
cur = state.require_model()
m = cur.model
ev = state.require_evaluation(cur)
st.title("Test inspector")

# ------------------------------------------------------------------- threshold
deployable = float(m.threshold_)
f1_thr = float(ev.metrics.get("image_f1_threshold", np.nan))
thr = state.threshold(cur)
marks = [v for v in (deployable, f1_thr) if np.isfinite(v)]
lo = float(min(ev.scores.min(), *marks))  # a fixed range per model, so the slider keeps its identity
hi = float(max(ev.scores.max(), *marks))
pad = 0.05 * max(hi - lo, 1e-6)
lo, hi = lo - pad, hi + pad


def _set_threshold(value: float) -> None:
    ss["threshold"] = float(value)
    ss["w_threshold"] = float(value)


def _slid() -> None:
    ss["threshold"] = float(ss["w_threshold"])


if ss.get("w_threshold") is None or not lo <= ss["w_threshold"] <= hi:
    ss["w_threshold"] = float(np.clip(thr, lo, hi))
c1, c2, c3 = st.columns([4, 1, 1])
c1.slider("Image threshold (score > threshold = anomalous)", lo, hi, step=(hi - lo) / 500, key="w_threshold",
          on_change=_slid, format="%.3f")
c2.button(f"Deployable {deployable:.3f}", on_click=_set_threshold, args=(deployable,),
          help="percentile of cross-fitted training scores: needs no defective images")
if np.isfinite(f1_thr):
    c3.button(f"F1-optimal {f1_thr:.3f}", on_click=_set_threshold, args=(f1_thr,),
              help="best F1 on this test split (optimistic: chosen with the test labels)")
thr = float(ss["w_threshold"])
ss["threshold"] = thr
counts = explain.outcome_counts(ev.labels, ev.scores, thr)
k = st.columns(4)
for col, name in zip(k, ("TP", "FP", "FN", "TN")):
    col.metric(name, counts[name])

# ----------------------------------------------------------------------- table
out = explain.outcomes(ev.labels, ev.scores, thr)
table = pd.DataFrame({
    "#": np.arange(len(ev.labels)),
    "image": [f"{s.defect}/{s.path.name}" for s in ev.samples],
    "defect type": [s.defect for s in ev.samples],
    "ground truth": np.where(ev.labels == 1, "anomalous", "normal"),
    "score": np.round(ev.scores.astype(float), 4),
    "predicted": np.where(ev.scores > thr, "anomalous", "normal"),
    "outcome": out,
})
failing = st.toggle("Failing images only (FP and FN first, worst first)", key="w_failing")
if failing:
    order = explain.failing_order(ev.labels, ev.scores, thr)
    table = table.iloc[order]
    if len(order) == 0:
        st.success("No failing image at this threshold.")
sel = st.dataframe(table, key=f"w_table_{int(failing)}", on_select="rerun", selection_mode="single-row",
                   hide_index=True, width="stretch", height=260)
rows = sel.selection.rows if sel is not None else []
last_rows = ss.setdefault("_last_table", {})
tkey = f"t{int(failing)}"
if rows and rows != last_rows.get(tkey):
    ss["image_idx"] = int(table.iloc[rows[0]]["#"])
    ss.pop("cell", None)
last_rows[tkey] = rows
if ss.get("image_idx") is None or not 0 <= ss["image_idx"] < len(ev.labels):
    order = explain.failing_order(ev.labels, ev.scores, thr)
    ss["image_idx"] = int(order[0]) if len(order) else int(np.argmax(ev.scores))
i = int(ss["image_idx"])

# ---------------------------------------------------------------- one image
s = ev.samples[i]
st.subheader(f"{s.defect}/{s.path.name}: score {ev.scores[i]:.3f} → {out[i]}")
h, w = m.feature_shape_
cell_scores = ev.patches.scores[i * h * w:(i + 1) * h * w].numpy().reshape(h, w)
heat = images.heat_overlay(ev.images[i], ev.maps[i], m.pixel_range_)
picked = events.point_to_cell(ss.get(f"heat_{i}"), (h, w), curve=figures.CLICK_TRACE)
last_cell = ss.setdefault("_last_cell", {})
if picked is not None and picked != last_cell.get(i):
    ss["cell"] = (i, *picked)
last_cell[i] = picked
cell = ss.get("cell")
cell = (cell[1], cell[2]) if cell and cell[0] == i else None

a, b, c = st.columns([1, 1.35, 1])
with a:
    st.image(ev.images[i], caption="input", width=260)
    st.image(images.contours(ev.images[i], ev.masks[i]), caption="ground truth (green)", width=260)
with b:
    st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.image_figure(heat, (h, w), "heatmap: click a pixel", cell_scores, cell, size=400),
                    key=f"heat_{i}", on_select="rerun", selection_mode="points", width="content")
    st.caption(f"One colour scale for the category: {m.pixel_range_[0]:.2f} (blue) to {m.pixel_range_[1]:.2f} "
               "(red), Mahalanobis units.")
with c:
    st.image(images.contours(ev.images[i], ev.masks[i], ev.maps[i], thr), width=260,
             caption=f"predicted region: map > {thr:.3f} (red), truth (green)")

# ------------------------------------------------------------- pixel -> BMU
if cell is None:
    st.info("Click a pixel of the heatmap to see its BMU, its k nearest neurons and why it scored what it did.")
    st.stop()
r, c_ = cell
ex = explain.explain_cell(ev.patches, i, r, c_, (h, w), m.grid_)
st.subheader(f"Cell ({r}, {c_}): BMU ({ex.bmu[0]}, {ex.bmu[1]}), score {ex.score:.3f}")
x0, y0, x1, y1 = explain.cell_box(r, c_, (h, w), m.image_size)
st.caption(f"Pixels x {x0}–{x1 - 1}, y {y0}–{y1 - 1} of the {m.image_size}px image. The patch score is the smallest "
           f"Mahalanobis distance to the k = {len(ex.neighbours)} nearest neurons (Euclidean), before upsampling "
           "and blur.")
left, right = st.columns([1, 1.4])
with left:
    nb = pd.DataFrame([{"neuron": f"({nr}, {nc})", "Mahalanobis": round(d, 4),
                        "role": " · ".join(t for t, on in (("BMU", (nr, nc) == ex.bmu),
                                                            ("gives the score", (nr, nc) == ex.best)) if on),
                        "training patches": int(m.counts_[explain.neuron_index(nr, nc, m.grid_)])}
                       for nr, nc, d in ex.neighbours])
    st.markdown("**BMU and k nearest neurons**")
    st.dataframe(nb, hide_index=True, width="stretch")
    for nr, nc, _ in ex.neighbours:
        st.page_link(state.PAGES["som"], label=f"Open neuron ({nr}, {nc}) in the SOM explorer",
                     query_params={"row": str(nr), "col": str(nc)}, icon=":material/grid_on:")
with right:
    feats = loaders.get_image_features(cur.model_dir, cur.data_dir, cur.category, i, cur.device)
    contrib = explain.explain_contributions(m, feats, r, c_, ex.best)
    top = explain.top_contributions(contrib, m.channel_idx_, n=10)
    st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.contributions_figure(
        top, f"Why {ex.score:.2f}: top features of the distance to neuron ({ex.best[0]}, {ex.best[1]})"),
        width="stretch", key="w_contrib")
    share = sum(t[3] for t in top)
    st.caption(f"Mahalanobis² = {contrib.sum():.2f} = sum over all {len(contrib)} dimensions; the 10 shown carry "
               f"{100 * share:.0f}% of it. A term is diffᵢ·(C⁻¹diff)ᵢ, so correlated dimensions can give "
               "negative terms.")
