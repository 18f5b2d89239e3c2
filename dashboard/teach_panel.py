"""The "Mark as normal" panel shared by the Test inspector and Try an image, and the box that shows
what it did on the new version. Thin Streamlit code over :mod:`dashboard.teaching`."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from somad import explain
from somad.errors import SomadError

from . import roles, state, teaching
from .keys import Keys

OUTCOMES = ("TP", "FP", "FN", "TN")


def _progress_bar(box, label: str):
    bar = box.progress(0.0, text=label)
    t0 = time.perf_counter()

    def progress(stage, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {stage} {done}/{total} "
                                                            f"({time.perf_counter() - t0:.1f} s)")

    return progress


def render_mark_panel(cur, marked: teaching.Marked, threshold: float, before: dict | None = None) -> None:
    """What will be taught, the scores now and after (preview), the confirmation for defective-labelled
    images, and the apply button (a new version, opened when done). Hidden for viewers.

    Args:
        cur: the current model. marked: the images chosen. threshold: the slider's threshold.
        before: outcome counts on the test split now (shown next to the new ones afterwards).
    """
    if not roles.can_write():
        st.caption("Viewers cannot teach the model.")
        return
    if not marked.names:
        st.info("Select images first (rows of the table, or the image shown below).")
        return
    ss = st.session_state
    st.dataframe(pd.DataFrame({"image": marked.names, "score now": np.round(marked.scores_now, 4),
                               "labelled": np.select([marked.labels == 1, marked.labels == 0],
                                                     ["defective", "normal"], "unlabelled")}),
                 hide_index=True, width="stretch", height=38 + 35 * min(len(marked.names), 6))
    confirmed = True
    if marked.defective:
        st.warning(f"{len(marked.defective)} of these images are labelled **defective**. Teaching them as normal "
                   "makes the model accept such defects from now on.")
        confirmed = st.checkbox(f"Yes, teach these {len(marked.defective)} defective-labelled image(s) as normal "
                                "(recorded with the new version)", key=Keys.W_MARK_CONFIRM)
    a, b = st.columns(2)
    note = a.text_input("Note (kept with the new version)", key=Keys.W_MARK_NOTE,
                        placeholder="e.g. new supplier's caps, warmer light since May")
    name = b.text_input("Name of the new version (optional)", key=Keys.W_MARK_NAME, placeholder="automatic")
    key = (cur.model_dir, tuple(str(p) for p in marked.paths))
    c1, c2 = st.columns(2)
    if c1.button("Preview the scores after", icon=":material/preview:"):
        try:
            with st.spinner(f"Teaching {len(marked.paths)} image(s) to a copy of the model (nothing is saved)..."):
                ss[Keys.TEACH_PREVIEW] = (key, teaching.preview_teach(cur.model_dir, marked.paths, cur.device))
        except SomadError as exc:
            st.error(f"Cannot preview: {exc}")
        except Exception as exc:  # never a traceback
            st.error(f"Preview failed ({type(exc).__name__}: {exc}).")
    stored = ss.get(Keys.TEACH_PREVIEW)
    if stored and stored[0] == key:
        pv = stored[1]
        st.dataframe(pv.table(marked.names, threshold), hide_index=True, width="stretch")
        st.caption(f"Deployable threshold {pv.threshold_now:.3f} → {pv.threshold_after:.3f} (the taught images join "
                   f"its cross-fitting); training images {pv.n_train_now} → {pv.n_train_after}. Scores after are "
                   "those of images the model has now seen: judge the change on other images (the test split "
                   "after applying, without the taught ones).")
    if c2.button(f"Mark {len(marked.names)} as normal: save a new version", type="primary",
                 icon=":material/task_alt:", disabled=not confirmed):
        apply(cur, marked, confirmed=confirmed, note=note, name=name, threshold=threshold, before=before)


def apply(cur, marked: teaching.Marked, *, confirmed: bool, note: str, name: str, threshold: float,
          before: dict | None) -> None:
    """Teach with a progress bar, open the new version and remember what changed for :func:`render_result`."""
    box = st.container(border=True)
    try:
        new = teaching.teach_version(cur.model_dir, marked, confirmed=confirmed, note=note, name=name,
                                     progress=_progress_bar(box, f"Teaching {len(marked.paths)} image(s)"),
                                     device=cur.device)
    except SomadError as exc:
        box.error(f"Not taught: {exc}")
        return
    except Exception as exc:  # never a traceback
        box.error(f"Teaching failed ({type(exc).__name__}: {exc}). The model was not changed.")
        return
    st.session_state[Keys.TEACH_RESULT] = {
        "new": str(new), "parent": cur.model_dir, "names": list(marked.names),
        "paths": [str(p) for p in marked.paths], "before": before, "threshold_before": float(threshold)}
    st.session_state.pop(Keys.TEACH_PREVIEW, None)
    state.select_model(str(new), cur.data_dir, cur.category)
    st.rerun()


def render_result(cur, ev, leak: np.ndarray) -> None:
    """After "Mark as normal": the new version, and the outcome counts on the same test split before
    and after (and without the taught test images, which now leak into the metrics)."""
    res = st.session_state.get(Keys.TEACH_RESULT)
    if not res or res["new"] != cur.model_dir:
        return
    thr = float(cur.model.threshold_)
    rows = []
    if res.get("before"):
        rows.append({"": f"before (parent {Path(res['parent']).name}, threshold {res['threshold_before']:.3f})",
                     **res["before"]})
    every, clean = teaching.counts_with_and_without(ev.labels, ev.scores, thr, leak)
    rows.append({"": f"after (this version, threshold {thr:.3f})", **every})
    if clean is not None:
        rows.append({"": f"after, without the {int(leak.sum())} taught test image(s)", **clean})
    with st.container(border=True):
        st.success(f"Taught {len(res['names'])} image(s) as normal: new version **{Path(res['new']).name}** is "
                   f"open. Undo: open the parent **{Path(res['parent']).name}** on the Model page.")
        st.dataframe(pd.DataFrame(rows).set_index(""), width="stretch")
        st.button("Dismiss", key="w_teach_dismiss", on_click=lambda: st.session_state.pop(Keys.TEACH_RESULT, None))


def outcome_counts(ev, threshold: float) -> dict:
    """TP, FP, FN, TN of an evaluation at ``threshold`` (plain ints, for the session state)."""
    return explain.outcome_counts(ev.labels, ev.scores, threshold)
