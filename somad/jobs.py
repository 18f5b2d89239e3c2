"""Server-side jobs: the one runner for long work (fits, teaching, scoring a test split), shared by
the CLI (``python -m somad jobs ...``) and the dashboard.

A job is one CLI command, ``python -m somad <argv...>``, run in its own detached process (a new
session, so it survives the browser tab, the Streamlit session and a restart of the server). Its
record lives under ``<models_dir>/.jobs/<id>/``, all small files written atomically:

* ``job.json``: what was asked (id, kind, title, owner, argv, created, working folder); written once.
* ``state.json``: status (``queued``, ``running``, ``done``, ``failed``, ``cancelled``), started,
  finished, error, exit status; written by the job process.
* ``progress.json``: the current stage, ``done`` / ``total`` and the stage's time left, written by the
  command's progress callback (``--progress-file``), and its ``result`` (e.g. the model dir written).
* ``pid``: the process group id (the job process leads its own session); ``log.txt``: its output.
* ``alive.lock``: held (``flock``) by the job process from before it starts until it exits, so a
  job whose process died without finishing (killed, machine restarted) is told apart from a
  running one without trusting a pid that may have been reused; it is then shown as failed.

Queue: at most ``SOMAD_MAX_JOBS`` jobs run at once (default 1). A queued job process waits, first
come first served, until it can lock one of the slot files ``<models_dir>/.jobs/slots/<i>.lock``:
no daemon, and a job whose process dies frees its slot with it.

Cancel: ``SIGTERM`` to the job's process group (the job's own Dask workers, if it uses any, are in
that group too). The job process turns it into an exception, so every ``finally`` runs: model
writes are atomic (:mod:`somad.atomic`) and the fit's temporary patch file is removed, so a cancel
leaves no partial model and no temporary folder. A process that does not stop within ``wait``
seconds gets ``SIGKILL``.

Why not Dask's executor: a Dask future cannot interrupt a task that is running (``cancel`` only
drops tasks not started yet), and a ``LocalCluster`` started by the Streamlit server lives and
dies with it, so neither the cancel nor the "survives a restart" requirement would hold. A job
process can itself scale out on Dask distributed, like any CLI command.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .atomic import write_json
from .errors import ParameterError, SomadError

JOBS_DIR = ".jobs"
"""Folder of the job records under the models dir."""
MAX_JOBS_ENV = "SOMAD_MAX_JOBS"
"""Environment variable: how many jobs run at once (default :data:`DEFAULT_MAX_JOBS`)."""
DEFAULT_MAX_JOBS = 1
STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
RECORD, STATE, PROGRESS, PID, LOG, ALIVE, CANCEL = (
    "job.json", "state.json", "progress.json", "pid", "log.txt", "alive.lock", "cancel")
POLL_S = 0.5
"""How often a queued job process looks for a free slot (seconds)."""
DIED = ("the job's process ended without finishing (it was killed, or the server or machine restarted); "
        "start it again")


class JobCancelled(BaseException):
    """Raised in the job process by the cancel signal (a BaseException, so no ``except Exception``
    swallows it and every ``finally`` on the way out runs)."""


@dataclass
class JobInfo:
    """A job as :func:`list_jobs` sees it.

    Attributes:
        id: the job id (sortable by creation time). kind: "fit", "teach", "score", ...
        title: a line for people. owner: who submitted it (free text) or None.
        status: one of :data:`STATUSES`. stage: the current (or last) stage of the command.
        done, total: counts of that stage (images, epochs, folds...), None before the first report.
        eta_s: seconds left in the current stage (estimated from its rate so far), None when unknown.
        error: why it failed, in words, or None. result: what it wrote (e.g. the model dir), or None.
        created, started, finished: Unix times (seconds), None when not reached.
        argv: the ``python -m somad`` arguments. log: path of the output log.
    """

    id: str
    kind: str
    title: str
    status: str
    stage: str | None = None
    done: int | None = None
    total: int | None = None
    eta_s: float | None = None
    error: str | None = None
    result: str | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    argv: list[str] = field(default_factory=list)
    owner: str | None = None
    log: str | None = None

    @property
    def active(self) -> bool:
        """True while queued or running."""
        return self.status in ACTIVE

    def to_dict(self) -> dict:
        return asdict(self)


def jobs_dir(models_dir: str | Path) -> Path:
    """``<models_dir>/.jobs``: where the job records live."""
    return Path(models_dir) / JOBS_DIR


def max_jobs() -> int:
    """How many jobs may run at once: ``SOMAD_MAX_JOBS`` (a positive integer), else 1.

    Raises:
        ParameterError: ``SOMAD_MAX_JOBS`` is not a positive integer.
    """
    value = os.environ.get(MAX_JOBS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_JOBS
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ParameterError(f"{MAX_JOBS_ENV}={value!r} must be a positive integer (how many jobs run at once).")
    return n


def check_argv(argv: list[str]) -> None:
    """Parse ``argv`` as ``python -m somad`` would, without running it.

    Raises:
        ParameterError: the CLI refuses the arguments (its one-line message).
    """
    from .cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args([str(a) for a in argv])
    except SystemExit:
        msg = err.getvalue().strip().removeprefix("error: ")
        raise ParameterError(f"the job's command is not valid: {msg}") from None


_spawned: list[subprocess.Popen] = []  # reaped on each submit / list, so no zombie stays


def submit(models_dir: str | Path, argv: list[str], *, kind: str, title: str, owner: str | None = None) -> str:
    """Queue ``python -m somad <argv>`` as a job; returns its id at once (the command runs in a
    detached process when a slot is free, see the module doc).

    Args:
        models_dir: the models root; the record goes under ``<models_dir>/.jobs/<id>/``.
        argv: CLI arguments, e.g. ``["fit", "--data-dir", root, "--category", "bottle"]``
            (checked by the CLI's parser before anything is started). Relative paths are read from
            the current folder, which the job keeps.
        kind: "fit", "teach", "score", ... title: a line for the job list. owner: who asked.

    Raises:
        ParameterError: the CLI refuses ``argv``, or ``SOMAD_MAX_JOBS`` is invalid.
        OutputError: the jobs folder cannot be written.
    """
    argv = [str(a) for a in argv]
    check_argv(argv)
    max_jobs()
    _reap()
    job_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}-{secrets.token_hex(2)}"  # sorts by time
    folder = jobs_dir(models_dir) / job_id
    write_json(folder / RECORD, {"id": job_id, "kind": kind, "title": title, "owner": owner, "argv": argv,
                                 "created": time.time(), "cwd": os.getcwd()})
    write_json(folder / STATE, {"status": "queued"})
    lock = os.open(folder / ALIVE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # inherited by the job process: held without a gap until it exits
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        with open(folder / LOG, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "somad", "jobs", "run", "--models-dir", str(Path(models_dir).resolve()),
                 "--lock-fd", str(lock), job_id],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=(lock,), env=env)
    finally:
        os.close(lock)
    (folder / PID).write_text(str(proc.pid))
    _spawned.append(proc)
    return job_id


def _reap() -> None:
    _spawned[:] = [p for p in _spawned if p.poll() is None]


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(folder: Path) -> bool:
    """True while the job's process holds its ``alive.lock``."""
    try:
        fd = os.open(folder / ALIVE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the lock just taken
    return False


def job_info(models_dir: str | Path, job_id: str) -> JobInfo:
    """One job's :class:`JobInfo`.

    Raises:
        SomadError: no such job.
    """
    folder = jobs_dir(models_dir) / job_id
    record = _read(folder / RECORD)
    if not record:
        raise SomadError(f"no job '{job_id}' in {jobs_dir(models_dir)}: `python -m somad jobs list` shows them.")
    alive = _alive(folder)  # before the state: a process that ends after this check has written it
    state, prog = _read(folder / STATE), _read(folder / PROGRESS)
    status = state.get("status", "queued")
    error = state.get("error")
    if status in ACTIVE and not alive:
        status, error = ("cancelled", None) if (folder / CANCEL).exists() else ("failed", DIED)
    eta = prog.get("eta_s")
    if eta is not None and status == "running":
        eta = max(0.0, float(eta) - (time.time() - float(prog.get("updated", time.time()))))
    return JobInfo(id=record["id"], kind=record.get("kind", "?"), title=record.get("title", ""), status=status,
                   stage=prog.get("stage"), done=prog.get("done"), total=prog.get("total"),
                   eta_s=eta if status == "running" else None, error=error,
                   result=state.get("result", prog.get("result")), created=record.get("created"),
                   started=state.get("started"), finished=state.get("finished"), argv=record.get("argv", []),
                   owner=record.get("owner"), log=str(folder / LOG))


def list_jobs(models_dir: str | Path) -> list[JobInfo]:
    """Every job under ``<models_dir>/.jobs``, newest first (unreadable records are skipped)."""
    _reap()
    root = jobs_dir(models_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted((p for p in root.iterdir() if (p / RECORD).is_file()), key=lambda p: p.name, reverse=True):
        try:
            out.append(job_info(models_dir, folder.name))
        except SomadError:
            continue
    return out


def cancel(models_dir: str | Path, job_id: str, wait: float = 15.0) -> None:
    """Cancel a queued or running job: ``SIGTERM`` to its process group, ``SIGKILL`` after ``wait``
    seconds. Its writes are atomic, so nothing partial is left.

    Raises:
        SomadError: no such job, or it has already finished.
    """
    info = job_info(models_dir, job_id)
    if not info.active:
        raise SomadError(f"job {job_id} ({info.title}) has already finished ({info.status}): nothing to cancel.")
    folder = jobs_dir(models_dir) / job_id
    (folder / CANCEL).write_text(f"{time.time()}\n")
    try:
        pgid = int((folder / PID).read_text())
    except (OSError, ValueError):
        pgid = None
    if pgid and _alive(folder):
        _signal(pgid, signal.SIGTERM)
        deadline = time.time() + wait
        while _alive(folder) and time.time() < deadline:
            time.sleep(0.1)
        if _alive(folder):
            _signal(pgid, signal.SIGKILL)
            while _alive(folder) and time.time() < deadline + 5:
                time.sleep(0.1)
    state = _read(folder / STATE)
    if state.get("status") in ACTIVE:  # the process was gone, or killed before it could write
        write_json(folder / STATE, {**state, "status": "cancelled", "finished": time.time()})
    _reap()


def _signal(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ------------------------------------------------------------------------- inside the job process
class FileProgress:
    """``progress(stage, done, total)`` callback that writes ``progress.json`` atomically (at most
    every ``every`` seconds, and at each stage change and stage end): stage, done, total, the
    stage's time left ``eta_s`` (its elapsed time over ``done`` times what is left) and ``updated``."""

    def __init__(self, path: str | Path, every: float = 0.5):
        self.path, self.every = Path(path), every
        self.state: dict = {}
        self.stage = None
        self.stage_start = self.last = self.written = time.time()

    def __call__(self, stage, done: int, total: int) -> None:
        now = time.time()
        stage = str(stage)
        changed = stage != self.stage
        if changed:  # a stage may report first when its first items are done: it began at the previous report
            self.stage, self.stage_start = stage, self.last
        self.last = now
        elapsed = now - self.stage_start
        eta = elapsed / done * (total - done) if done > 0 and total >= done else None
        self.state.update(stage=stage, done=int(done), total=int(total), eta_s=eta, updated=now)
        if changed or done >= total or now - self.written >= self.every:
            self.flush()

    def result(self, value) -> None:
        """Record what the command wrote (e.g. the model dir)."""
        self.state["result"] = str(value)
        self.flush()

    def flush(self) -> None:
        self.written = time.time()
        write_json(self.path, self.state)


def _wait_for_slot(models_dir: Path, job_id: str) -> int:
    """Block until this job is the oldest waiting one and a slot lock is free; returns its fd."""
    root = jobs_dir(models_dir)
    slots = root / "slots"
    slots.mkdir(parents=True, exist_ok=True)
    while True:
        n = max_jobs()
        older = [p for p in root.iterdir() if p.name < job_id and (p / RECORD).is_file()
                 and _read(p / STATE).get("status") == "queued" and _alive(p)]
        if not older:
            for i in range(n):
                fd = os.open(slots / f"{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except OSError:
                    os.close(fd)
        time.sleep(POLL_S)


def _on_term(signum, frame):
    raise JobCancelled()


def run(models_dir: str | Path, job_id: str) -> int:
    """The job process's body (``python -m somad jobs run``): wait for a slot, run the command with
    a :class:`FileProgress`, record how it ended. Returns the exit status."""
    from . import cli

    models_dir = Path(models_dir)
    folder = jobs_dir(models_dir) / job_id
    record = _read(folder / RECORD)
    state = {"status": "queued", "pid": os.getpid()}
    signal.signal(signal.SIGTERM, _on_term)
    rc = 1
    try:
        with contextlib.suppress(OSError):
            os.chdir(record.get("cwd") or ".")
        _wait_for_slot(models_dir, job_id)  # the slot is held until this process exits
        state.update(status="running", started=time.time())
        write_json(folder / STATE, state)
        print(f"job {job_id}: python -m somad {' '.join(record['argv'])}", flush=True)
        args = cli.build_parser().parse_args(record["argv"] + ["--progress-file", str(folder / PROGRESS)])
        rc = cli.run_command(args)
        state.update(status="done" if rc == 0 else "failed", error=None if rc == 0 else f"exit status {rc}")
    except JobCancelled:
        state.update(status="cancelled")
        print(f"job {job_id}: cancelled", flush=True)
    except SomadError as exc:
        state.update(status="failed", error=str(exc))
        print(f"error: {exc}", flush=True)
    except SystemExit as exc:  # argparse: the message is in the log already
        state.update(status="failed", error=f"the command was refused (exit status {exc.code}); see {folder / LOG}")
    except BaseException as exc:  # a bug: keep the traceback in the log, the words in the record
        traceback.print_exc()
        state.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the record is written whole, whatever comes now
    prog = _read(folder / PROGRESS)
    if prog.get("result"):
        state["result"] = prog["result"]
    state["finished"] = time.time()
    write_json(folder / STATE, state)
    return 0 if state["status"] == "done" else (130 if state["status"] == "cancelled" else 2)


def format_eta(seconds: float | None) -> str:
    """``"about 1 min 20 s left"`` style text for a time left in seconds ('' when unknown)."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"about {s // 60} min {s % 60:02d} s left" if s >= 60 else f"about {s} s left"
