"""Test inspector: all test images with outcomes at a threshold; why one pixel scored what it did."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import events, help, images, loaders, roles, state, teach_panel, teaching, widgets
from dashboard.keys import Keys
from somad import explain, figures, operating, projection, viz
from somad.errors import SomadError
from somad.words import plural, word

OUTCOMES = ("TP", "FP", "FN", "TN")
CROP = 112
PICTURE = 260
"""Width in pixels of the input, ground-truth and predicted-region pictures."""
HEATMAP_PX = 400
"""The clickable heatmap's figure width (pixels), which sets its height; it is drawn at the column's width."""


def _set_threshold(value: float, origin: str | None = None) -> None:
    """Move the slider to ``value``, a preset whose rule in words is ``origin``."""
    ss = st.session_state
    ss[Keys.THRESHOLD] = ss[Keys.W_THRESHOLD] = float(value)
    ss[Keys.THRESHOLD_ORIGIN] = (ss.get(Keys.MODEL_DIR), origin, False)


def _slid() -> None:
    ss = st.session_state
    ss[Keys.THRESHOLD] = float(ss[Keys.W_THRESHOLD])
    model_dir, origin, _ = ss.get(Keys.THRESHOLD_ORIGIN) or (ss.get(Keys.MODEL_DIR), None, True)
    ss[Keys.THRESHOLD_ORIGIN] = (model_dir, origin, True)


def threshold_rule(cur, thr: float) -> str:
    """The slider threshold's rule in words (:func:`dashboard.teaching.slider_rule`)."""
    model_dir, origin, by_hand = st.session_state.get(Keys.THRESHOLD_ORIGIN) or (None, None, False)
    if model_dir != cur.model_dir:  # nothing picked on this model yet: its own threshold, or a link's value
        origin = teaching.deployable_origin(cur.model)
        by_hand = not np.isclose(thr, cur.model.threshold_, rtol=0, atol=1e-6)
        origin = None if by_hand else origin
    return teaching.slider_rule(thr, origin, by_hand)


def render_threshold(cur, ev) -> float:
    """Image threshold slider with the deployable and F1-optimal presets; returns the threshold."""
    ss = st.session_state
    m = cur.model
    deployable = float(m.threshold_)
    f1_thr = float(ev.metrics.get("image_f1_threshold", np.nan))
    train = np.asarray(getattr(m, "train_scores_", []), dtype=float)
    extremes = (train.min(), train.max()) if len(train) else ()  # where false-alarm targets land
    marks = [v for v in (deployable, f1_thr, *extremes) if np.isfinite(v)]
    lo, hi = float(min(ev.scores.min(), *marks)), float(max(ev.scores.max(), *marks))
    pad = 0.05 * max(hi - lo, 1e-6)  # a fixed range per model, so the slider keeps its identity
    lo, hi = lo - pad, hi + pad
    thr = float(np.clip(state.threshold(cur), lo, hi))
    if ss.get(Keys.W_THRESHOLD) != thr:
        ss[Keys.W_THRESHOLD] = thr
    c1, c2, c3 = st.columns([4, 1, 1])
    c1.slider("Image threshold (score ≥ threshold = anomalous)", lo, hi, step=(hi - lo) / 500,
              key=Keys.W_THRESHOLD, on_change=_slid, format="%.3f", help=help.THRESHOLDS)
    saved = bool(getattr(m, "threshold_manual_", None))
    c2.button(f"{'Saved' if saved else 'Deployable'} {deployable:.3f}", on_click=_set_threshold,
              args=(deployable, teaching.deployable_origin(m)),
              help=f"this version's threshold: {m.threshold_rule}" if saved else
              "percentile of cross-fitted training scores: needs no defective images")
    if np.isfinite(f1_thr):
        c3.button(f"F1-optimal {f1_thr:.3f}", on_click=_set_threshold, args=(f1_thr, teaching.f1_origin(len(ev.labels))),
                  help="best F1 on this test split (optimistic: chosen with the test labels)")
    ss[Keys.THRESHOLD] = thr = float(ss[Keys.W_THRESHOLD])
    st.caption(f"Rule: {threshold_rule(cur, thr)}.")
    return thr


