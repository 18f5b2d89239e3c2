"""Where the work runs: in this process (the default) or on a Dask distributed cluster.

An *executor* runs named tasks (one per category for ``fit`` and ``evaluate``) and scores
shards of a file list (``predict``). :data:`EXECUTORS` is the registry:

* ``local``: in this process, one task after the other, exactly as before (nothing to install).
* ``dask``: Dask distributed (https://distributed.dask.org), the optional extra
  ``pip install -r requirements-dask.txt``: a scheduler at an address (``--scheduler`` or
  ``SOMAD_SCHEDULER``), or a ``LocalCluster`` of ``--workers N`` started for the run.

Tasks are plain functions of this module (:func:`fit_task`, :func:`evaluate_task`,
:func:`predict_shard`): every worker imports somad, reads the data and writes models and outputs
itself, so on a cluster the data, models and output folders must be on storage every worker sees
under the same path. Models are written atomically (:mod:`somad.atomic`), so a worker that dies
mid-fit leaves no half-written model.

Threads: a ``LocalCluster`` runs one task at a time per worker process; each task gets
``cores // (tasks that run at once on its machine)`` torch threads (:func:`torch_threads_per_task`), so the
cores are never oversubscribed. A torch thread count changes the order of float sums, so a fit is
bit-for-bit equal to the in-process fit at the same thread count (``tests/test_executor.py``).

Failures: bad input in a task (:class:`~somad.errors.SomadError`) fails that task only and is not
retried; any other exception is retried once (Dask's ``retries=1``); a worker that dies mid-task
has its task run once more elsewhere (the scheduler's ``allowed-failures``, set to 1 for a
``LocalCluster``), then the task is reported failed.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import uuid
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import SomadError
from .progress import Progress, Stage
from .words import plural, word

SCHEDULER_ENV = "SOMAD_SCHEDULER"
"""Environment variable naming a Dask scheduler address (what ``--scheduler`` gives)."""
CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a scheduler (``--scheduler``) before giving up with one error line."""
DASK_PACKAGE = "distributed"
DASK_INSTALL = "pip install -r requirements-dask.txt  (or: pip install 'dask[distributed]')"
"""What to install for the ``dask`` executor: the line every option that needs it prints."""
RETRIES = 1
"""Dask ``retries`` of a task that raised something other than bad input (a crash, not a DataError)."""
PROGRESS_INTERVAL_S = 0.5
"""A worker sends a task's progress at most this often (and at the end of each stage)."""


class ExecutorError(SomadError):
    """The cluster cannot be used: its package is missing, its scheduler cannot be reached, or a
    worker cannot see or write a path the work needs (the message names it)."""


@dataclass
class TaskResult:
    """The outcome of one task (one category).

    Attributes:
        name: the task's name (the category). ok: whether it succeeded.
        seconds: wall time of the task where it ran (the last attempt), in seconds.
        value: what the task returned (JSON-ready dict) when ``ok``, else None.
        error: one-line reason when not ``ok``, else None.
        attempts: how many times it started (2 after a retry). worker: where it ran ("" in process).
    """

    name: str
    ok: bool
    seconds: float
    value: Any = None
    error: str | None = None
    attempts: int = 1
    worker: str = ""

    @property
    def status(self) -> str:
        """``done``, ``done after retry`` or ``failed``."""
        if not self.ok:
            return "failed"
        return "done after retry" if self.attempts > 1 else "done"


ProgressFor = Callable[[str], Progress]
"""``progress_for(task name)`` gives the client-side progress callback of that task."""


# --------------------------------------------------------------------------- tasks (run where the executor puts them)
def fit_task(*, data_dir: str, category: str, out_dir: str, params: dict, max_train_images: int | None,
             force: bool, replay: bool = False, progress: Progress | None = None) -> dict:
    """Fit one category and save it (:func:`somad.pipeline.fit_category`); returns a summary:
    ``model_dir``, ``n_train``, ``grid`` (rows, cols), ``quantization_error``, ``topographic_error``,
    ``threshold``, ``timings`` (seconds per :meth:`SOMAD.fit` stage)."""
    from .pipeline import fit_category

    model = fit_category(data_dir, category, out_dir, params, max_train_images, force, progress, replay=replay)
    return {"model_dir": str(out_dir), "n_train": int(model.n_train_), "grid": list(model.grid_),
            "quantization_error": float(model.quantization_error_),
            "topographic_error": float(model.topographic_error_), "threshold": float(model.threshold_),
            "timings": {k: float(v) for k, v in model.timings_.items()}}


