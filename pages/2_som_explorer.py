"""SOM explorer: U-matrix, hit map and component planes; click a neuron to see what it stands for."""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.figures import NO_MODEBAR
from dashboard import events, figures, images, loaders, state
from somad import explain

state.ensure_navigation()
ss = st.session_state
cur = state.require_model()
m = cur.model
rows, cols = m.grid_
idx = explain.bmu_index(m)
u = m.u_matrix()
hits = m.hit_map()
mean_dist = idx.mean_dist.reshape(rows, cols)

st.title("SOM explorer")
st.caption(f"{cur.category}: SOM {rows}x{cols} ({m.topology}), {m.n_train_} training images, "
           f"{int((hits == 0).sum())} neurons without training patches.")

# ------------------------------------------------------------- neuron selection
CHARTS = ("som_umatrix", "som_hitmap", "som_cplane")


def _set_neuron(rc: tuple[int, int]) -> None:
    ss["neuron"] = (int(rc[0]), int(rc[1]))
    ss["w_neuron_row"], ss["w_neuron_col"] = ss["neuron"]


# a link from the test inspector: ?row=R&col=C
qp = st.query_params
if "row" in qp and "col" in qp:
    try:
        r, c = int(qp["row"]), int(qp["col"])
        if 0 <= r < rows and 0 <= c < cols:
            _set_neuron((r, c))
    except ValueError:
        st.warning("The link's row/col are not numbers; pick a neuron on the map instead.")
    qp.clear()

# clicks on the maps (a new selection on any chart wins)
last = ss.setdefault("_last_click", {})
for key in CHARTS:
    picked = events.point_to_neuron(ss.get(key), (rows, cols), curve=figures.CLICK_TRACE)
    if picked is not None and picked != last.get(key):
        _set_neuron(picked)
    last[key] = picked

if ss.get("neuron") is None or not (0 <= ss["neuron"][0] < rows and 0 <= ss["neuron"][1] < cols):
    ss["neuron"] = tuple(int(v) for v in np.unravel_index(int(np.argmax(hits)), hits.shape))
ss.setdefault("w_neuron_row", ss["neuron"][0])
ss.setdefault("w_neuron_col", ss["neuron"][1])
neuron = ss["neuron"]


def _typed_neuron() -> None:
    ss["neuron"] = (int(ss["w_neuron_row"]), int(ss["w_neuron_col"]))


# ------------------------------------------------------------------------ maps
hover_u = {"hits": hits, "mean dist to patches": mean_dist}
left, right = st.columns(2)
with left:
    st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.som_map(u, m.topology, "U-matrix (mean distance to neighbours)", "Viridis",
                                    hover_u, neuron, colorbar_title="U"),
                    key="som_umatrix", on_select="rerun", selection_mode="points", width="content")
with right:
    st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.som_map(hits, m.topology, "Hit map (training patches per neuron)", "Blues",
                                    {"U": u, "mean dist to patches": mean_dist}, neuron, colorbar_title="hits"),
                    key="som_hitmap", on_select="rerun", selection_mode="points", width="content")
st.caption("Click a neuron on any map (or type its row and column) to select it. Bright U-matrix cells are "
           "borders between clusters of similar patches; the hit map shows how many training patches each "
           "neuron won.")

c1, c2, c3 = st.columns([1, 1, 4])
c1.number_input("Neuron row", 0, rows - 1, key="w_neuron_row", on_change=_typed_neuron)
c2.number_input("Neuron col", 0, cols - 1, key="w_neuron_col", on_change=_typed_neuron)
j = explain.neuron_index(*neuron, m.grid_)
c3.markdown(f"**Selected neuron ({neuron[0]}, {neuron[1]})** · {int(hits[neuron])} training patches · "
            f"U {u[neuron]:.3f} · mean distance to its patches "
            + (f"{mean_dist[neuron]:.3f}" if np.isfinite(mean_dist[neuron]) else "n/a"))

with st.expander("Component plane (weight of one feature dimension across the map)"):
    dim = st.slider("Feature dimension", 0, len(m.channel_idx_) - 1, 0, key="w_cplane_dim")
    st.caption(f"dimension {dim} = backbone channel {int(m.channel_idx_[dim])}")
    st.plotly_chart(config=NO_MODEBAR, figure_or_data=figures.som_map(m.component_plane(dim), m.topology, f"Component plane {dim}", "RdBu_r",
                                    hover_u, neuron, colorbar_title="weight"),
                    key="som_cplane", on_select="rerun", selection_mode="points", width="content")

# ----------------------------------------------------------- training patches
st.subheader(f"Nearest training patches of neuron ({neuron[0]}, {neuron[1]})")
patches = explain.nearest_training_patches(m, neuron[0], neuron[1], n=16)
if not patches:
    st.info("This neuron is the BMU of no training patch (a dead or interpolating neuron between clusters). "
            "Pick a neuron with hits.")
else:
    crops = explain.patch_crops(m, patches, loaders.load_training_image, context=2, out_size=112)
    shown = [cr if cr is not None else np.full((112, 112, 3), 60, np.uint8) for cr in crops]
    caps = [f"#{i + 1} d={p.distance:.2f} · img {p.image} ({p.row},{p.col})" for i, p in enumerate(patches)]
    st.image(shown, caption=caps, width=112)
    missing = sum(cr is None for cr in crops)
    if missing:
        st.warning(f"{missing} training image(s) could not be read (moved or deleted since fitting); "
                   "shown as grey squares.")
    st.caption("Each crop is a 5x5-cell neighbourhood around the patch; the box marks the feature cell "
               "(its receptive field centre). Sorted by Euclidean distance to the neuron's weights.")

# --------------------------------------------------------------- test images
st.subheader("Test images where this neuron is the BMU")
ev = state.require_evaluation(cur)
nh = explain.neuron_test_hits(ev.patches, neuron, m.grid_, len(ev.labels))
if len(nh.by_hits) == 0:
    st.info("No test patch maps to this neuron.")
else:
    picks = list(dict.fromkeys([*nh.by_score[:3].tolist(), *nh.by_hits[:3].tolist()]))[:6]
    st.caption("Highest-scoring cells first, then most cells; the cells whose BMU is this neuron are outlined.")
    grid_cols = st.columns(3)
    for n, i in enumerate(picks):
        cells = explain.neuron_cells(ev.patches, neuron, m.grid_, i, m.feature_shape_)
        pic = images.highlight_cells(images.heat_overlay(ev.images[i], ev.maps[i], m.pixel_range_), cells)
        s = ev.samples[i]
        with grid_cols[n % 3]:
            st.image(pic, caption=f"{s.defect}/{s.path.name} · score {ev.scores[i]:.2f} · "
                                  f"{int(nh.hits[i])} cells, max cell score {nh.max_score[i]:.2f}", width=260)
            if st.button("Inspect", key=f"inspect_{i}"):
                ss["image_idx"] = int(i)
                ss.pop("cell", None)
                st.switch_page(state.PAGES["inspector"])
