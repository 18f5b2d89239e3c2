"""Server-side jobs on the screen: submitting a fit, the job list every session sees, cancelling,
and waiting for a test split to be scored (:mod:`somad.jobs`, :mod:`somad.scorecache`)."""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from somad import jobs, pipeline
from somad.cli import hyperparameter_argv
from somad.errors import SomadError

from . import roles
from .keys import Keys

POLL_S = 2.0
"""How often the job list of a Model page looks at the job records (seconds)."""
SHOWN_JOBS = 12
"""How many jobs the list shows (newest first); ``python -m somad jobs list`` shows all."""
STATUS_WORDS = {"queued": "⏳ queued", "running": "▶ running", "done": "✅ finished", "failed": "❌ failed",
                "cancelled": "⛔ cancelled"}


def fit_argv(root: str | Path, category: str, models_dir: str | Path, name: str, params: dict,
             force: bool = False, max_train: int | None = None, replay: bool = False) -> list[str]:
    """``python -m somad`` arguments of a fit job (absolute paths, every hyperparameter as a flag;
    ``replay`` keeps the training replay, ``fit --replay``)."""
    argv = ["fit", "--data-dir", str(Path(root).resolve()), "--category", category,
            "--models-dir", str(Path(models_dir).resolve()), "--name", name] + hyperparameter_argv(params)
    if max_train:
        argv += ["--max-train-images", str(int(max_train))]
    return argv + (["--force"] if force else []) + (["--replay"] if replay else [])


def score_argv(model_dir: str | Path, data_dir: str | Path, category: str, device: str) -> list[str]:
    """``python -m somad`` arguments of the job that scores a test split into the on-disk cache."""
    return ["score", "--model-dir", str(Path(model_dir).resolve()), "--data-dir", str(Path(data_dir).resolve()),
            "--category", category, "--device", device]


def submit_fit(models_dir: str | Path, root: str | Path, category: str, name: str, params: dict,
               force: bool = False, max_train: int | None = None, replay: bool = False) -> str:
    """Queue a fit job (refused for a viewer); returns the job id. The session remembers it, so the
    model it writes is loaded here when it finishes.

    Raises:
        ViewerRefused: a viewer session. ModelFileError: the name is taken (without ``force``).
        SomadError: the same fit is already queued or running.
        ParameterError: a hyperparameter the CLI refuses.
    """
    roles.require_writer("start a fit")
    pipeline.check_writable(pipeline.model_path(models_dir, category, name), force)
    argv = fit_argv(root, category, models_dir, name, params, force, max_train, replay)
    same = next((j for j in jobs.list_jobs(models_dir) if j.active and j.argv == argv), None)
    if same is not None:
        raise SomadError(f"this fit is already {same.status} (job {same.id}): see Jobs below.")
    job_id = jobs.submit(models_dir, argv, kind="fit", title=f"fit {category} → {name}")
    st.session_state.setdefault(Keys.MY_JOBS, []).append(job_id)
    return job_id


def cancel_job(models_dir: str | Path, job_id: str) -> None:
    """Cancel a job (refused for a viewer); a message in the page when it cannot be cancelled."""
    try:
        roles.require_writer("cancel a job")
        jobs.cancel(models_dir, job_id)
    except SomadError as exc:
        st.session_state[Keys.JOB_MESSAGE] = str(exc)


def progress_text(job: jobs.JobInfo) -> str:
    """One line on where a job stands: stage, count and time left, or how it ended."""
    if job.status == "running":
        if not job.stage:
            return "starting (loading the backbone, checking the data)"
        count = f" {job.done}/{job.total}" if job.total else ""
        left = jobs.format_eta(job.eta_s)
        return f"{job.stage}{count}" + (f", {left} in this stage" if left else "")
    if job.status == "queued":
        return "waiting for a free slot (jobs run one at a time unless SOMAD_MAX_JOBS says more)"
    if job.status == "failed":
        return job.error or "failed"
    if job.status == "done":
        took = f" in {job.finished - job.started:.0f} s" if job.finished and job.started else ""
        return f"wrote {job.result}{took}" if job.result else f"finished{took}"
    return "cancelled: nothing was written"