def render_operating_point(cur, ev, thr: float) -> None:
    """Other ways to choose the threshold: a false-alarm rate on the cross-fitted training scores (no
    labels), a recall on a labelled validation folder, or a point of the trade-off curve."""
    if not teach_panel.section("Choose the operating point: false-alarm rate, recall on a validation folder, "
                               "trade-off curve", Keys.W_OPEN_OPERATING):
        return
    with st.container(border=True):
        a, b = st.columns(2)
        with a:
            render_far_target(cur)
        with b:
            render_recall_target(cur)
        if st.toggle("Show the trade-off curve (false-alarm rate against recall) to pick a point from",
                     key=Keys.W_SHOW_CURVE):
            render_tradeoff(cur, ev, thr)


def render_far_target(cur) -> None:
    st.markdown("**Target false-alarm rate** (no labels needed)")
    scores = np.asarray(getattr(cur.model, "train_scores_", []), dtype=float)
    target = st.number_input("False alarms allowed on defect-free images (%)", 0.0, 100.0, 1.0, step=0.5,
                             key=Keys.W_FAR_TARGET, help=help.FAR_TARGET)
    try:
        op = operating.threshold_at_false_alarm_rate(scores, target / 100)
    except SomadError as exc:
        st.warning(str(exc))
        return
    st.caption(f"→ threshold **{op.threshold:.3f}**: {op.rule}.")
    st.button("Use this threshold", key="w_use_far", on_click=_set_threshold, args=(op.threshold, op.rule))


def _validation(cur):
    """``(folder, labels, scores)`` of the validation folder scored for this model, or None."""
    got = st.session_state.get(Keys.VALIDATION)
    return got[1:] if got and got[0] == cur.model_dir else None


def render_recall_target(cur) -> None:
    st.markdown("**Target recall on a validation folder** (labelled, kept apart from the test split)")
    folder = st.text_input("Validation folder (good/ and <defect>/ sub-folders, MVTec layout)",
                           key=Keys.W_VALIDATION_DIR, placeholder="/data/bottle_validation")
    if st.button("Score the validation folder", key="w_score_val", disabled=not folder.strip()):
        score_validation(cur, folder)
    val = _validation(cur)
    if val is None:
        return
    where, labels, scores = val
    target = st.number_input("Defective images to find (%)", 0.0, 100.0, 95.0, step=1.0, key=Keys.W_RECALL_TARGET)
    try:
        op = operating.threshold_at_recall(labels, scores, target / 100, source=f"the validation folder {where}")
    except SomadError as exc:
        st.warning(str(exc))
        return
    st.caption(f"→ threshold **{op.threshold:.3f}**: {op.rule}.")
    st.button("Use this threshold", key="w_use_recall", on_click=_set_threshold, args=(op.threshold, op.rule))


def score_validation(cur, folder: str) -> None:
    """Score a validation folder with a progress bar; keep its labels and scores for this model."""
    try:
        test_split = Path(cur.data_dir) / cur.category / "test"
        samples = operating.validation_samples(folder, test_split=test_split)
        bar = st.progress(0.0, text=f"Scoring {len(samples)} validation images")
        scores = operating.score_files(cur.model, [s.path for s in samples],
                                       progress=lambda _s, d, t: bar.progress(d / max(t, 1),
                                                                              text=f"Scoring validation images {d}/{t}"))
    except SomadError as exc:
        st.error(str(exc))
        return
    except Exception as exc:  # never a traceback
        st.error(f"Scoring the validation folder failed ({type(exc).__name__}: {exc}).")
        return
    st.session_state[Keys.VALIDATION] = (cur.model_dir, folder.strip(),
                                         np.array([s.label for s in samples]), scores)


CURVE_SOURCES = ("test split", "validation folder")