def evaluate_task(*, data_dir: str, category: str, model_dir: str, results_dir: str, n_figures: int,
                  device: str, keep_empty_masks: bool = False, progress: Progress | None = None) -> dict:
    """Evaluate one saved model on its category's test split and write the results folder
    (:func:`somad.pipeline.evaluate_model`, :func:`somad.pipeline.write_results`); returns
    ``{"metrics": metrics.json's content, "results_dir": folder}``."""
    from .persistence import load_model
    from .pipeline import evaluate_model, write_results

    model = load_model(model_dir, device=device)
    ev = evaluate_model(model, data_dir, category, progress, keep_empty_masks=keep_empty_masks)
    out = write_results(ev, model, results_dir, n_figures)
    return {"metrics": ev.metrics, "results_dir": str(out)}


_MODELS: OrderedDict = OrderedDict()
_MODELS_LOCK = threading.Lock()
MODEL_CACHE_SIZE = 2
"""Models a worker keeps loaded between shards (least recently used dropped first)."""
MODEL_LOADS: Counter = Counter()
"""How many times this process loaded each model dir for :func:`predict_shard` (read by the tests)."""


def cached_model(model_dir: str | Path, device: str = "cpu"):
    """The model at ``model_dir`` loaded once per process (worker) and reused by every shard; a
    model dir replaced on disk (new ``config.json`` or tensors) is loaded again.

    Raises:
        ModelFileError, ParameterError: as :func:`somad.persistence.load_model`.
    """
    from .persistence import CONFIG, TENSORS, load_model

    path = Path(model_dir).resolve()
    try:
        stamp = tuple((path / f).stat().st_mtime_ns for f in (CONFIG, TENSORS))
    except OSError:
        stamp = None  # load_model names what is missing
    key = (str(path), stamp, str(device))
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        model = load_model(path, device=device)
        MODEL_LOADS[str(path)] += 1
        _MODELS[key] = model
        while len(_MODELS) > MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
        return model


def predict_shard(*, model_dir: str, device: str, paths: list[str], names: list[str] | None,
                  overlay_dir: str | None, strict: bool = False, progress: Progress | None = None) -> list[dict]:
    """Score one shard of files with the worker's cached model (:func:`cached_model`): the rows of
    :func:`somad.pipeline.iter_predictions`, overlays written to ``overlay_dir`` under ``names``
    (the names of the whole file list, so they are the ones one process would give). An unreadable
    file is a row with verdict ``error`` (:func:`somad.pipeline.predict_batch`), or with ``strict``
    the shard raises its DataError."""
    from .pipeline import iter_predictions

    model = cached_model(model_dir, device)
    return list(iter_predictions(model, paths, overlay_dir, None, strict=strict, names=names))


# --------------------------------------------------------------------------- executors
class LocalExecutor:
    """Runs every task in this process, one after the other (the default; nothing to install)."""

    name = "local"
    where = "in this process"

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run_tasks(self, fn: Callable[..., Any], tasks: dict[str, dict],
                  progress_for: ProgressFor | None = None) -> Iterator[TaskResult]:
        """Run ``fn(**kwargs, progress=...)`` for each ``name: kwargs`` of ``tasks``, in order.

        Yields:
            a :class:`TaskResult` per task as it ends; bad input (:class:`SomadError`) fails that task
            only, anything else (a bug) is raised.
        """
        for name, kwargs in tasks.items():
            t0 = time.perf_counter()
            try:
                value = fn(**kwargs, progress=progress_for(name) if progress_for else None)
            except SomadError as exc:
                yield TaskResult(name, False, time.perf_counter() - t0, error=str(exc))
                continue
            yield TaskResult(name, True, time.perf_counter() - t0, value)

    def iter_predictions(self, model, paths: list, overlay_dir, progress: Progress | None = None, *,
                         strict: bool = False) -> Iterator[dict]:
        """:func:`somad.pipeline.iter_predictions` in this process."""
        from .pipeline import iter_predictions

        return iter_predictions(model, paths, overlay_dir, progress, strict=strict)

    def check_on_workers(self, what: str, fn: Callable[..., Any], *args) -> None:
        """Nothing to do: the client's own checks are the workers'."""
        return None


