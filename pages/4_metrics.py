"""Metrics: AUROCs, AUPRO, F1-max, ROC and PRO curves, score histograms, per-defect table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import help, loaders, state, widgets
from somad import figures, metrics, report
from somad.words import plural, word


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def render_summary(cur, ev) -> None:
    mt = ev.metrics
    st.caption(f"{cur.category}: {mt['n_test']} test images, {mt['n_anomalous']} defective.")
    if mt.get("n_empty_masks"):
        n = mt["n_empty_masks"]
        st.warning(f"{plural(n, 'defective test image')} {word(n, 'has')} an empty mask (no pixel marked), most "
                   "likely a labelling mistake: " + ", ".join(mt["empty_masks"]) + f". {'It is' if n == 1 else 'They are'} "
                   "left out of the pixel metrics and the PRO curve; the image metrics count "
                   f"{word(n, 'it')} as defective.")
    widgets.report_button(cur)
    k = st.columns(4)
    k[0].metric("Image AUROC", _fmt(mt["image_auroc"]),
                help="chance that a defective image scores above a good one (1 = perfect ranking, 0.5 = chance)")
    k[1].metric("Pixel AUROC", _fmt(mt["pixel_auroc"]), help="the same, over pixels of the ground-truth masks")
    k[2].metric("AUPRO (FPR ≤ 0.3)", _fmt(mt["aupro"]),
                help="how much of each defect region is found, averaged over regions, up to 30% false-positive pixels")
    k[3].metric("Image F1-max", _fmt(mt["image_f1_max"]), help=f"at threshold {_fmt(mt['image_f1_threshold'])}")


def render_curves(cur, ev) -> None:
    mt = ev.metrics
    a, b = st.columns(2)
    with a:
        if ev.labels.min() != ev.labels.max():
            fpr, tpr, _ = metrics.roc(ev.labels, ev.scores)
            widgets.chart(figures.roc_figure(fpr, tpr, mt["image_auroc"]), "m_roc")
        else:
            st.info("The test split has a single class: no ROC curve.")
    with b:
        if ev.pixel_arrays()[0].any():
            fpr, pro = loaders.get_pro_curve(cur.model_dir, cur.data_dir, cur.category, cur.device)
            widgets.chart(figures.pro_figure(fpr, pro, mt["aupro"]), "m_pro")
        else:
            st.info("No defective pixels in the ground truth: no PRO curve.")
    widgets.chart(figures.score_histogram(ev.scores, ev.labels, state.threshold(cur), mt.get("image_f1_threshold")),
                  "m_hist")
    with st.expander("What do the thresholds mean?"):
        st.markdown(help.THRESHOLDS)


def render_per_defect(ev) -> None:
    st.subheader("Per defect type (each against all good test images)")
    table = pd.DataFrame(report.per_defect_rows(ev.metrics))
    if table.empty:
        st.info("No defect types in the test split.")
    else:
        st.dataframe(table, hide_index=True, width="stretch")


state.ensure_navigation()
st.title("Metrics")
current = state.require_model()
evaluation = state.require_evaluation(current)
render_summary(current, evaluation)
render_curves(current, evaluation)
render_per_defect(evaluation)