def render_tradeoff(cur, ev, thr: float) -> None:
    """False-alarm rate against recall, current point marked; a click picks that threshold."""
    val = _validation(cur)
    source = st.radio("Trade-off curve of", CURVE_SOURCES if val else CURVE_SOURCES[:1], horizontal=True,
                      key=Keys.W_CURVE_SOURCE)
    if source == "validation folder" and val:
        where, labels, scores = val
        name = f"{len(labels)} validation images"
    else:
        labels, scores, name = ev.labels, ev.scores, f"{len(ev.labels)} test images"
    if len(set(np.asarray(labels).tolist())) < 2:
        st.info(f"The {source} has only one class of images: no trade-off curve.")
        return
    curve = operating.tradeoff_curve(labels, scores)
    marks = {"deployable": operating.point_at(labels, scores, cur.model.threshold_)}
    fig = figures.tradeoff_figure(curve.false_alarm_rate, curve.recall, curve.thresholds,
                                  current=operating.point_at(labels, scores, thr), marks=marks,
                                  title=f"Trade-off on {name}: click a point to use its threshold")
    event = widgets.chart(fig, "w_tradeoff", clickable=True)
    picked = widgets.new_click("w_tradeoff", events.selected_point(event, curve=figures.CLICK_TRACE))
    if picked is not None and 0 <= picked < len(curve.thresholds):
        far, rec = curve.false_alarm_rate[picked], curve.recall[picked]
        _set_threshold(float(curve.thresholds[picked]), teaching.curve_origin(far, rec, name))
        st.rerun()
    if source == "test split":
        st.caption("Chosen on the test split, a threshold is judged on the images it was chosen with: optimistic. "
                   "A validation folder or the false-alarm target avoids that.")


def render_saved_message() -> None:
    msg = st.session_state.pop(Keys.SAVED_VERSION, None)
    if msg:
        st.success(msg)


def render_save_threshold(cur, thr: float, rule: str) -> None:
    """"Save this threshold": a new version with the slider's threshold and its rule. Hidden for viewers."""
    if not roles.can_write():
        return
    if not teach_panel.section("Save this threshold as a new version", Keys.W_OPEN_SAVE):
        return
    with st.container(border=True):
        st.caption(f"Threshold {thr:.3f}; rule saved with it: {rule}. The current version stays as it is.")
        a, b = st.columns(2)
        note = a.text_input("Note", key=Keys.W_SAVE_NOTE, placeholder="why this threshold")
        name = b.text_input("Name of the new version (optional)", key=Keys.W_SAVE_NAME, placeholder="automatic")
        default = st.checkbox("Make it the category's default (what new dashboard sessions open, and what "
                              "`evaluate` uses without `--name`)",
                              key=Keys.W_SAVE_DEFAULT)
        if st.button("Save this threshold", type="primary", icon=":material/save:", key="w_save_threshold"):
            try:
                new = teaching.save_threshold_version(cur.model_dir, thr, rule, note=note, name=name,
                                                      make_default=default)
            except SomadError as exc:
                st.error(f"Not saved: {exc}")
                return
            except Exception as exc:  # never a traceback
                st.error(f"Saving failed ({type(exc).__name__}: {exc}). Nothing was written.")
                return
            st.session_state[Keys.SAVED_VERSION] = (
                f"Saved threshold {thr:.3f} as the new version **{new.name}** (now open"
                + (", and the category's default" if default else "") + f"). Undo: open {Path(cur.model_dir).name}.")
            state.select_model(str(new), cur.data_dir, cur.category, new_version=True)
            st.rerun()


def render_counts(ev, thr: float, leak: np.ndarray) -> None:
    every, clean = explain.counts_with_and_without(ev.labels, ev.scores, thr, leak)
    for col, name in zip(st.columns(4), OUTCOMES):
        col.metric(name, every[name], help=None if clean is None else f"{clean[name]} without the taught images")
    if clean is not None:
        n = int(leak.sum())
        st.warning(f"{plural(n, 'test image')} {word(n, 'was')} taught to this model (a leak): "
                   f"{word(n, 'it', 'they')} {word(n, 'is')} in its training set, so the counts above flatter it. Without "
                   f"{word(n, 'it')}: "
                   + ", ".join(f"{k} {clean[k]}" for k in OUTCOMES) + ".")
    with st.expander("What do TP, FP, FN, TN and the thresholds mean?"):
        st.markdown(help.TEST_TABLE + "\n" + help.THRESHOLDS)


def _table(ev, thr: float) -> pd.DataFrame:
    out = explain.outcomes(ev.labels, ev.scores, thr)
    return pd.DataFrame({
        "#": np.arange(len(ev.labels)),
        "image": image_names(ev),
        "defect type": [s.defect for s in ev.samples],
        "ground truth": np.where(ev.labels == 1, "anomalous", "normal"),
        "score": np.round(ev.scores.astype(float), 4),
        "predicted": np.where(np.isin(out, ("TP", "FP")), "anomalous", "normal"),
        "outcome": out,
    })


def image_names(ev) -> list[str]:
    """``"<defect>/<file name>"`` of every test image (the key of the selected image in the URL)."""
    return [f"{s.defect}/{s.path.name}" for s in ev.samples]


