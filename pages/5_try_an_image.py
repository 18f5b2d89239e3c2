"""Try an image: upload images, get heatmap overlay, score and verdict with the current model."""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import images, state
from somad.data import resize_image
from somad.errors import SomadError

state.ensure_navigation()
cur = state.require_model()
m = cur.model
thr = state.threshold(cur)
st.title("Try an image")
st.caption(f"Model for **{cur.category}** ({m.image_size}px). Verdict: score > threshold {thr:.3f} "
           "(change it on the Test inspector page).")
files = st.file_uploader("Images (PNG, JPG, BMP, TIFF)", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
                         accept_multiple_files=True, key="w_uploads")
if not files:
    st.info("Upload one or more images of the same kind of object as the model's category.")
    st.stop()

decoded = []
for f in files:
    try:
        rgb, notes = images.decode_upload(f.name, f.getvalue())
    except SomadError as exc:
        st.error(str(exc))
        continue
    for note in notes:
        st.warning(note)
    decoded.append((f.name, rgb))
if not decoded:
    st.stop()

batch = np.stack([resize_image(rgb, m.image_size) for _, rgb in decoded])
try:
    with st.spinner(f"Scoring {len(batch)} image(s)..."):
        res = m.anomaly_maps(batch)
        scores, maps = res.scores, res.maps
except Exception as exc:  # never a traceback
    st.error(f"Scoring failed ({type(exc).__name__}: {exc}).")
    st.stop()

for (name, _), img, sc, amap in zip(decoded, batch, scores, maps):
    verdict = "ANOMALOUS" if sc > thr else "normal"
    st.subheader(f"{name}: score {sc:.3f} → {verdict}")
    pic = images.contours(images.heat_overlay(img, amap, m.pixel_range_), None, amap, thr)
    a, b = st.columns(2)
    a.image(img, caption="input (resized)", width=300)
    b.image(pic, caption=f"heatmap overlay, region > {thr:.3f} outlined red", width=300)
    stem = name.rsplit(".", 1)[0]
    b.download_button("Download overlay PNG", images.to_png(pic), file_name=f"{stem}_overlay.png",
                      mime="image/png", key=f"dl_{name}")
