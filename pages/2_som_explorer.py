"""SOM explorer: U-matrix, hit map and component planes; click a neuron to see what it stands for."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import events, help, images, loaders, state, widgets
from dashboard.keys import Keys
from somad import explain, figures, projection, regions, replay, viz
from somad.errors import SomadError
from somad.words import plural

CHARTS = ("som_umatrix", "som_cplane")
CROP = 112


def render_header(cur, views) -> None:
    m = cur.model
    st.caption(f"{cur.category}: SOM {m.grid_[0]}x{m.grid_[1]} ({m.topology}), {m.n_train_} training images, "
               f"{int((views['hits'] == 0).sum())} neurons without training patches.")
    with st.expander("How to read these maps"):
        st.markdown(help.SOM_MAPS)


def pick_neuron(cur, views) -> tuple[int, int]:
    """The selected neuron: a new click on any map wins, else the session's (URL's), else the busiest."""
    ss = st.session_state
    grid = cur.model.grid_
    for key in CHARTS:
        clicked = widgets.new_click(key, events.point_to_neuron(ss.get(key), grid, curve=figures.CLICK_TRACE))
        if clicked is not None:
            ss[Keys.NEURON] = clicked
    neuron = ss.get(Keys.NEURON)
    if neuron is None or not (0 <= neuron[0] < grid[0] and 0 <= neuron[1] < grid[1]):
        hits = views["hits"]
        neuron = tuple(int(v) for v in np.unravel_index(int(np.argmax(hits)), hits.shape))
    ss[Keys.NEURON] = neuron = (int(neuron[0]), int(neuron[1]))
    if (ss.get(Keys.W_NEURON_ROW), ss.get(Keys.W_NEURON_COL)) != neuron:
        ss[Keys.W_NEURON_ROW], ss[Keys.W_NEURON_COL] = neuron
    return neuron


def _typed_neuron() -> None:
    ss = st.session_state
    ss[Keys.NEURON] = (int(ss[Keys.W_NEURON_ROW]), int(ss[Keys.W_NEURON_COL]))


def render_maps(cur, views, neuron, footprint=None, scale=None) -> None:
    """U-matrix (with a test image's footprint, on the category's heat ``scale``, when one is given),
    clickable (one click point per neuron, not drawn on rectangular grids: :func:`somad.figures.click_marker`),
    and hit map, looked at only (one heatmap with its own hover); both outline the selected neuron."""
    m = cur.model
    u, hits, mean_dist = views["u"], views["hits"], views["mean_dist"]
    # both outline the selected neuron (over the unchanged figure on a rectangular grid: widgets.chart);
    # on a hexagonal grid plotly shows a neuron clicked on the U-matrix itself
    left, right = st.columns(2)
    with left:
        ring, pre = widgets.map_selection("som_umatrix", neuron, m.topology)
        if footprint is None:
            fig = figures.som_map(u, m.topology, "U-matrix (mean distance to neighbours)", "Viridis",
                                  {"hits": hits, "mean dist to patches": mean_dist}, ring, colorbar_title="U",
                                  preselected=pre)
        else:
            fig = figures.footprint_map(u, footprint.counts, footprint.max_score, footprint.defect_counts,
                                        m.topology, scale, ring, "Footprint of the image on the U-matrix",
                                        preselected=pre)
        widgets.chart(fig, "som_umatrix", clickable=True, width="content",
                      outline=widgets.map_outline(fig, m.grid_, m.topology, neuron))
        if footprint is not None:
            st.caption(f"{help.FOOTPRINT_COLOURS} {scale.describe()}")
    with right:
        ring, _ = widgets.map_selection("som_hitmap", neuron, m.topology, clickable=False)
        fig = figures.som_map(hits, m.topology, "Hit map (training patches per neuron)", "Blues",
                              {"U": u, "mean dist to patches": mean_dist}, ring, colorbar_title="hits", clickable=False)
        widgets.chart(fig, "som_hitmap", width="content", outline=widgets.map_outline(fig, m.grid_, m.topology, neuron))
    st.caption("Click a neuron on the U-matrix (or type its row and column) to select it; the hit map outlines "
               "it, and its hover gives every neuron's hits.")
    c1, c2, c3 = st.columns([1, 1, 4])
    c1.number_input("Neuron row", 0, m.grid_[0] - 1, key=Keys.W_NEURON_ROW, on_change=_typed_neuron)
    c2.number_input("Neuron col", 0, m.grid_[1] - 1, key=Keys.W_NEURON_COL, on_change=_typed_neuron)
    dist = f"{mean_dist[neuron]:.3f}" if np.isfinite(mean_dist[neuron]) else "n/a"
    c3.markdown(f"**Selected neuron ({neuron[0]}, {neuron[1]})** · {int(hits[neuron])} training patches · "
                f"U {u[neuron]:.3f} · mean distance to its patches {dist}")


def _footprint_toggled() -> None:
    st.session_state[Keys.FOOTPRINT] = "1" if st.session_state[Keys.W_FOOTPRINT] else None


def _footprint_picked() -> None:
    state.select_image(st.session_state[Keys.W_FOOTPRINT_IMAGE])


def render_footprint_pick(cur):
    """Toggle and test image of the footprint overlay; returns ``(evaluation, image index)`` or ``(None, None)``."""
    ss = st.session_state
    on = ss.get(Keys.FOOTPRINT) == "1"
    if ss.get(Keys.W_FOOTPRINT) != on:
        ss[Keys.W_FOOTPRINT] = on
    left, right = st.columns([1, 2])
    left.toggle("Show a test image on the map", key=Keys.W_FOOTPRINT, on_change=_footprint_toggled,
                help="Overlay the image's footprint on the U-matrix: the neurons its patches chose as BMU, "
                     "coloured by the highest patch score among them; green rings: chosen by patches inside "
                     "the ground-truth defect.")
    if not on:
        return None, None
    ev = state.evaluation(cur)
    if ev is None:
        return None, None
    names = state.image_names(ev)
    if ss.get(Keys.IMAGE) not in names:  # default: the highest-scoring image
        state.select_image(names[int(np.argmax(ev.scores))])
    if ss.get(Keys.W_FOOTPRINT_IMAGE) != ss[Keys.IMAGE]:
        ss[Keys.W_FOOTPRINT_IMAGE] = ss[Keys.IMAGE]
    right.selectbox("Test image (also the Test inspector's)", names, key=Keys.W_FOOTPRINT_IMAGE,
                    on_change=_footprint_picked, label_visibility="collapsed")
    return ev, names.index(ss[Keys.IMAGE])


def render_footprint_cells(cur, ev, i: int, footprint, neuron) -> None:
    """The reverse of the footprint: which cells of the image chose the selected neuron."""
    name = state.image_names(ev)[i]
    cells = footprint.cells_of(neuron)
    n_defect = int((cells & footprint.defect).sum())
    left, right = st.columns([1, 2])
    heat = loaders.get_heat_overlay(cur.model_dir, cur.data_dir, cur.category, i, cur.device)
    picture = images.contours(images.highlight_cells(heat, cells), ev.masks[i])
    left.image(images.at_shape(picture, loaders.shown_shape(ev.samples[i].path, 300)), width=300,
               caption=f"{name}: the {int(cells.sum())} cells whose BMU is neuron ({neuron[0]}, {neuron[1]}) "
                       "(tinted); ground truth green")
    with right:
        st.markdown(f"**{name}** · image score {ev.scores[i]:.3f} · its {footprint.bmu.size} cells chose "
                    f"{len(footprint.neurons)} neurons.")
        note = projection.ground_truth_note(int(ev.labels[i]), ev.masks[i])
        if note:
            st.caption(f"Ground truth: {note}")
        else:
            n_def = int(footprint.defect.sum())
            rings = int((footprint.defect_counts > 0).sum())
            st.caption(f"Ground truth: the {plural(n_def, 'cell')} in the defect chose {plural(rings, 'neuron')} "
                       "(green rings).")
        if cells.any():
            st.markdown(f"Neuron ({neuron[0]}, {neuron[1]}) was chosen by **{plural(int(cells.sum()), 'cell')}** of "
                        f"this image, {n_defect} of them in the defect; highest patch score "
                        f"{np.nanmax(np.where(cells, footprint.scores, np.nan)):.3f}.")
        else:
            st.info(f"No cell of this image chose neuron ({neuron[0]}, {neuron[1]}): click a coloured neuron "
                    "of the footprint.")
        st.caption("Click a coloured neuron of the footprint to see the cells that chose it; in the Test inspector, "
                   "a clicked heatmap cell shows where it lands on the map.")


def render_neuron_positions(cur, neuron) -> None:
    """Where the selected neuron lives in the images: positions of the training patches it wins."""
    m = cur.model
    pos = projection.neuron_positions(m, neuron)
    base = loaders.get_mean_training_image(cur.model_dir, cur.device)
    if base is None:
        st.info("The training images cannot be read (moved or deleted since fitting): no mean image to draw on.")
        base = np.full((m.image_size, m.image_size, 3), 128, np.uint8)
    widgets.chart(figures.positions_figure(base, pos, f"Where neuron ({neuron[0]}, {neuron[1]}) lives", size=300),
                  "w_positions", width="content")
    spread = projection.position_spread(pos)
    if pos.sum() == 0:
        st.caption("It wins no training patch.")
    else:
        st.caption(f"Image positions of its {int(pos.sum())} training patches over the mean training image; "
                   f"spread {spread:.1f} feature cells around their centre (0 = always the same place: a "
                   "position-bound neuron; large = a texture found all over the image).")


def render_component_plane(cur, views, neuron) -> None:
    m = cur.model
    # a toggle, not an expander: an expander's content is built and re-sent on every click even when closed
    if not st.toggle("Component plane (weight of one feature dimension across the map)", key=Keys.W_CPLANE):
        return
    st.markdown(help.COMPONENT_PLANE)
    dim = st.slider("Feature dimension", 0, len(m.channel_idx_) - 1, 0, key=Keys.W_CPLANE_DIM)
    st.caption(f"dimension {dim} = {explain.channel_label(m, dim)}")
    ring, pre = widgets.map_selection("som_cplane", neuron, m.topology)
    fig = figures.som_map(m.component_plane(dim), m.topology, f"Component plane {dim}", "RdBu_r",
                          {"U": views["u"], "hits": views["hits"]}, ring, colorbar_title="weight", preselected=pre)
    widgets.chart(fig, "som_cplane", clickable=True, width="content",
                  outline=widgets.map_outline(fig, m.grid_, m.topology, neuron))


def render_training_patches(cur, neuron) -> None:
    st.subheader(f"Nearest training patches of neuron ({neuron[0]}, {neuron[1]})")
    gallery, where = st.columns([2, 1])
    with where:
        render_neuron_positions(cur, neuron)
    with gallery:
        _gallery(cur, neuron)


def _gallery(cur, neuron) -> None:
    m = cur.model
    patches = explain.nearest_training_patches(m, neuron[0], neuron[1], n=16)
    if not patches:
        st.info("This neuron is the BMU of no training patch (a dead or interpolating neuron between clusters). "
                "Pick a neuron with hits.")
        return
    crops = explain.patch_crops(m, patches, loaders.load_training_image, context=2, out_size=CROP)
    # each crop at its image's own aspect ratio (the model sees a square; the part is not square)
    shown = [images.at_shape(cr, loaders.shown_shape(p.path, CROP)) if cr is not None
             else np.full((CROP, CROP, 3), 60, np.uint8) for p, cr in zip(patches, crops)]
    caps = [f"#{i + 1} d={p.distance:.2f} · {Path(p.path).name or f'image {p.image}'} ({p.row},{p.col})"
            for i, p in enumerate(patches)]
    st.image(shown, caption=caps, width=CROP)
    missing = sum(cr is None for cr in crops)
    if missing:
        st.warning(f"{plural(missing, 'training image')} could not be read (moved or deleted since fitting); "
                   "shown as grey squares.")
    st.caption("Each crop is a 5x5-cell neighbourhood around the patch; the box marks the feature cell "
               "(its receptive field centre); grey diagonal hatching is outside the image (a cell at its border). Sorted by distance to the neuron's weights; captions give the "
               "training file and the cell (row, col).")


# ----------------------------------------------------------- regions (issue 19 item 4)
def _typed_regions() -> None:
    n = int(st.session_state[Keys.W_N_REGIONS])
    st.session_state[Keys.N_REGIONS] = n or None


def _picked_region_image() -> None:
    state.select_image(st.session_state[Keys.W_REGION_IMAGE])


def render_regions(cur, views) -> None:
    """The map split into a few connected regions: what each stands for, where it sits in the images,
    and what of the test split (and of one test image) lands in it."""
    ss = st.session_state
    m = cur.model
    st.subheader("Regions of the map")
    limit = min(m.grid_[0] * m.grid_[1], regions.MAX_REGIONS)
    if ss.get(Keys.N_REGIONS) is not None and not 1 <= ss[Keys.N_REGIONS] <= limit:
        ss[Keys.N_REGIONS] = None
    ss[Keys.W_N_REGIONS] = ss.get(Keys.N_REGIONS) or 0
    st.number_input(f"Number of regions (0 = automatic, at most {limit})", 0, limit, key=Keys.W_N_REGIONS,
                    on_change=_typed_regions)
    reg = loaders.get_regions(cur.model_dir, ss.get(Keys.N_REGIONS), cur.device)
    st.caption(f"Method: {regions.METHOD}: every region is one connected piece of the map, and its borders "
               f"follow the U-matrix ridges. {regions.how_chosen(reg)}")
    note = regions.structure_note(reg)
    if note:
        st.warning(note)
    ev, why = _evaluation_or_reason(cur)
    image, marks, breakdown = _region_image_choice(cur, ev, reg)
    left, right = st.columns(2)
    with left:
        widgets.chart(figures.region_map(reg.labels, m.topology, "Regions (R1 holds the most training patches)",
                                         {"hits": views["hits"], "U": views["u"]}, reg.typical, marks,
                                         "defect cells of the selected image" if marks is not None else "cells",
                                         clickable=False),
                      "som_regions", width="content")
    with right:
        mean_img = loaders.get_mean_training_image(cur.model_dir, cur.device)
        major, agree = regions.region_positions(reg, m.train_bmu_, m.feature_shape_)
        if mean_img is None:
            st.info("The training images cannot be read (moved or deleted since fitting), so the regions' "
                    "places in the image are not drawn.")
        else:
            st.image(figures.region_image(mean_img, major), width=380,
                     caption="Where each region sits: every feature cell of the mean training image tinted with "
                             f"the region most training images map it to ({100 * agree.mean():.0f}% of images "
                             "agree on average; 100% = fully position-bound).")
    st.caption("Typical training patch of each region (the nearest patch of the neuron closest to the region's "
               "hit-weighted mean) and the region's share of training patches:")
    render_region_cards(cur, reg)
    mass = None
    if ev is not None:
        cells = regions.cell_masks(ev.masks, m.feature_shape_) if ev.masks.any() else None
        mass = regions.region_mass(reg, ev.patches.neighbours[:, 0], ev.patches.scores, m.pixel_range_[1], cells)
    st.dataframe(regions.summary_rows(reg, mass), hide_index=True, width="stretch")
    if ev is None:
        st.caption(f"Test shares are not shown: {why}")
    else:
        st.caption("Test anomaly mass: each test patch's score above the top of the training colour range "
                   f"({m.pixel_range_[1]:.2f}), summed by the region of its BMU."
                   + ("" if mass.defect_share is not None else " This test split has no ground-truth masks, so "
                      "the defect-cell share cannot be given."))
    if breakdown is not None:
        st.markdown(f"**{regions.breakdown_sentence(reg, breakdown, image)}**")
        st.dataframe(regions.breakdown_rows(reg, breakdown), hide_index=True, width="stretch")


def _evaluation_or_reason(cur):
    """The cached evaluation, or (None, why) without stopping the page."""
    try:
        with st.spinner(f"Scoring the test images of '{cur.category}' (once per model)..."):
            ev = state.scored_evaluation(cur.model_dir, cur.data_dir, cur.category, cur.device)
    except SomadError as exc:
        return None, f"the test split of '{cur.category}' cannot be scored ({exc})."
    except Exception as exc:  # never a traceback in the page
        return None, f"scoring the test images failed ({type(exc).__name__}: {exc})."
    return ev, ""


def _region_image_choice(cur, ev, reg):
    """The test image whose score is broken down by region (the session's selected image, else the
    highest-scoring defective one), its defect cells on the map and the breakdown."""
    ss = st.session_state
    if ev is None:
        return None, None, None
    m = cur.model
    names = [f"{s.defect}/{s.path.name}" for s in ev.samples]
    if ss.get(Keys.IMAGE) not in names:
        ss[Keys.IMAGE] = names[int(np.argmax(np.where(ev.labels == 1, ev.scores, -np.inf)))]
    ss[Keys.W_REGION_IMAGE] = ss[Keys.IMAGE]
    st.selectbox("Test image broken down by region", names, key=Keys.W_REGION_IMAGE, on_change=_picked_region_image)
    i = names.index(ss[Keys.IMAGE])
    cells = regions.cell_masks(ev.masks[i:i + 1], m.feature_shape_)[0] if ev.masks[i].any() else None
    b = regions.image_breakdown(reg, ev.patches.neighbours[:, 0], ev.patches.scores, i, m.feature_shape_,
                                m.pixel_range_[1], cells)
    marks = None
    if cells is not None:
        marks = regions.cells_on_map(ev.patches.neighbours[:, 0], i, m.feature_shape_, cells, m.grid_)
    return names[i], marks, b


def render_region_cards(cur, reg) -> None:
    """Each region's typical training patch (the nearest patch of its typical neuron) and share."""
    m = cur.model
    per_row = 8
    for start in range(0, reg.n, per_row):
        cols = st.columns(per_row)
        for r, col in zip(range(start, min(reg.n, start + per_row)), cols):
            patch = explain.nearest_training_patches(m, *reg.typical[r], n=1)
            crop = explain.patch_crops(m, patch, loaders.load_training_image, context=2, out_size=CROP)
            with col:
                st.markdown(f"<span style='color:{figures.region_color(r)};font-size:1.4em'>■</span> "
                            f"**{regions.Regions.name(r)}** · {100 * reg.train_share[r]:.0f}%",
                            unsafe_allow_html=True, help="share of the training patches whose BMU is in this region")
                if crop and crop[0] is not None:
                    st.image(crop[0], width=CROP)
                else:
                    st.caption("(typical patch not readable)")