def render_table(cur, ev, thr: float, leak: np.ndarray) -> list[int]:
    """Filterable test table with a CSV export; a clicked row selects its image. Returns the test
    indices of the selected rows."""
    table = _table(ev, thr)
    f1, f2, f3, f4 = st.columns([2, 2, 2, 1])
    defects = f1.multiselect("Defect type", sorted(table["defect type"].unique()), key="w_filter_defect")
    outcomes = f2.multiselect("Outcome", OUTCOMES, key="w_filter_outcome")
    search = f3.text_input("Search file name", key="w_filter_search").strip().lower()
    n_rows = f4.selectbox("Rows", (10, 25, 100, "all"), index=0, key="w_filter_rows")
    failing = st.toggle("Failing images only (FP and FN first, worst first)", key="w_failing")
    if failing:
        table = table.iloc[explain.failing_order(ev.labels, ev.scores, thr)]
    keep = np.ones(len(table), bool)
    if defects:
        keep &= table["defect type"].isin(defects).to_numpy()
    if outcomes:
        keep &= table["outcome"].isin(outcomes).to_numpy()
    if search:
        keep &= table["image"].str.lower().str.contains(search, regex=False).to_numpy()
    table = table[keep]
    if table.empty:
        st.info("No test image matches these filters.")
        return []
    height = 38 + 35 * min(len(table), 10 if n_rows == "all" else n_rows)
    sel = st.dataframe(table, key="w_table", on_select="rerun", selection_mode="multi-row", hide_index=True,
                       width="stretch", height=height)
    notes = np.where(leak, "taught to this model (leak)", "")
    export = teaching.export_table(table, [s.path for s in ev.samples], thr, notes)
    c1, c2 = st.columns([3, 1])
    c1.caption(f"{len(table)} of {len(ev.labels)} images; scroll the table for more. Click rows to select them "
               "(the last one clicked is shown below).")
    c2.download_button("Export CSV", teaching.csv_bytes(export), mime="text/csv", on_click="ignore",
                       file_name=f"somad_{cur.category}_{Path(cur.model_dir).name}_thr{thr:.4g}.csv",
                       icon=":material/download:", key="w_export_csv",
                       help="the rows shown (filters applied) with path, score, threshold, outcome and notes")
    rows = list(sel.selection.rows) if sel is not None else []
    previous = set(st.session_state.get(Keys.W_TABLE_ROWS, ()))
    st.session_state[Keys.W_TABLE_ROWS] = tuple(rows)
    added = [r for r in rows if r not in previous]
    picked = widgets.new_click("w_table", (tuple(rows), tuple(table["#"])) if rows else None)
    if picked is not None and added:
        state.select_image(str(table.iloc[added[-1]]["image"]))
    return [int(table.iloc[r]["#"]) for r in rows if r < len(table)]


MARK_SCOPES = ("the image shown below", "the selected rows")


def render_mark(cur, ev, thr: float, selected: list[int], index: int, leak: np.ndarray) -> None:
    """"Mark as normal" on the image shown or on every selected row (a new version, after a preview)."""
    if not roles.can_write():
        return
    if not teach_panel.section("Mark as normal", Keys.W_OPEN_MARK):
        return
    with st.container(border=True):
        scope = st.radio("Mark", MARK_SCOPES, horizontal=True, key=Keys.W_MARK_SCOPE,
                         format_func=lambda s: f"{s} ({len(selected)})" if s == MARK_SCOPES[1] else s)
        indices = [index] if scope == MARK_SCOPES[0] else selected
        marked = teaching.marked_from_split(ev, indices)
        st.caption("Teaching adds these images to the training set with the SOM kept fixed (seconds). They then "
                   "leak into this test split's metrics: the counts are shown with and without them.")
        teach_panel.render_mark_panel(cur, marked, thr, before=teach_panel.outcome_counts(ev, thr))


def current_image(ev, thr: float) -> int:
    """Index of the selected test image (default: the worst failing one, else the highest score)."""
    names = image_names(ev)
    name = st.session_state.get(Keys.IMAGE)
    if name not in names:
        order = explain.failing_order(ev.labels, ev.scores, thr)
        state.select_image(names[int(order[0]) if len(order) else int(np.argmax(ev.scores))])
    return names.index(st.session_state[Keys.IMAGE])


