"""Metrics: AUROCs, AUPRO, F1-max, ROC and PRO curves, score histograms, per-defect table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.figures import NO_MODEBAR
from dashboard import figures, loaders, state
from somad import metrics

state.ensure_navigation()
cur = state.require_model()
m = cur.model
ev = state.require_evaluation(cur)
mt = ev.metrics
st.title("Metrics")
st.caption(f"{cur.category}: {mt['n_test']} test images, {mt['n_anomalous']} defective.")


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


k = st.columns(4)
k[0].metric("Image AUROC", _fmt(mt["image_auroc"]))
k[1].metric("Pixel AUROC", _fmt(mt["pixel_auroc"]))
k[2].metric("AUPRO (FPR ≤ 0.3)", _fmt(mt["aupro"]))
k[3].metric("Image F1-max", _fmt(mt["image_f1_max"]), help=f"at threshold {_fmt(mt['image_f1_threshold'])}")

a, b = st.columns(2)
with a:
    if ev.labels.min() != ev.labels.max():
        fpr, tpr, _ = metrics.roc(ev.labels, ev.scores)
        st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.roc_figure(fpr, tpr, mt["image_auroc"]), width="stretch", key="m_roc")
    else:
        st.info("The test split has a single class: no ROC curve.")
with b:
    if ev.masks.any():
        fpr, pro = loaders.get_pro_curve(cur.model_dir, cur.data_dir, cur.category, cur.device)
        st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.pro_figure(fpr, pro, mt["aupro"]), width="stretch", key="m_pro")
    else:
        st.info("No defective pixels in the ground truth: no PRO curve.")

st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.score_histogram(ev.scores, ev.labels, state.threshold(cur), mt.get("image_f1_threshold")),
                width="stretch", key="m_hist")

st.subheader("Per defect type (each against all good test images)")
rows = [{"defect type": d, "images": v.get("n_images", 0), "image AUROC": v["image_auroc"],
         "pixel AUROC": v["pixel_auroc"], "AUPRO": v["aupro"], "F1-max": v["image_f1_max"]}
        for d, v in mt.get("per_defect", {}).items()]
if rows:
    st.dataframe(pd.DataFrame(rows).round(4), hide_index=True, width="stretch")
else:
    st.info("No defect types in the test split.")
