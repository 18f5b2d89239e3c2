"""Try an image: upload images, get a summary table, heatmap overlays, scores and verdicts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import config, help, images, loaders, memory, roles, state, teach_panel, teaching
from dashboard.keys import Keys
from somad import viz
from somad.data import resize_to
from somad.decision import DECISION_RULE, is_anomalous
from somad.words import plural, word
from somad.errors import SomadError


def held_uploads(files, model, model_key: tuple) -> list[images.Upload]:
    """The uploader's readable files as :class:`dashboard.images.Upload` s, in its order: each file
    is decoded and scored once (by Streamlit's file id), held at its shown size, and released when
    the uploader drops it, the model changes or the session ends. One message per unreadable file."""
    store = ss.get(Keys.UPLOADS)
    if store is None or store.model_key != model_key:
        store = ss[Keys.UPLOADS] = images.UploadStore(model_key)
    store.keep_only([f.file_id for f in files])
    new = []
    for f in files:
        if f.file_id in store.items:
            continue
        try:
            store.items[f.file_id] = images.prepare_upload(f.name, f.getvalue(), model.image_size, model.intensity_)
        except SomadError as exc:
            st.error(str(exc))
            continue
        new.append(store.items[f.file_id])
    if new:
        scores, maps = score(model, np.stack([u.model_input for u in new]))
        for u, sc, amap in zip(new, scores, maps):
            u.score, u.amap = float(sc), np.asarray(amap, np.float32)
        memory.release_freed()  # give the decoding's transient buffers back to the system
    held = [store.items[f.file_id] for f in files if f.file_id in store.items]
    for u in held:
        for note in u.notes:
            st.warning(note)
    return held


def score(model, batch: np.ndarray):
    try:
        with st.spinner(f"Scoring {plural(len(batch), 'image')}..."):
            res = model.anomaly_maps(batch)
            return res.scores, res.maps
    except Exception as exc:  # never a traceback
        st.error(f"Scoring failed ({type(exc).__name__}: {exc}).")
        st.stop()


def render_summary(held, scores, verdicts, reasons) -> None:
    st.subheader("Summary")
    st.dataframe(pd.DataFrame({"file": [u.name for u in held],
                               "size": [f"{u.original_shape[1]}x{u.original_shape[0]}" for u in held],
                               "score": np.round(scores.astype(float), 3), "verdict": verdicts,
                               "unlike the training images": ["yes" if r else "" for r in reasons]}),
                 hide_index=True, width="stretch")
    if any(reasons):
        n_unlike = sum(bool(r) for r in reasons)
        st.warning(f"{plural(n_unlike, 'upload')} {word(n_unlike, 'looks', 'look')} unlike the training images of "
                   "this category: " + ("its verdict says" if n_unlike == 1 else "their verdicts say")
                   + " little. Details below each image.")
    with st.expander("About these verdicts"):
        st.markdown(help.UPLOADS)


def render_one(n: int, u: images.Upload, verdict: str, pix_thr: float, reasons, scale) -> None:
    """One upload at its own aspect ratio (longest side capped, :func:`somad.data.display_shape`);
    the overlay is drawn once per upload, pixel threshold and colour scale, and kept as PNG bytes."""
    st.subheader(f"{u.name}: score {u.score:.3f} → {verdict}")
    for reason in reasons:
        st.warning(f"Unlike the training images: {reason}.")
    if u.overlay_png is None:
        amap = resize_to(u.amap, u.shown.shape[:2])
        u.overlay_png = images.to_png(images.contours(images.heat_overlay(u.shown, amap, scale), None, amap, pix_thr))
        u.map_top = float(np.max(amap))
        u.caption = "heatmap overlay; " + viz.region_caption(amap, pix_thr).replace("; truth (green)", "")
    if verdict == "ANOMALOUS" and not is_anomalous(u.map_top, pix_thr):
        st.info(f"Flagged by its image score, but no pixel of its heatmap reaches the pixel threshold {pix_thr:.3f} "
                f"(map top {u.map_top:.3f}): no region is outlined. The image threshold cuts the image score, "
                "the pixel threshold cuts the map: a wide, moderately warm area can flag an image without a hot spot.")
    a, b = st.columns(2)
    a.image(u.shown, caption="input", width=300)
    b.image(u.overlay_png, caption=u.caption, width=300)
    stem = u.name.rsplit(".", 1)[0]
    b.download_button("Download overlay PNG", u.overlay_png, file_name=f"{stem}_overlay.png",
                      mime="image/png", key=f"dl_{n}")  # by position: MVTec reuses file names across folders


def render_mark(cur, files, names: list[str], scores, thr: float) -> None:
    """"Mark as normal" on chosen uploads: they are kept under the models folder (by content hash) and
    taught to a new version. ``names``, ``scores``: the scored uploads, as in the summary."""
    if not roles.can_write():
        return
    if not teach_panel.section("Mark uploads as normal (teach a new version)", Keys.W_OPEN_MARK):
        return
    with st.container(border=True):
        picked = st.multiselect("Uploads to mark as normal", range(len(files)), format_func=lambda i: files[i].name,
                                key=Keys.W_UPLOAD_MARK, placeholder="choose uploads...")
        if not picked:
            st.caption("Pick the uploads that are defect-free parts the model flags wrongly (a new normal: other "
                       "light, supplier or camera).")
            return
        try:
            paths = teaching.store_uploads(config.models_dir(), cur.category,
                                           [(files[i].name, files[i].getvalue()) for i in picked])
        except SomadError as exc:
            st.error(str(exc))
            return
        score_of = dict(zip(reversed(names), reversed([float(s) for s in scores])))  # first of a repeated name
        marked = teaching.Marked([files[i].name for i in picked], paths, np.full(len(picked), -1),
                                 np.array([score_of.get(files[i].name, np.nan) for i in picked]))
        teach_panel.render_mark_panel(cur, marked, thr)


state.ensure_navigation()
ss = st.session_state
st.title("Try an image")
current = state.require_model()
teach_panel.render_job(current)
model = current.model
thr = state.threshold(current)
chosen = "the deployable threshold" if thr == float(model.threshold_) else (
    f"**not** the deployable {float(model.threshold_):.3f}: set in this session or by the link")
st.caption(f"Model for **{current.category}** ({model.image_size}px). Verdict: {DECISION_RULE}, threshold {thr:.3f}, "
           f"{chosen} (change it on the Test inspector page).")
files = st.file_uploader("Images (PNG, JPG, BMP, TIFF)", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
                         accept_multiple_files=True, key=Keys.W_UPLOADS)
if not files:
    ss.pop(Keys.UPLOADS, None)  # the uploader dropped every file: so does the session
    st.info("Upload one or more images of the same kind of object as the model's category.")
    st.stop()
held = held_uploads(files, model, (current.model_dir, loaders.model_mtime(current.model_dir)))
if not held:
    st.stop()
upload_scores = np.array([u.score for u in held], np.float32)
evaluation = state.require_evaluation(current)
reference = loaders.get_reference(current.model_dir, current.data_dir, current.category, current.device)
upload_verdicts = np.where(is_anomalous(upload_scores, thr), "ANOMALOUS", "normal")
upload_reasons = [images.unlike_training(u.score, u.shown, reference) for u in held]
render_summary(held, upload_scores, upload_verdicts, upload_reasons)
pixel_thr = viz.pixel_threshold(evaluation.metrics, model.pixel_range_)
heat_scale = viz.heat_scale(model.pixel_range_, evaluation.metrics)
if ss.get(Keys.UPLOADS_PIXEL_THR) != (pixel_thr, heat_scale):
    for u in held:
        u.overlay_png = None
    ss[Keys.UPLOADS_PIXEL_THR] = (pixel_thr, heat_scale)
for k, (u, v, why) in enumerate(zip(held, upload_verdicts, upload_reasons)):
    render_one(k, u, str(v), pixel_thr, why, heat_scale)
render_mark(current, files, [u.name for u in held], upload_scores, thr)