def pick_cell(cur, i: int) -> tuple[int, int] | None:
    ss = st.session_state
    clicked = widgets.new_click(f"heat_{i}", events.point_to_cell(ss.get(f"heat_{i}"), cur.model.feature_shape_,
                                                                  curve=figures.CLICK_TRACE))
    if clicked is not None:
        ss[Keys.CELL] = clicked
    cell = ss.get(Keys.CELL)
    h, w = cur.model.feature_shape_
    return (int(cell[0]), int(cell[1])) if cell and 0 <= cell[0] < h and 0 <= cell[1] < w else None


def render_image(cur, ev, i: int, thr: float) -> tuple[int, int] | None:
    """Input, truth, clickable heatmap and predicted region of image ``i``; returns the selected cell."""
    m = cur.model
    out = explain.outcomes(ev.labels[i:i + 1], ev.scores[i:i + 1], thr)[0]
    st.subheader(f"{image_names(ev)[i]}: score {ev.scores[i]:.3f} → {out}")
    h, w = m.feature_shape_
    cell_scores = ev.patches.scores[i * h * w:(i + 1) * h * w].numpy().reshape(h, w)
    heat = loaders.get_heat_overlay(cur.model_dir, cur.data_dir, cur.category, i, cur.device)
    cell = pick_cell(cur, i)
    pix_thr = viz.pixel_threshold(ev.metrics, m.pixel_range_)
    shape = loaders.shown_shape(ev.samples[i].path, 520)  # the input's own aspect ratio
    # the pictures at the width they are shown (st.image would encode a larger one, decode it, shrink it
    # and encode it again, on every click)
    img, mask, amap = (images.at_shape(a, loaders.shown_shape(ev.samples[i].path, PICTURE))
                       for a in (ev.images[i], ev.masks[i], ev.maps[i]))
    a, b, c = st.columns([1, 1.35, 1])
    with a:
        st.image(img, caption="input", width=PICTURE)
        st.image(images.contours(img, mask), caption="ground truth (green)", width=PICTURE)
    with b:
        scale = viz.heat_scale(m.pixel_range_, ev.metrics)
        # the same figure whatever cell is selected: the outline is drawn over it (widgets.chart), so a click
        # does not rebuild the chart; stretched: drawn at the column's width from the start, no jump as it appears
        widgets.chart(figures.image_figure(images.at_shape(heat, shape), (h, w), "heatmap: click a pixel", cell_scores,
                                           size=HEATMAP_PX, model_size=m.image_size, scale=scale),
                      f"heat_{i}", clickable=True, outline_color="white",
                      outline=None if cell is None else figures.image_cell_css(
                          shape, (h, w), HEATMAP_PX, cell, widgets.OUTLINE_PX, colorbar=scale is not None))
        st.caption(scale.describe())
    with c:
        st.image(images.contours(img, mask, amap, pix_thr), width=PICTURE, caption=viz.region_caption(ev.maps[i], pix_thr))
        st.caption("The pixel threshold is the pixel-level F1-optimal one of this evaluation; it is not the image "
                   "threshold above.")
    return cell


def _open_neuron(neuron: tuple[int, int]) -> None:
    """Open ``neuron`` in the SOM explorer, with this image's footprint on the U-matrix."""
    st.session_state[Keys.NEURON] = neuron
    st.session_state[Keys.FOOTPRINT] = "1"