def _import_distributed():
    """The ``distributed`` module, or one :class:`ExecutorError` line naming the package to install."""
    try:
        import distributed
    except ImportError:
        raise ExecutorError(f"--scheduler and --workers need the Python package '{DASK_PACKAGE}' "
                            f"(Dask distributed), which is not installed: {DASK_INSTALL}.") from None
    return distributed


def _cores() -> int:
    """CPU cores this process may use (cgroup and affinity limits respected, as Dask counts them)."""
    try:
        from dask.system import CPU_COUNT
        return int(CPU_COUNT)
    except ImportError:
        return os.cpu_count() or 1


def torch_threads_per_task(cores: int, tasks_at_once: int) -> int:
    """Torch threads for each task so that ``tasks_at_once`` tasks on a machine of ``cores`` cores
    do not oversubscribe it: ``max(1, cores // tasks_at_once)``."""
    return max(1, cores // max(1, tasks_at_once))


def _set_torch_threads(n: int | None) -> None:
    import torch

    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _EventProgress:
    """Worker side of a task's progress: ``progress(stage, done, total)`` sent to the client as a
    Dask event (at most every :data:`PROGRESS_INTERVAL_S`, and every stage's start and end)."""

    def __init__(self, worker, topic: str, name: str):
        self.worker, self.topic, self.name = worker, topic, name
        self.last = (None, 0.0)

    def __call__(self, stage: Stage, done: int, total: int) -> None:
        now = time.monotonic()
        stage = str(stage)
        if stage == self.last[0] and done < total and now - self.last[1] < PROGRESS_INTERVAL_S:
            return
        self.last = (stage, now)
        self.worker.log_event(self.topic, {"task": self.name, "stage": stage, "done": int(done),
                                           "total": int(total)})


def _run_on_worker(fn: Callable[..., Any], name: str, kwargs: dict, topic: str, threads: dict) -> dict:
    """What a Dask worker runs for one task: set the torch threads of its machine, send a start
    event (the client counts attempts from them), run ``fn``. Bad input comes back as a failed
    result (not retried); any other exception is raised, so Dask retries the task once."""
    from distributed import get_worker

    worker = get_worker()
    _set_torch_threads(threads.get(worker.address) or threads.get("*"))
    worker.log_event(topic, {"task": name, "start": worker.address})
    t0 = time.perf_counter()
    try:
        value = fn(**kwargs, progress=_EventProgress(worker, topic, name))
    except SomadError as exc:
        return {"ok": False, "error": str(exc), "seconds": time.perf_counter() - t0, "worker": worker.address}
    return {"ok": True, "value": value, "seconds": time.perf_counter() - t0, "worker": worker.address}


def _check_here(fn: Callable[..., Any], args: tuple) -> str | None:
    """Run a check on a worker: None when it passes, else its message."""
    try:
        fn(*args)
    except SomadError as exc:
        return str(exc)
    except OSError as exc:
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    return None


def _unreachable(address: str, why: str) -> ExecutorError:
    return ExecutorError(f"cannot reach the Dask scheduler at {address} ({why}): start it with `dask scheduler` "
                         f"or check --scheduler / {SCHEDULER_ENV}.")


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Open and close one TCP connection to a scheduler's ``tcp://`` or ``tls://`` address, so that
    an address where nothing listens fails at once (Dask's ``Client`` retries a refused connection
    until its whole timeout has passed). Other schemes are left to Dask.

    Args:
        address: e.g. ``tcp://10.0.0.5:8786`` (port 8786 when none is given). timeout: seconds to
            wait for an answer (a slow network still gets them).

    Raises:
        ExecutorError: connection refused, unknown host, no route, or no answer within ``timeout``
            (one line naming the address).
    """
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return
        host, port = parse_host_port(location, default_port=8786)
    except (ValueError, TypeError):
        return  # Dask names what is wrong with the address
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise _unreachable(address, f"connection refused: nothing listens on port {port} of {host}") from None
    except socket.gaierror as exc:
        raise _unreachable(address, f"unknown host {host!r}: {exc.strerror or exc}") from None
    except (socket.timeout, TimeoutError):
        raise _unreachable(address, f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise _unreachable(address, exc.strerror or str(exc)) from None


class DaskExecutor:
    """Runs tasks on Dask distributed: an existing scheduler (``scheduler``), or a ``LocalCluster``
    of ``workers`` processes started here and closed on exit.

    Args:
        scheduler: a scheduler address such as ``tcp://10.0.0.5:8786``.
        workers: processes of a ``LocalCluster`` started for this run (one task at a time each).
        connect_timeout: seconds to wait for ``scheduler``.

    Raises (on ``__enter__``):
        ExecutorError: ``distributed`` is not installed, or the scheduler cannot be reached in time.
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None, *,
                 connect_timeout: float | None = None):
        if (scheduler is None) == (workers is None):
            raise ValueError("give exactly one of scheduler and workers")
        self.scheduler, self.workers = scheduler, workers
        self.connect_timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
        self._log_level = None
        self.client = self.cluster = None
        self.where = f"on the Dask scheduler at {scheduler}" if scheduler else f"on a LocalCluster of {plural(workers, 'worker')}"

    def __enter__(self) -> DaskExecutor:
        distributed = _import_distributed()
        import dask

        log = logging.getLogger("distributed")
        if not logging.getLogger().isEnabledFor(logging.INFO):  # Dask's own chatter only with -v
            self._log_level = log.level
            log.setLevel(logging.ERROR)
        if self.scheduler:
            probe_scheduler(self.scheduler, self.connect_timeout)  # refused: one error now, not after the timeout
            try:
                self.client = distributed.Client(self.scheduler, timeout=self.connect_timeout,
                                                 set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ExecutorError(f"cannot reach the Dask scheduler at {self.scheduler} within "
                                    f"{self.connect_timeout:g} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}): "
                                    f"start it with `dask scheduler` or check --scheduler / {SCHEDULER_ENV}.") from None
        else:
            if self.workers > _cores():
                warnings.warn(f"--workers {self.workers} on {_cores()} cores: the workers share the cores "
                              "(1 torch thread each), which is slower than --workers "
                              f"{_cores()}.", stacklevel=2)
            # one task at a time per process; a worker that dies mid-task: its task is run once more
            with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
                self.cluster = distributed.LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                                        host="127.0.0.1", dashboard_address=None)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.where = f"on a LocalCluster of {plural(self.workers, 'worker process')} at {self.cluster.scheduler_address}"
        return self

    def __exit__(self, *exc) -> None:
        log = logging.getLogger("distributed")
        if self._log_level is not None:
            log.setLevel(logging.CRITICAL)  # comms closing while the cluster shuts down are no news
        try:
            if self.client is not None:
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self.client = self.cluster = None
            if self._log_level is not None:
                log.setLevel(self._log_level)
                self._log_level = None

    # ---- facts about the workers
    def _workers(self) -> dict[str, dict]:
        """The scheduler's ``{address: info}`` of every worker (not only the first few)."""
        import inspect

        takes_n = "n_workers" in inspect.signature(self.client.scheduler_info).parameters
        return (self.client.scheduler_info(n_workers=-1) if takes_n else self.client.scheduler_info())["workers"]

    def torch_threads(self) -> dict[str, int]:
        """``{worker address: torch threads per task}``: each machine's cores shared by the tasks its
        workers run at once (their Dask threads), :func:`torch_threads_per_task`; ``"*"`` for
        workers that join later (1 thread per task)."""
        info = self._workers()
        cores = self.client.run(_cores)
        per_host: Counter = Counter()
        for addr, w in info.items():
            per_host[w.get("host")] += w.get("nthreads", 1)
        out = {addr: torch_threads_per_task(cores.get(addr, 1), per_host[w.get("host")]) for addr, w in info.items()}
        out["*"] = 1
        return out

    def worker_peak_memory(self) -> dict[str, int]:
        """Peak resident memory of each worker process since it started, bytes (``VmHWM``)."""
        return self.client.run(_peak_rss)

    def check_on_workers(self, what: str, fn: Callable[..., Any], *args) -> None:
        """Run ``fn(*args)`` on every worker before any work, so that a path a worker cannot see or
        write is one error line naming the worker, the path and the storage rule.

        Raises:
            ExecutorError: ``fn`` raised on a worker (its message is kept).
        """
        answers = self.client.run(_check_here, fn, args)
        bad = {w: msg for w, msg in answers.items() if msg}
        if bad:
            worker, msg = sorted(bad.items())[0]
            more = f" (and {len(bad) - 1} more {word(len(bad) - 1, 'worker')})" if len(bad) > 1 else ""
            raise ExecutorError(f"{what}: worker {worker}{more}: {msg} On a cluster the data, models and "
                                "outputs must be on storage every worker sees under the same path.")

    # ---- tasks
    def run_tasks(self, fn: Callable[..., Any], tasks: dict[str, dict],
                  progress_for: ProgressFor | None = None) -> Iterator[TaskResult]:
        """Submit ``fn(**kwargs)`` for each ``name: kwargs`` of ``tasks`` at once (retries=1) and
        yield a :class:`TaskResult` per task as it ends, in the order they end. Each task's
        progress comes back as Dask events and drives ``progress_for(name)`` here, on the client.
        """
        from distributed import as_completed

        topic = f"somad-{uuid.uuid4().hex[:12]}"
        events: queue.Queue = queue.Queue()
        self.client.subscribe_topic(topic, events.put)
        threads = self.torch_threads()
        bars: dict[str, Progress] = {}
        futures = {self.client.submit(_run_on_worker, fn, name, kwargs, topic, threads, key=f"{topic}-{name}",
                                      retries=RETRIES, pure=False): name for name, kwargs in tasks.items()}

        def drain() -> None:
            while True:
                try:
                    _, msg = events.get_nowait()
                except queue.Empty:
                    return
                name = msg.get("task")
                if progress_for and "stage" in msg and name in tasks:
                    bar = bars.setdefault(name, progress_for(name))
                    bar(Stage(msg["stage"]), msg["done"], msg["total"])

        try:
            done = as_completed(list(futures), loop=self.client.loop)
            while not done.is_empty():
                batch = done.next_batch(block=False)
                drain()
                if not batch:
                    time.sleep(0.2)
                    continue
                for fut in batch:
                    yield self._result(fut, futures[fut], topic)
        finally:
            self.client.unsubscribe_topic(topic)
            for fut in futures:
                fut.cancel()

    def _result(self, fut, name: str, topic: str) -> TaskResult:
        try:  # the scheduler counts the workers that died running it and the retries used
            attempts = self.client.run_on_scheduler(_attempts, fut.key, RETRIES)
        except Exception:  # a scheduler that refuses run_on_scheduler: the start events that arrived
            attempts = sum(1 for _, m in self.client.get_events(topic) if m.get("task") == name and "start" in m)
        attempts = max(1, attempts)
        if fut.status == "finished":
            r = fut.result()
            return TaskResult(name, r["ok"], r["seconds"], r.get("value"), r.get("error"), attempts, r["worker"])
        exc = fut.exception() if fut.status == "error" else None
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            why = "the worker running it died (killed, or out of memory) and so did the one that retried it"
        elif exc is not None:
            why = f"{type(exc).__name__}: {exc}" + (" (also on the retry)" if attempts > 1 else "")
        else:
            why = f"the task was {fut.status}"
        return TaskResult(name, False, 0.0, error=why, attempts=attempts)

    def iter_predictions(self, model, paths: list, overlay_dir, progress: Progress | None = None, *,
                         strict: bool = False, shard_size: int | None = None) -> Iterator[dict]:
        """:func:`somad.pipeline.iter_predictions`, in shards on the workers: each worker loads the
        model once (:func:`cached_model`) and returns its rows; rows are yielded in input order as
        soon as every shard before them is in. ``overlay_dir`` must be visible to the workers.

        Raises:
            whatever a shard raised (e.g. :class:`~somad.errors.DataError` naming a file).
        """
        from distributed import as_completed

        from .pipeline import overlay_names

        n = len(paths)
        names = overlay_names(paths) if overlay_dir is not None else None
        size = shard_size or default_shard_size(n, model.batch_size, len(self._workers()))
        model_dir = str(Path(model.model_dir_).resolve())
        out = str(Path(overlay_dir).resolve()) if overlay_dir is not None else None
        threads = self.torch_threads()
        starts = list(range(0, n, size))
        futures = {}
        for s in starts:
            kwargs = dict(model_dir=model_dir, device=str(model.device),
                          paths=[str(Path(p).resolve()) for p in paths[s:s + size]],
                          names=names[s:s + size] if names else None, overlay_dir=out, strict=strict)
            futures[self.client.submit(_predict_on_worker, threads, kwargs, pure=False)] = s
        ready: dict[int, list[dict]] = {}
        nxt, scored = 0, 0
        try:
            for fut in as_completed(list(futures), loop=self.client.loop):
                s = futures[fut]
                ready[s] = fut.result()  # a shard's exception is raised here, as in one process
                scored += len(ready[s])
                if progress:
                    progress(Stage.PREDICT, scored, n)
                while nxt < len(starts) and starts[nxt] in ready:
                    for i, row in enumerate(ready.pop(starts[nxt])):
                        given, sent = str(paths[starts[nxt] + i]), row["path"]
                        row["path"] = given  # as given, like one process writes it
                        if row.get("error"):
                            row["error"] = row["error"].replace(sent, given)
                        yield row
                    nxt += 1
        finally:
            for fut in futures:
                fut.cancel()


