"""Try an image: upload images, get a summary table, heatmap overlays, scores and verdicts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import help, images, loaders, state
from dashboard.keys import Keys
from somad import viz
from somad.data import display_shape, resize_image, resize_to
from somad.decision import DECISION_RULE, is_anomalous
from somad.errors import SomadError


def read_uploads(files, rule) -> list[tuple[str, np.ndarray]]:
    """``(file name, uint8 RGB)`` of every readable upload, read with the model's intensity ``rule``;
    one message per unreadable file."""
    decoded = []
    for f in files:
        try:
            rgb, notes = images.decode_upload(f.name, f.getvalue(), rule=rule)
        except SomadError as exc:
            st.error(str(exc))
            continue
        for note in notes:
            st.warning(note)
        decoded.append((f.name, rgb))
    return decoded


def score(cur, batch: np.ndarray):
    try:
        with st.spinner(f"Scoring {len(batch)} image(s)..."):
            res = cur.model.anomaly_maps(batch)
            return res.scores, res.maps
    except Exception as exc:  # never a traceback
        st.error(f"Scoring failed ({type(exc).__name__}: {exc}).")
        st.stop()


def render_summary(decoded, scores, verdicts, reasons) -> None:
    st.subheader("Summary")
    st.dataframe(pd.DataFrame({"file": [n for n, _ in decoded], "size": [f"{r.shape[1]}x{r.shape[0]}" for _, r in decoded],
                               "score": np.round(scores.astype(float), 3), "verdict": verdicts,
                               "unlike the training images": ["yes" if r else "" for r in reasons]}),
                 hide_index=True, width="stretch")
    if any(reasons):
        st.warning(f"{sum(bool(r) for r in reasons)} upload(s) look unlike the training images of this category: "
                   "their verdicts say little. Details below each image.")
    with st.expander("About these verdicts"):
        st.markdown(help.UPLOADS)


def render_one(n: int, name: str, rgb, sc: float, verdict: str, amap, pix_thr: float, reasons, scale) -> None:
    """One upload at its own aspect ratio (longest side capped, :func:`somad.data.display_shape`)."""
    st.subheader(f"{name}: score {sc:.3f} → {verdict}")
    for reason in reasons:
        st.warning(f"Unlike the training images: {reason}.")
    shape = display_shape(rgb.shape[:2])
    img, amap = resize_to(rgb, shape), resize_to(amap, shape)
    pic = images.contours(images.heat_overlay(img, amap, scale), None, amap, pix_thr)
    if verdict == "ANOMALOUS" and not is_anomalous(float(np.max(amap)), pix_thr):
        st.info(f"Flagged by its image score, but no pixel of its heatmap reaches the pixel threshold {pix_thr:.3f} "
                f"(map top {float(np.max(amap)):.3f}): no region is outlined. The image threshold cuts the image score, "
                "the pixel threshold cuts the map: a wide, moderately warm area can flag an image without a hot spot.")
    a, b = st.columns(2)
    a.image(img, caption="input", width=300)
    b.image(pic, caption="heatmap overlay; " + viz.region_caption(amap, pix_thr).replace("; truth (green)", ""),
            width=300)
    stem = name.rsplit(".", 1)[0]
    b.download_button("Download overlay PNG", images.to_png(pic), file_name=f"{stem}_overlay.png",
                      mime="image/png", key=f"dl_{n}")  # by position: MVTec reuses file names across folders


state.ensure_navigation()
st.title("Try an image")
current = state.require_model()
model = current.model
thr = state.threshold(current)
chosen = "the deployable threshold" if thr == float(model.threshold_) else (
    f"**not** the deployable {float(model.threshold_):.3f}: set in this session or by the link")
st.caption(f"Model for **{current.category}** ({model.image_size}px). Verdict: {DECISION_RULE}, threshold {thr:.3f}, "
           f"{chosen} (change it on the Test inspector page).")
files = st.file_uploader("Images (PNG, JPG, BMP, TIFF)", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
                         accept_multiple_files=True, key=Keys.W_UPLOADS)
if not files:
    st.info("Upload one or more images of the same kind of object as the model's category.")
    st.stop()
uploads = read_uploads(files, model.intensity_)
if not uploads:
    st.stop()
batch = np.stack([resize_image(rgb, model.image_size) for _, rgb in uploads])
upload_scores, upload_maps = score(current, batch)
evaluation = state.require_evaluation(current)
reference = loaders.get_reference(current.model_dir, current.data_dir, current.category, current.device)
upload_verdicts = np.where(is_anomalous(upload_scores, thr), "ANOMALOUS", "normal")
upload_reasons = [images.unlike_training(float(s), rgb, reference) for s, (_, rgb) in zip(upload_scores, uploads)]
render_summary(uploads, upload_scores, upload_verdicts, upload_reasons)
pixel_thr = viz.pixel_threshold(evaluation.metrics, model.pixel_range_)
heat_scale = viz.heat_scale(model.pixel_range_, evaluation.metrics)
for k, ((fname, rgb), s, v, amap, why) in enumerate(zip(uploads, upload_scores, upload_verdicts, upload_maps,
                                                       upload_reasons)):
    render_one(k, fname, rgb, float(s), str(v), amap, pixel_thr, why, heat_scale)