def render_cell(cur, ev, i: int, cell: tuple[int, int]) -> None:
    """BMU, k nearest neurons and the feature contributions of one feature cell."""
    m = cur.model
    r, c = cell
    ex = explain.explain_cell(ev.patches, i, r, c, m.feature_shape_, m.grid_)
    st.subheader(f"Cell ({r}, {c}): BMU ({ex.bmu[0]}, {ex.bmu[1]}), score {ex.score:.3f}")
    x0, y0, x1, y1 = explain.cell_box(r, c, m.feature_shape_, m.image_size)
    st.caption(f"Pixels x {x0}–{x1 - 1}, y {y0}–{y1 - 1} of the {m.image_size}px image. The patch score is the "
               f"smallest Mahalanobis distance to the k = {len(ex.neighbours)} nearest neurons (Euclidean), before "
               "upsampling and blur.")
    left, right = st.columns([1.1, 1.3])
    with left:
        st.markdown("**BMU and k nearest neurons**")
        st.dataframe(pd.DataFrame([{
            "neuron": f"({nr}, {nc})", "Mahalanobis": round(d, 3),
            "role": " · ".join(t for t, on in (("BMU", (nr, nc) == ex.bmu), ("score", (nr, nc) == ex.best)) if on),
            "patches": int(m.counts_[explain.neuron_index(nr, nc, m.grid_)])}
            for nr, nc, d in ex.neighbours]), hide_index=True, width="stretch", column_config={
                "role": st.column_config.TextColumn(help="BMU: nearest neuron (Euclidean); score: the neuron whose "
                                                          "Mahalanobis distance is the cell's score"),
                "patches": st.column_config.NumberColumn(help="training patches whose BMU is this neuron")})
        for nr, nc, _ in ex.neighbours:
            if st.button(f"Open neuron ({nr}, {nc}) in the SOM explorer", key=f"open_{nr}_{nc}",
                         on_click=_open_neuron, args=((nr, nc),), icon=":material/grid_on:"):
                st.switch_page(state.PAGES["som"])
    feats = loaders.get_image_features(cur.model_dir, cur.data_dir, cur.category, i, cur.device)
    pm = projection.patch_on_map(m, feats, r, c)  # the cell's distance to every neuron, once for both views
    with right:
        render_why_pictures(cur, ev, i, cell, ex, pm.dist)
    render_cell_on_map(cur, ev, i, cell, ex, pm)
    # a toggle, not an expander: a closed expander's chart is still built, sent and drawn on every cell
    # click (about 0.1 s of the browser's CPU per click, benchmarks/click_breakdown.py)
    if st.toggle("Feature contributions (for specialists): which feature dimensions make up the distance",
                 key=Keys.W_CONTRIB):
        render_contributions(cur, i, cell, ex)


def render_why_pictures(cur, ev, i: int, cell: tuple[int, int], ex, dist: np.ndarray) -> None:
    """"Why is this pixel hot?" in pictures: the clicked patch beside the nearest normal training
    patches of its BMU and of the neuron that gave its score, all cropped at the same scale
    (``dist``: the cell's Euclidean distance to every neuron, :func:`somad.projection.distance_map`)."""
    m = cur.model
    r, c = cell
    maha = {(nr, nc): d for nr, nc, d in ex.neighbours}
    st.markdown("**Why this score, in pictures**")
    crop = explain.crop_patch(ev.images[i], r, c, m.feature_shape_, context=2, out_size=CROP)
    st.image(images.at_shape(crop, loaders.shown_shape(ev.samples[i].path, CROP)), width=CROP,
             caption=f"this cell · score {ex.score:.2f}")
    roles = [("its BMU (nearest neuron)", ex.bmu)]
    roles += [] if ex.best == ex.bmu else [("the neuron that gave its score", ex.best)]
    for label, neuron in roles:
        patches = explain.nearest_training_patches(m, *neuron, n=4)
        st.caption(f"Nearest normal training patches of {label} ({neuron[0]}, {neuron[1]}). This cell is "
                   f"{dist[neuron]:.2f} from the neuron (Euclidean; Mahalanobis {maha[neuron]:.2f}); the training "
                   "patches' distances are under each crop.")
        if not patches:
            st.info("This neuron wins no training patch (it lies between groups of the map).")
            continue
        crops = explain.patch_crops(m, patches, loaders.load_training_image, context=2, out_size=CROP)
        st.image([images.at_shape(cr, loaders.shown_shape(p.path, CROP)) if cr is not None
                  else np.full((CROP, CROP, 3), 60, np.uint8) for p, cr in zip(patches, crops)], width=CROP,
                 caption=[f"d={p.distance:.2f}" for p in patches])
    st.caption("Every crop is 5x5 feature cells at the same scale, the box marks the cell. Distances are "
               "Euclidean, in feature units: a cell much farther from the neuron than its normal patches is unlike them.")