def _attempts(key, retries: int, dask_scheduler=None) -> int:
    """On the scheduler: how many times task ``key`` was started (1 + worker deaths + retries used)."""
    ts = dask_scheduler.tasks.get(key)
    if ts is None:
        return 0
    return 1 + int(getattr(ts, "suspicious", 0)) + max(0, retries - int(getattr(ts, "retries", retries)))


def _predict_on_worker(threads: dict, kwargs: dict) -> list[dict]:
    """:func:`predict_shard` with the torch threads of this worker's machine (set in the task's own
    thread: torch's OpenMP thread count is per calling thread)."""
    from distributed import get_worker

    _set_torch_threads(threads.get(get_worker().address) or threads.get("*"))
    return predict_shard(**kwargs)


def default_shard_size(n_images: int, batch_size: int, n_workers: int) -> int:
    """Images per ``predict`` shard: about 4 shards per worker (so a slow worker does not hold the
    end back), a whole number of scoring batches, at least one batch."""
    per = math.ceil(n_images / max(1, 4 * n_workers))
    return max(batch_size, math.ceil(per / batch_size) * batch_size)


EXECUTORS: dict[str, type] = {"local": LocalExecutor, "dask": DaskExecutor}
"""Registry of executors by name."""


def open_executor(scheduler: str | None = None, workers: int | None = None, *,
                  connect_timeout: float | None = None):
    """The executor the options ask for (use it as a context manager): ``dask`` with a
    ``scheduler`` address (or ``$SOMAD_SCHEDULER``) or ``workers``, else ``local``.

    Raises:
        ExecutorError: both ``scheduler`` and ``workers`` given (or ``workers`` < 1), or
            ``distributed`` is not installed.
    """
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if scheduler and workers is not None:
        raise ExecutorError(f"--workers starts a cluster here and --scheduler (or {SCHEDULER_ENV}) names an existing "
                            "one: give one of them.")
    if scheduler is None and workers is None:
        return EXECUTORS["local"]()
    _import_distributed()
    if workers is not None and workers < 1:
        raise ExecutorError(f"--workers must be >= 1, got {workers}.")
    return EXECUTORS["dask"](scheduler, workers, connect_timeout=connect_timeout)