def render_jobs(models_dir: str | Path) -> None:
    """The job list of the models dir, refreshed every :data:`POLL_S` seconds without a page
    reload; a job that finished since the last look reruns the whole page, so its model appears."""
    st.subheader("Jobs")
    _jobs_fragment(str(models_dir))


@st.fragment(run_every=POLL_S)
def _jobs_fragment(models_dir: str) -> None:
    ss = st.session_state
    try:
        found = jobs.list_jobs(models_dir)
    except OSError as exc:
        st.warning(f"The job records in {jobs.jobs_dir(models_dir)} cannot be read: {exc.strerror}.")
        return
    finished = {j.id for j in found if not j.active}
    seen = ss.get(Keys.JOBS_SEEN)
    ss[Keys.JOBS_SEEN] = finished
    if ss.get(Keys.JOB_MESSAGE):
        st.error(ss.pop(Keys.JOB_MESSAGE))
    if not found:
        st.caption("No jobs yet. A fit runs as a job on the server: it goes on when this tab closes, and every "
                   "session sees it here.")
    writer = roles.can_write()
    for job in found[:SHOWN_JOBS]:
        with st.container(border=True):
            a, b = st.columns([5, 1])
            a.markdown(f"**{job.title}** · {STATUS_WORDS.get(job.status, job.status)} · "
                       f"<small>job {job.id}</small>", unsafe_allow_html=True)
            if job.status == "running" and job.total:
                a.progress(min(1.0, (job.done or 0) / job.total), text=progress_text(job))
            elif job.status == "failed":
                a.error(progress_text(job))
            else:
                a.caption(progress_text(job))
            if job.active and writer:
                b.button("Cancel", key=f"cancel_{job.id}", on_click=cancel_job, args=(models_dir, job.id))
    if seen is not None and finished - seen:
        mine = set(ss.get(Keys.MY_JOBS, []))
        for job in found:
            if job.id in finished - seen and job.id in mine and job.status == "done" and job.kind == "fit":
                ss[Keys.LOAD_AFTER_JOB] = (job.result, _flag(job.argv, "--data-dir"), _flag(job.argv, "--category"))
        st.rerun(scope="app")


HIDE_STALE = ("<div class='somad-scoring'></div><style>body:has(.somad-scoring) [data-testid='stMain'] "
              "[data-stale='true'] {display: none;}</style>")
"""Shown with a scoring job's progress: while it is on the page, what the previous run of the page
left below it (Streamlit keeps it, greyed, until this run ends: the counts and table of the model
shown before, e.g. the parent of a version just taught) is hidden, so the page shows the progress
alone, never another model's counts next to it. Gone with the progress when the scores are in."""


def wait_for_scores(models_dir: str | Path, model_dir: str | Path, data_dir: str | Path, category: str,
                    device: str) -> jobs.JobInfo:
    """Make sure a job scores the test split into the cache (one job per model and data, whichever
    session asks first) and show its count of images scored and time left until it ends. Leaving
    the page does not stop it. Meanwhile the rest of the page from its previous run is hidden
    (:data:`HIDE_STALE`). Returns the finished job."""
    argv = score_argv(model_dir, data_dir, category, device)
    job = next((j for j in jobs.list_jobs(models_dir) if j.active and j.argv == argv), None)
    if job is None:
        job = jobs.job_info(models_dir, jobs.submit(models_dir, argv, kind="score",
                                                    title=f"score the test split of {category} with {Path(model_dir).name}"))
    box = st.empty()
    with box.container():
        st.html(HIDE_STALE)
        bar = st.empty()
    while job.active:
        bar.progress(_fraction(job), text=f"Scoring the test images of '{category}' once for model "
                                          f"{Path(model_dir).name}: {progress_text(job)}. This runs on the server: "
                                          "it goes on if you leave this page, and other sessions wait for the same job.")
        time.sleep(0.5)
        job = jobs.job_info(models_dir, job.id)
    box.empty()
    return job


def _flag(argv: list[str], flag: str) -> str | None:
    """The value after ``flag`` in ``argv`` (None when absent)."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _fraction(job: jobs.JobInfo) -> float:
    return min(1.0, (job.done or 0) / job.total) if job.total else 0.0