def render_cell_on_map(cur, ev, i: int, cell: tuple[int, int], ex, pm) -> None:
    """Where the clicked cell lands on the map (its BMU on the image's footprint) and its distance to
    every neuron (MiniSom's ``activate``, ``pm``: :func:`somad.projection.patch_on_map`) with the k
    nearest marked. Both maps are only looked at: drawn without per-neuron markers (``clickable=False``)."""
    m = cur.model
    r, c = cell
    fp = projection.image_footprint(ev.patches, i, m.feature_shape_, m.grid_, ev.masks[i])
    u = loaders.get_som_views(cur.model_dir, cur.device)["u"]
    left, right = st.columns(2)
    with left:
        # the BMU is outlined over a figure that stays the same for every cell of the image (widgets.chart)
        ring, _ = widgets.map_selection("w_cell_footprint", ex.bmu, m.topology, clickable=False)
        fig = figures.footprint_map(u, fp.counts, fp.max_score, fp.defect_counts, m.topology,
                                    viz.heat_scale(m.pixel_range_, ev.metrics), ring,
                                    "Where the clicked cell lands: its BMU on the image's footprint", size=400, clickable=False)
        widgets.chart(fig, "w_cell_footprint", width="content",
                      outline=widgets.map_outline(fig, m.grid_, m.topology, ex.bmu))
        note = projection.ground_truth_note(int(ev.labels[i]), ev.masks[i])
        st.caption("Grey: U-matrix (light valleys, dark ridges). Coloured: the neurons this image's cells chose, by their highest patch score "
                   "on the heatmap's colour scale; "
                   "green rings: chosen by cells in the ground-truth defect"
                   + (f" ({note})" if note else "") + f"; pink outline: the BMU of cell ({r}, {c}).")
    with right:
        widgets.chart(figures.distance_map_figure(pm.dist, pm.nearest, m.topology,
                                                  f"Distance of cell ({r}, {c}) to every neuron", size=400,
                                                  clickable=False),
                      "w_cell_distance", width="content")
        st.caption(f"Euclidean distance in feature units (yellow = near, dark purple = far); pink outline: BMU, "
                   f"dotted white: the other {len(pm.nearest) - 1} nearest. Its BMU distance is "
                   f"{pm.median_ratio:.1f}x that of a typical training patch; {pm.where()}. Whether it is anomalous "
                   "is its score's business (the Mahalanobis distance to the neuron's Gaussian), not this distance.")


def render_contributions(cur, i: int, cell: tuple[int, int], ex) -> None:
    """Per-feature terms of the squared Mahalanobis distance that gave the cell's score."""
    m = cur.model
    r, c = cell
    feats = loaders.get_image_features(cur.model_dir, cur.data_dir, cur.category, i, cur.device)
    contrib = explain.explain_contributions(m, feats, r, c, ex.best)
    top = explain.top_contributions(contrib, m.channel_idx_, n=10)
    labels = [f"dim {d}: {explain.channel_label(m, d)}" for d, _, _, _ in top]
    widgets.chart(figures.contributions_figure(
        top, f"Why {ex.score:.2f}: top features of the distance to neuron ({ex.best[0]}, {ex.best[1]})", labels),
        "w_contrib")
    share = sum(t[3] for t in top)
    st.caption(f"Mahalanobis² = {contrib.sum():.2f}, the sum of one term per dimension ({len(contrib)}). The 10 "
               f"largest terms add up to {100 * share:.0f}% of it: more than 100% is possible because the other "
               "terms include negative ones (correlated features cancelling out).")
    st.markdown(help.CONTRIBUTIONS)


@st.fragment
def render_selected_image(cur, ev, i: int, thr: float) -> None:
    """The selected image and its clicked cell, rerun alone on a heatmap click (a fragment): the
    threshold, counts and table above are not rebuilt or re-sent. Writes the view into the URL,
    which ``app.py`` does only on a full run."""
    cell = render_image(cur, ev, i, thr)
    state.write_url()
    if cell is None:
        st.info("Click a pixel of the heatmap to see its BMU, its k nearest neurons and why it scored what it did.")
    else:
        render_cell(cur, ev, i, cell)


state.ensure_navigation()
st.title("Test inspector")
current = state.require_model()
evaluation = state.require_evaluation(current)
leaked = loaders.get_leak(current.model_dir, current.data_dir, current.category, current.device)
teach_panel.render_job(current)
teach_panel.render_result(current, evaluation, leaked)
render_saved_message()
threshold = render_threshold(current, evaluation)
render_operating_point(current, evaluation, threshold)
render_counts(evaluation, threshold, leaked)
render_save_threshold(current, threshold, threshold_rule(current, threshold))
selected_rows = render_table(current, evaluation, threshold, leaked)
index = current_image(evaluation, threshold)
render_mark(current, evaluation, threshold, selected_rows, index, leaked)
render_selected_image(current, evaluation, index, threshold)