# ------------------------------------------------------ training replay (issue 19 item 6)
def render_replay(cur) -> None:
    """The SOM's training replayed epoch by epoch, when the model kept snapshots."""
    m = cur.model
    st.subheader("Training replayed")
    if getattr(m, "replay_", None) is None:
        st.info(replay.HOW_TO_GET)
        return
    widgets.chart(figures.replay_figure(m.replay_, m.topology), "som_replay", width="content")
    st.caption(f"{m.replay_.epochs} epochs kept ({m.replay_.nbytes / 1024:.0f} KB in the model). Press Play or "
               "drag the slider: the U-matrix after each epoch on one colour range, with the quantization error "
               "(mean distance of the training patches to their BMU) and the topographic error (share of patches "
               "whose two nearest neurons are not neighbours) as the map organised itself. "
               + replay.caption(m.replay_, m.som_train_images_ * m.feature_shape_[0] * m.feature_shape_[1]))


def _inspect(name: str) -> None:
    state.select_image(name)


def render_test_images(cur, neuron) -> None:
    m = cur.model
    st.subheader("Test images where this neuron is the BMU")
    ev = state.require_evaluation(cur)
    nh = explain.neuron_test_hits(ev.patches, neuron, m.grid_, len(ev.labels))
    if len(nh.by_hits) == 0:
        st.info("No test patch maps to this neuron.")
        return
    picks = list(dict.fromkeys([*nh.by_score[:3].tolist(), *nh.by_hits[:3].tolist()]))[:6]
    st.caption("Highest-scoring cells first, then most cells; the cells whose BMU is this neuron are outlined.")
    grid_cols = st.columns(3)
    for n, i in enumerate(picks):
        cells = explain.neuron_cells(ev.patches, neuron, m.grid_, i, m.feature_shape_)
        heat = loaders.get_heat_overlay(cur.model_dir, cur.data_dir, cur.category, i, cur.device)
        name = f"{ev.samples[i].defect}/{ev.samples[i].path.name}"
        with grid_cols[n % 3]:
            # at the width shown: a larger picture is encoded, shrunk and encoded again by st.image
            st.image(images.at_shape(images.highlight_cells(heat, cells), loaders.shown_shape(ev.samples[i].path, 260)),
                     width=260,
                     caption=f"{name} · score {ev.scores[i]:.2f} · {int(nh.hits[i])} cells, "
                             f"max cell score {nh.max_score[i]:.2f}")
            if st.button("Inspect", key=f"inspect_{i}", on_click=_inspect, args=(name,)):
                st.switch_page(state.PAGES["inspector"])


