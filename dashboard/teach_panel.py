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
from somad.words import plural, word

from . import config, roles, state, teaching
from .keys import Keys

OUTCOMES = ("TP", "FP", "FN", "TN")


def section(label: str, key: str) -> bool:
    """A section opened by a toggle: unlike an expander, a keyed widget keeps its state when an element
    above it comes or goes between reruns (e.g. a scoring job's progress), so a click inside it never
    folds it away. Returns True when open."""
    return st.toggle(label, key=key)


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
        n_bad = len(marked.defective)
        st.warning(f"{n_bad} of these images {word(n_bad, 'is')} labelled **defective**. Teaching "
                   f"{word(n_bad, 'it')} as normal makes the model accept such defects from now on.")
        confirmed = st.checkbox(f"Yes, teach the {plural(n_bad, 'defective-labelled image')} as normal "
                                "(recorded with the new version)", key=Keys.W_MARK_CONFIRM)
    a, b = st.columns(2)
    note = a.text_input("Note (kept with the new version)", key=Keys.W_MARK_NOTE,
                        placeholder="e.g. new supplier's caps, warmer light since May")
    name = b.text_input("Name of the new version (optional)", key=Keys.W_MARK_NAME, placeholder="automatic")
    key = (cur.model_dir, tuple(str(p) for p in marked.paths))
    st.caption(f"{plural(len(marked.names), 'image')} chosen.")
    c1, c2 = st.columns(2)
    if c1.button("Preview the scores after", icon=":material/preview:"):
        try:
            with st.spinner(f"Teaching {plural(len(marked.paths), 'image')} to a copy of the model (nothing is saved)..."):
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
    """Teach as a server-side job when :mod:`somad.jobs` is there (:func:`render_job` follows it), else
    here with a progress bar; then open the new version and remember what changed for :func:`render_result`."""
    pending = {"parent": cur.model_dir, "names": list(marked.names), "paths": [str(p) for p in marked.paths],
               "before": before, "threshold_before": float(threshold)}
    if teaching.jobs_available():
        try:
            job_id, new = teaching.submit_teach(config.models_dir(), cur.model_dir, marked, confirmed=confirmed,
                                                note=note, name=name, device=cur.device)
        except SomadError as exc:
            st.error(f"Not taught: {exc}")
            return
        st.session_state[Keys.TEACH_JOB] = dict(pending, job=job_id, new=str(new))
        st.rerun()
    box = st.container(border=True)
    try:
        new = teaching.teach_version(cur.model_dir, marked, confirmed=confirmed, note=note, name=name,
                                     progress=_progress_bar(box, f"Teaching {plural(len(marked.paths), 'image')}"),
                                     device=cur.device)
    except SomadError as exc:
        box.error(f"Not taught: {exc}")
        return
    except Exception as exc:  # never a traceback
        box.error(f"Teaching failed ({type(exc).__name__}: {exc}). The model was not changed.")
        return
    _open_taught(dict(pending, new=str(new)), cur)
    st.rerun()


def _open_taught(result: dict, cur) -> None:
    st.session_state[Keys.TEACH_RESULT] = result
    st.session_state.pop(Keys.TEACH_PREVIEW, None)
    state.select_model(result["new"], cur.data_dir, cur.category)


def render_job(cur) -> None:
    """The teaching job this session started, followed until it ends (then its version opens)."""
    if st.session_state.get(Keys.TEACH_JOB):
        _job_fragment(cur)


@st.fragment(run_every=1.0)
def _job_fragment(cur) -> None:
    from somad import jobs

    ss = st.session_state
    pending = ss.get(Keys.TEACH_JOB)
    if not pending:
        return
    try:
        job = jobs.job_info(config.models_dir(), pending["job"])
    except (SomadError, OSError) as exc:
        ss.pop(Keys.TEACH_JOB, None)
        st.error(f"The teaching job cannot be followed: {exc}")
        return
    if job.active:
        frac = min(1.0, (job.done or 0) / job.total) if job.total else 0.0
        what = f"{job.stage} {job.done}/{job.total}" if job.stage and job.total else job.status
        st.progress(frac, text=f"Teaching {plural(len(pending['names']), 'image')} → {Path(pending['new']).name}: {what}. "
                               "It runs on the server and goes on if you leave this page.")
        return
    ss.pop(Keys.TEACH_JOB, None)
    if job.status == "done" and Path(pending["new"]).is_dir():
        _open_taught({k: v for k, v in pending.items() if k != "job"}, cur)
        st.rerun(scope="app")
    st.error(f"Teaching did not finish ({job.status}" + (f": {job.error}" if job.error else "") + "). "
             "The model is unchanged.")


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
    every, clean = explain.counts_with_and_without(ev.labels, ev.scores, thr, leak)
    rows.append({"": f"after (this version, threshold {thr:.3f})", **every})
    if clean is not None:
        rows.append({"": f"after, without the {plural(int(leak.sum()), 'taught test image')}", **clean})
    with st.container(border=True):
        st.success(f"Taught {plural(len(res['names']), 'image')} as normal: new version **{Path(res['new']).name}** is "
                   f"open. Undo: open the parent **{Path(res['parent']).name}** on the Model page.")
        st.dataframe(pd.DataFrame(rows).set_index(""), width="stretch")
        st.button("Dismiss", key="w_teach_dismiss", on_click=lambda: st.session_state.pop(Keys.TEACH_RESULT, None))


def outcome_counts(ev, threshold: float) -> dict:
    """TP, FP, FN, TN of an evaluation at ``threshold`` (plain ints, for the session state)."""
    return explain.outcome_counts(ev.labels, ev.scores, threshold)