@st.fragment
def render_explorer(cur, views) -> None:
    """Everything that follows a click on the maps, rerun alone on such a click (a fragment): the
    header and the app around it are not rebuilt or re-sent. Ends by writing the view into the URL,
    which ``app.py`` does only on a full run."""
    foot_ev, foot_image = render_footprint_pick(cur)
    foot = None if foot_ev is None else projection.image_footprint(
        foot_ev.patches, foot_image, cur.model.feature_shape_, cur.model.grid_, foot_ev.masks[foot_image])
    selected = pick_neuron(cur, views)
    scale = None if foot is None else viz.heat_scale(cur.model.pixel_range_, foot_ev.metrics)
    render_maps(cur, views, selected, foot, scale)
    state.write_url()  # before anything that may stop the fragment
    if foot is not None:
        render_footprint_cells(cur, foot_ev, foot_image, foot, selected)
    render_component_plane(cur, views, selected)
    render_training_patches(cur, selected)
    render_test_images(cur, selected)


state.ensure_navigation()
st.title("SOM explorer")
current = state.require_model()
som_views = loaders.get_som_views(current.model_dir, current.device)
render_header(current, som_views)
render_explorer(current, som_views)  # a fragment: a click on a map reruns only this part
render_regions(current, som_views)
render_replay(current)
