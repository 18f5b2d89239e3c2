"""Command line: ``python -m somad {demo-data,fit,evaluate,report,predict,teach,threshold,refit,score,jobs}``.

Every long step shows a tqdm progress bar. Bad input prints one ``error:``
line naming the file or parameter and exits with status 2; nothing is written.
``fit`` and ``evaluate`` of several categories run one task per category (in this process, or on
Dask with ``--workers`` / ``--scheduler``, see :mod:`somad.executor`): a failing category does not
stop the others, a table ends the run and the exit status is 1 when any failed.
``predict`` without ``--strict`` is the exception for unreadable image files: it
scores the others and exits with :data:`EXIT_UNREADABLE` (see :data:`PREDICT_EXIT_HELP`).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from . import data, demo
from .atomic import check_output_file
from .decision import DECISION_RULE
from .devices import check_device
from .errors import SomadError
from .progress import Stage
from .replay import REPLAY_HELP
from .store import (
    DEFAULT_MODEL_NAME,
    check_name,
    default_model,
    marked_name,
    model_path,
)
from .words import plural, word

DEFAULT_DATA = demo.DEFAULT_DIR
DEFAULT_MODELS = Path("models")
PRINT_ROWS = 20
EXIT_UNREADABLE = 3
"""Exit status of ``predict`` when some files could not be read (the others were scored and written)."""
PREDICT_EXIT_HELP = f"""\
exit status:
  0    every file scored; predictions.csv and the overlays written
  2    bad input (model, --out, an argument naming no image file) or, with --strict, an
       unreadable file: one error line, nothing written
  {EXIT_UNREADABLE}    some files could not be read: every other file scored and written; each unreadable
       file has a row with verdict 'error' and the reason, and one 'error:' line on stderr
  1    an unexpected failure (a bug: the traceback says where)
  130  interrupted (Ctrl-C): nothing written"""
"""``predict`` prints each image's row when it scores at most this many (a folder's rows stay in the CSV)."""


class TqdmProgress:
    """``progress(stage, done, total)`` callback drawing one tqdm bar per stage."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.bar = None
        self.stage = None
        self.last = time.time()

    def __call__(self, stage: Stage, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            unit = Stage(stage).unit
            # a rate means something for images; a stage of a few epochs, steps or folds shows its time only
            fmt = None if unit == "img" else "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]"
            self.bar = tqdm(total=total, desc=f"{self.prefix}{stage}", unit=unit, leave=True, file=sys.stderr,
                            bar_format=fmt)
            # a stage may report its first count only when its work is done: it began when the
            # previous report came, so time and rate count from there
            self.bar.start_t = self.bar.last_print_t = self.last
        self.bar.update(done - self.bar.n)
        self.last = time.time()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


class _Tee:
    """Calls every progress callback it holds (the terminal's bar and the job's progress file)."""

    def __init__(self, *callbacks):
        self.callbacks = callbacks

    def __call__(self, stage, done: int, total: int) -> None:
        for cb in self.callbacks:
            cb(stage, done, total)


def _progress(args, prefix: str = ""):
    """The command's progress callback: a tqdm bar per stage, and with ``--progress-file`` also
    :class:`somad.jobs.FileProgress` (what a job's record shows to every dashboard session)."""
    bar = TqdmProgress(prefix)
    if getattr(args, "progress_file", None) is None:
        return bar
    if getattr(args, "_file_progress", None) is None:
        from .jobs import FileProgress

        args._file_progress = FileProgress(args.progress_file)
    return _Tee(bar, args._file_progress)


def _result(args, value) -> None:
    """Record what the command wrote (a model dir, a results folder) in ``--progress-file``, if given."""
    if getattr(args, "progress_file", None) is not None:
        from .jobs import FileProgress

        if getattr(args, "_file_progress", None) is None:
            args._file_progress = FileProgress(args.progress_file)
        args._file_progress.result(value)


def _grid(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--grid must be ROWSxCOLS like 56x56, got '{text}'")
    if min(parts) < 1:
        raise argparse.ArgumentTypeError(f"--grid needs at least 1 row and 1 column, got '{text}'")
    return parts[0], parts[-1]


def _add_version_target(p: argparse.ArgumentParser) -> None:
    """The options of every command that writes a new model version: the parent, a note, a name."""
    p.add_argument("--model-dir", type=Path, required=True, help="the parent model folder (left unchanged)")
    p.add_argument("--note", default=None, help="a note kept in the new version's provenance")
    p.add_argument("--name", default=None, help="folder name of the new version (default: <parent>-vN)")


def _add_device(p: argparse.ArgumentParser) -> None:
    from .model import PARAM_HELP

    p.add_argument("--device", default="cpu", help=f"{PARAM_HELP['device']} (default: cpu)")


def _add_data(p: argparse.ArgumentParser, name_help: str) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="root holding MVTec-layout categories (default: the demo data, generated if missing)")
    p.add_argument("--category", action="append", default=None,
                   help="category name; several as a,b or the option repeated; or 'all' (default)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS, help=f"where models live (default: {DEFAULT_MODELS})")
    p.add_argument("--name", default=None, help=f"model name under <models-dir>/<category>/ (default: {name_help})")
    _add_device(p)


def _add_cluster(p: argparse.ArgumentParser, what: str) -> None:
    """``--scheduler`` and ``--workers``: where the work runs (:mod:`somad.executor`; default: this process)."""
    from .executor import SCHEDULER_ENV

    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help=f"run {what} on the Dask cluster of this scheduler, e.g. tcp://10.0.0.5:8786 (default: "
                        f"${SCHEDULER_ENV} if set, else in this process; data, models and outputs must be on "
                        "storage every worker sees)")
    p.add_argument("--workers", type=_positive("--workers"), default=None, metavar="N",
                   help=f"run {what} on a Dask LocalCluster of N worker processes started for this run, one task "
                        "at a time each, the cores shared out so that none is oversubscribed")


SAVED_NAME_HELP = ("the category's default model: the one marked in the dashboard, else the one named "
                   f"'{DEFAULT_MODEL_NAME}', else the oldest")
"""What ``--name`` means when left out, for the commands that read a saved model."""


ALIASES = {"image_size": ["--img_size"], "d": ["--channels"], "epochs": ["--som_iterations"]}
"""Extra flag spellings kept for users of the reference implementation."""

_OPTION_TYPES = {tuple: lambda text: _grid(text)}


def _optional(convert):
    """Parse 'none' (any case) as None, anything else with ``convert``."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _add_hyperparameters(p: argparse.ArgumentParser) -> None:
    """One flag per SOMAD hyperparameter, with name, default, type, choices and help from
    :func:`somad.model.param_specs` (``--data-dir`` style: underscores become dashes)."""
    from .model import param_specs

    for spec in param_specs():
        if spec.name == "device":  # shared with evaluate/predict, added by _add_data
            continue
        convert = _OPTION_TYPES.get(spec.type, spec.type)
        if spec.default is None:
            convert = _optional(convert)
        shown = "x".join(map(str, spec.default)) if isinstance(spec.default, tuple) else spec.default
        p.add_argument(f"--{spec.name.replace('_', '-')}", *ALIASES.get(spec.name, []), dest=spec.name,
                       type=convert, default=spec.default, choices=spec.choices,
                       help=f"{spec.help} (default: {shown})")


def hyperparameter_argv(params: dict) -> list[str]:
    """The ``fit`` flags that give these hyperparameter values (the inverse of the flags
    :func:`_add_hyperparameters` defines): ``{"grid": (8, 10), "sigma": None}`` ->
    ``["--grid", "8x10", "--sigma", "none"]``.

    Raises:
        ParameterError: a name that is not a hyperparameter of SOMAD.
    """
    from .errors import ParameterError
    from .model import param_specs

    names = {spec.name for spec in param_specs()}
    out = []
    for name, value in params.items():
        if name not in names:
            raise ParameterError(f"'{name}' is not a hyperparameter of SOMAD (see `python -m somad fit --help`).")
        text = "none" if value is None else "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        out += [f"--{name.replace('_', '-')}", text]
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: ``error: <what is wrong> (see <prog> --help)`` and
    exit status 2, like every other user error, instead of the usage block (subcommands inherit it)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown options point to the subcommand's help, which lists its options."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(ns, "command", None)
            self.exit(2, f"error: unrecognized arguments: {' '.join(extras)} "
                         f"(see {self.prog}{' ' + command if command else ''} --help)\n")
        return ns


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m somad``."""
    parser = _Parser(prog="python -m somad", description="SOMAD: anomaly detection with Self-Organizing Maps.")
    verbose = _Parser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log each step's details")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step's details")
    sub = parser.add_subparsers(dest="command", required=True)
    verbose.add_argument("--progress-file", type=Path, default=argparse.SUPPRESS,
                         help="also write each stage's progress and the result as JSON to this file "
                              "(what a job's record holds; see `python -m somad jobs`)")
    common = [verbose]  # -v and --progress-file also after the subcommand

    p = sub.add_parser("demo-data", parents=common, help="write the synthetic demo dataset (MVTec layout)")
    p.add_argument("--out", type=Path, default=DEFAULT_DATA, help=f"where to write it (default: {DEFAULT_DATA})")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images (default: 0)")
    p.add_argument("--force", action="store_true", help="regenerate even if it exists")

    p = sub.add_parser("fit", parents=common, help="fit a model on train/good of a category and save it")
    _add_data(p, DEFAULT_MODEL_NAME)
    p.add_argument("--force", action="store_true", help="overwrite an existing model")
    p.add_argument("--replay", action="store_true", help=REPLAY_HELP)
    _add_hyperparameters(p)
    p.add_argument("--max-train-images", type=int, default=None,
                   help="fit on the first N training images (sorted by file name; default: all)")
    _add_cluster(p, "one fit per category")

    p = sub.add_parser("evaluate", parents=common, help="evaluate saved models on test/ of a category")
    _add_data(p, SAVED_NAME_HELP)
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="metrics.json, per_image.csv and figures go to <results-dir>/<category>/ (default: results)")
    p.add_argument("--figures", type=_figures, default=6,
                   help="comparison PNGs per category: the hardest cases (default: 6)")
    _add_keep_empty_masks(p)
    _add_cluster(p, "one evaluation per category")

    p = sub.add_parser("report", parents=common, help="write a self-contained HTML report of a saved model on its test split")
    _add_data(p, SAVED_NAME_HELP)
    p.add_argument("--out", default=None,
                   help="report file, or a folder to put report.html in (default: "
                        "<results-dir>/<category>/report.html)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="folder of the default report path (default: results)")
    _add_keep_empty_masks(p)

    p = sub.add_parser("predict", parents=common, help="score image files, folders or glob patterns with a saved model",
                       epilog=PREDICT_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True,
                   help="a saved model folder, e.g. models/<category>/default")
    p.add_argument("--out", type=Path, default=Path("predictions"),
                   help="folder for the predictions CSV (path, score, verdict, overlay, error) and the heatmap "
                        "overlays (default: predictions)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="write only the CSV")
    p.add_argument("--strict", action="store_true",
                   help="all or nothing: stop at the first unreadable file and write nothing (default: give it a "
                        "row with verdict 'error' and the reason, and score every other file)")
    _add_device(p)
    _add_cluster(p, "the scoring, in shards of files,")
    p.add_argument("--shard-size", type=_positive("--shard-size"), default=None, metavar="N",
                   help="images per shard on a cluster (default: about 4 shards per worker, whole scoring batches)")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")

    p = sub.add_parser("teach", parents=common,
                       help="add defect-free images to a saved model (SOM fixed) as a new version next to it")
    _add_version_target(p)
    p.add_argument("--confirm-defective", action="store_true",
                   help="teach images from MVTec test/<defect>/ folders as normal anyway (recorded)")
    _add_device(p)
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")

    p = sub.add_parser("refit", parents=common,
                       help="refit a saved model, SOM included, on its training and taught images as a new version")
    _add_version_target(p)
    _add_device(p)

    p = sub.add_parser("threshold", parents=common,
                       help="save a model with another image threshold as a new version next to it")
    _add_version_target(p)
    p.add_argument("--set", dest="value", type=float, required=True,
                   help="the image threshold (Mahalanobis units; anomalous at score >= threshold)")
    p.add_argument("--rule", default=None,
                   help="how the value was chosen, in words (default: 'set by hand at VALUE')")

    p = sub.add_parser("score", parents=common,
                       help="score the test split of a category with a saved model into the cache next to the model "
                            "(what the dashboard reads)")
    _add_data(p, SAVED_NAME_HELP)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="a saved model folder (default: <models-dir>/<category>/<name or the default model>)")
    p.add_argument("--force", action="store_true", help="score again even when the cache holds this model and data")

    p = sub.add_parser("jobs", parents=common, help="list, queue or cancel background jobs (fits, scoring)")
    where = _Parser(add_help=False)
    where.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                       help=f"the models root whose .jobs/ folder holds the job records (default: {DEFAULT_MODELS})")
    jobs = p.add_subparsers(dest="jobs_command", required=True)
    q = jobs.add_parser("list", parents=[where], help="every job, newest first: status, stage, progress, time left, result or error")
    q.add_argument("--json", action="store_true", help="one JSON object per job")
    q = jobs.add_parser("cancel", parents=[where], help="cancel a queued or running job (nothing partial is left)")
    q.add_argument("id", help="the job id (see `jobs list`)")
    q = jobs.add_parser("submit", parents=[where], help="queue a somad command as a background job, e.g. "
                                       "`jobs submit -- fit --data-dir D --category C`")
    q.add_argument("--title", default=None, help="a line for the job list (default: the command)")
    q.add_argument("argv", nargs=argparse.REMAINDER, help="the command after `--`")
    q = jobs.add_parser("run", parents=[where], help=argparse.SUPPRESS)  # the job process itself (started by submit)
    q.add_argument("id")
    q.add_argument("--lock-fd", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def _positive(option: str):
    def parse(text: str) -> int:
        n = int(text)
        if n < 1:
            raise argparse.ArgumentTypeError(f"{option} must be >= 1, got {n}")
        return n

    parse.__name__ = "integer"
    return parse


def _add_keep_empty_masks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-empty-masks", action="store_true",
                   help="count defective test images whose mask is empty (most likely a labelling mistake) in the "
                        "pixel metrics, every pixel normal (default: leave them out of the pixel metrics, with a "
                        "warning naming them; the image metrics always count them)")


def _figures(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"--figures must be >= 0, got {n}")
    return n


def _categories(args) -> list[str]:
    """The ``--category`` values (``a,b``, repeated, or ``all``: every category of ``--data-dir``), each checked."""
    if args.data_dir == DEFAULT_DATA:
        demo.ensure_demo(DEFAULT_DATA)
    asked = list(dict.fromkeys(c.strip() for given in (args.category or ["all"]) for c in given.split(",")))
    if "" in asked:
        raise data.DataError(f"--category {','.join(args.category)} has an empty name: give names separated by commas.")
    if "all" not in asked:
        for cat in asked:
            data.category_dir(args.data_dir, cat)
        return asked
    found = data.list_categories(args.data_dir)
    if not found:
        raise data.DataError(f"no MVTec-layout category (a folder with train/good/) under {args.data_dir}.")
    return found


def _saved_models(args, cats: list[str]) -> dict[str, Path]:
    """``{category: model dir}`` of ``--name`` under ``--models-dir`` (without ``--name``: the
    category's default model, :func:`somad.store.default_model`), every one checked before any work.

    Raises:
        SomadError: a category has no such model.
    """
    name = check_name(args.name) if args.name is not None else None
    if Path(args.models_dir).exists() and not Path(args.models_dir).is_dir():
        raise SomadError(f"--models-dir {args.models_dir} is a file, not a folder of models.")
    dirs = {}
    for c in cats:
        d = model_path(args.models_dir, c, name) if name else default_model(args.models_dir, c)
        marked = marked_name(args.models_dir, c)
        if not name and marked and (d is None or d.name != marked):
            warnings.warn(f"the default model of '{c}' is marked as '{marked}', which is gone: using "
                          f"{d or 'none'} instead.", stacklevel=2)
        if d is None or not d.exists():
            where = d or Path(args.models_dir) / c
            fit = f"python -m somad fit --data-dir {args.data_dir} --category {c}"
            if Path(args.models_dir) != DEFAULT_MODELS:
                fit += f" --models-dir {args.models_dir}"
            if name:
                fit += f" --name {name}"
            raise SomadError(f"no model for category '{c}' at {where}: run `{fit}` first.")
        dirs[c] = d
    return dirs


def _fit_checks(data_dir: str, cats: list[str], targets: list[str], force: bool) -> None:
    """Before any fit, where it runs (here, and on every worker): each category and model target."""
    from .pipeline import check_writable

    for cat in cats:
        data.category_dir(data_dir, cat)
    for out in targets:
        check_writable(out, force)


def cmd_fit(args) -> int:
    from .executor import fit_task, open_executor
    from .model import check_params, param_specs

    params = {spec.name: getattr(args, spec.name) for spec in param_specs()}
    check_params(params)  # before any data is touched
    executor = open_executor(args.scheduler, args.workers)  # a missing package before any work
    cats = _categories(args)
    name = check_name(args.name) if args.name is not None else DEFAULT_MODEL_NAME
    outs = {cat: model_path(args.models_dir, cat, name) for cat in cats}
    targets = [str(p.resolve()) for p in outs.values()]
    _fit_checks(str(args.data_dir), cats, [str(p) for p in outs.values()], args.force)  # every target before any fit
    tasks = {cat: dict(data_dir=str(Path(args.data_dir).resolve()), category=cat, out_dir=str(outs[cat].resolve()),
                       params=params, max_train_images=args.max_train_images, force=args.force, replay=args.replay)
             for cat in cats}
    with executor:
        executor.check_on_workers("--data-dir / --models-dir", _fit_checks, tasks[cats[0]]["data_dir"], cats, targets,
                                  args.force)
        results = _run(executor, fit_task, tasks, lambda cat, r: _fit_line(cat, outs[cat], r), args,
                       lambda cat: outs[cat].resolve())
    return _finish(results, lambda cat, r: str(outs[cat]) if r.ok else r.error, "model or error")


def _fit_line(cat: str, out: Path, r) -> str:
    v = r.value
    return (f"{cat}: saved {out}  ({plural(v['n_train'], 'image')}, grid {v['grid'][0]}x{v['grid'][1]}, "
            f"QE {v['quantization_error']:.3f}, TE {v['topographic_error']:.3f}, "
            f"threshold {v['threshold']:.3f}, {r.seconds:.1f} s with backbone loading, "
            "localisation check and saving; SOMAD.fit stages: "
            + ", ".join(f"{k} {t:.1f}" for k, t in v["timings"].items()) + " s)")


def _run(executor, fn, tasks: dict[str, dict], line, args, written) -> dict:
    """Run one task per category on ``executor``, printing ``line(cat, result)`` (or the error) as
    each ends and recording ``written(cat)`` in a job's ``--progress-file``; returns
    ``{category: TaskResult}`` in the categories' order."""
    if executor.name != "local":
        print(f"{plural(len(tasks), 'task')} {executor.where}", file=sys.stderr)
    results = {}
    for r in executor.run_tasks(fn, tasks, lambda cat: _progress(args, f"{cat}: ")):
        results[r.name] = r
        if r.ok:
            _result(args, written(r.name))
            print(line(r.name, r) + ("" if r.attempts == 1 else f" [after {r.attempts - 1} retry]"))
        elif len(tasks) > 1:
            print(f"{r.name}: failed: {r.error}", file=sys.stderr)
    return {cat: results[cat] for cat in tasks}


def _finish(results: dict, outcome, last_column: str) -> int:
    """The run's end: with one category, its error line (status 2) if it failed; with several, the
    table (category, status, seconds, ``outcome(cat, result)``) and status 1 if any failed."""
    if len(results) == 1:
        (r,) = results.values()
        if not r.ok:
            raise SomadError(r.error)
        return 0
    print(f"\n| category | status | seconds | {last_column} |\n|---|---|---|---|")
    for cat, r in results.items():
        print(f"| {cat} | {r.status} | {r.seconds:.1f} | {outcome(cat, r)} |")
    failed = [cat for cat, r in results.items() if not r.ok]
    if failed:
        print(f"error: {len(failed)} of {len(results)} categories failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _evaluate_checks(model_dirs: list[str], results_dirs: list[str]) -> None:
    """Before any scoring, where it runs: every model readable, every results folder writable."""
    from .persistence import read_config
    from .pipeline import check_results_dir

    for d in model_dirs:
        read_config(d)
    for d in results_dirs:
        check_results_dir(d)


def cmd_evaluate(args) -> int:
    from .executor import evaluate_task, open_executor

    check_device(args.device)
    executor = open_executor(args.scheduler, args.workers)
    cats = _categories(args)
    dirs = _saved_models(args, cats)
    outs = {cat: Path(args.results_dir) / cat for cat in cats}
    _evaluate_checks([], [str(p) for p in outs.values()])  # before any scoring
    tasks = {cat: dict(data_dir=str(Path(args.data_dir).resolve()), category=cat, model_dir=str(dirs[cat].resolve()),
                       results_dir=str(outs[cat].resolve()), n_figures=args.figures, device=args.device,
                       keep_empty_masks=args.keep_empty_masks) for cat in cats}
    with executor:
        executor.check_on_workers("--models-dir / --results-dir", _evaluate_checks,
                                  [t["model_dir"] for t in tasks.values()], [t["results_dir"] for t in tasks.values()])
        results = _run(executor, evaluate_task, tasks,
                       lambda cat, r: f"{cat}: model {dirs[cat]}: wrote {outs[cat]}/metrics.json, per_image.csv, figures/",
                       args, lambda cat: outs[cat].resolve())
    done = {cat: r.value["metrics"] for cat, r in results.items() if r.ok}
    if done:
        print("\n| category | " + " | ".join(TABLE_METRICS.values()) + " | eval s |")
        print("|---|---|---|---|---|---|---|")
        for cat, m in done.items():
            print("| " + " | ".join([cat] + [_metric_cell(m, k) for k in TABLE_METRICS]
                                    + [f"{m['timings']['total']:.1f}"]) + " |")
        for cat, m in done.items():
            if m.get("n_taught_test"):
                print(leak_line(cat, m), file=sys.stderr)
    return _finish(results, lambda cat, r: str(outs[cat]) if r.ok else r.error, "results or error")


TABLE_METRICS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO",
                 "image_f1_max": "image F1-max", "pixel_f1_max": "pixel F1-max"}
"""Metrics in the table ``evaluate`` prints (``metrics.json`` key: column title)."""


def leak_line(category: str, metrics: dict, named: int = 3) -> str:
    """``evaluate``'s one line on test images the model was taught (``metrics.json``'s ``taught_test``,
    :func:`somad.pipeline.evaluate_model`): how many, the first ``named``, and the table's metrics without them."""
    n, names = metrics["n_taught_test"], metrics["taught_test"]
    shown = ", ".join(names[:named]) + (f" and {len(names) - named} more" if len(names) > named else "")
    clean = metrics.get("without_taught") or {}
    values = ", ".join(f"{title} {_metric_cell(clean, k)}" for k, title in TABLE_METRICS.items() if k in clean)
    return (f"warning: {category}: {plural(n, 'test image')} ({shown}) {word(n, 'was')} taught to model "
            f"{Path(metrics['model_dir'] or '?').name} as normal: a leak, so the metrics above flatter it. Without "
            f"{word(n, 'it')} ({plural(clean.get('n_test', 0), 'test image')}): {values or 'n/a'} "
            "(metrics.json: taught_test, without_taught).")


def _metric_cell(metrics: dict, key: str) -> str:
    """``0.969``, or ``n/a (why)`` for an undefined metric (see :func:`somad.metrics.undefined_reasons`)."""
    why = metrics.get("undefined", {}).get(key)
    return f"n/a ({why})" if why else f"{metrics[key]:.3f}"


def cmd_report(args) -> int:
    from .persistence import load_model
    from .pipeline import evaluate_model
    from .report import write_report

    check_device(args.device)
    cats = _categories(args)
    if args.out is not None and len(cats) > 1:
        raise SomadError("--out names one file: give one --category, or leave --out out for one report per category.")
    dirs = _saved_models(args, cats)
    targets = {cat: _report_path(args, cat) for cat in cats}
    for cat, target in targets.items():  # before any scoring
        check_output_file(target, "--out" if args.out else "--results-dir")
    for cat, model_dir in dirs.items():
        model = load_model(model_dir, device=args.device)
        ev = evaluate_model(model, args.data_dir, cat, _progress(args, f"{cat}: "),
                            keep_empty_masks=args.keep_empty_masks, return_patches=True)
        out = write_report(model, ev, targets[cat], str(model_dir))
        _result(args, Path(out).resolve())
        print(f"{cat}: model {model_dir}: wrote {out} ({out.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0


REPORT_NAME = "report.html"


def _report_path(args, category: str) -> Path:
    """``--out`` as given; a folder (existing, or written with a trailing slash) gets ``report.html``
    inside; without ``--out``, ``<results-dir>/<category>/report.html``."""
    if args.out is None:
        return Path(args.results_dir) / category / REPORT_NAME
    out = Path(args.out)
    return out / REPORT_NAME if out.is_dir() or str(args.out).endswith(("/", "\\")) else out


def _predict_checks(model_dir: str, out: str) -> None:
    """Before any scoring, where it runs: the model readable, the output folder writable."""
    from .atomic import check_output_dir
    from .persistence import read_config

    read_config(model_dir)
    check_output_dir(out, "--out")


def cmd_predict(args) -> int:
    from functools import partial

    from tqdm import tqdm

    from .executor import open_executor
    from .persistence import load_model
    from .pipeline import PREDICTIONS_CSV, expand_images, predict_folder

    check_device(args.device)
    executor = open_executor(args.scheduler, args.workers)
    check_output_file(Path(args.out) / PREDICTIONS_CSV, "--out")
    paths = expand_images(args.images)
    if args.strict:
        for p in paths:
            data.check_image_file(p)  # every file's header checked before any work
    model = load_model(args.model_dir, device=args.device)
    with executor:
        score = None
        if executor.name != "local":
            executor.check_on_workers("--model-dir / --out", _predict_checks, str(Path(args.model_dir).resolve()),
                                      str(Path(args.out).resolve()))
            print(f"{plural(len(paths), 'image', fmt=',')} {executor.where}", file=sys.stderr)
            score = partial(executor.iter_predictions, shard_size=args.shard_size)
        res = predict_folder(model, paths, args.out, args.overlays, _progress(args), strict=args.strict,
                             on_error=lambda row: tqdm.write(f"error: {row['error']}", file=sys.stderr), score=score)
    _result(args, Path(res["csv"]).resolve())
    if res["n_images"] <= PRINT_ROWS:
        with open(res["csv"], newline="") as fh:
            for row in list(csv.reader(fh))[1:]:
                print("\t".join(row).rstrip("\t"))
    failed = (f"{res['n_scored']:,} scored, {res['n_errors']:,} unreadable (rows with verdict 'error'); "
              if res["n_errors"] else "")
    print(f"{plural(res['n_images'], 'image', fmt=',')} in {res['seconds']:.1f} s ({res['images_per_s']:.1f} images/s): {failed}"
          f"{res['n_anomalous']:,} anomalous ({DECISION_RULE}, threshold {model.threshold_:.3f}); "
          f"wrote {res['csv']}" + (f" and overlays in {res['overlays']}" if res["overlays"] else ""))
    return EXIT_UNREADABLE if res["n_errors"] else 0


def cmd_teach(args) -> int:
    from .pipeline import expand_images
    from .versions import provenance, teach

    check_device(args.device)
    paths = expand_images(args.images)
    out = teach(args.model_dir, paths, note=args.note, name=args.name, progress=_progress(args),
                confirmed_defective=paths if args.confirm_defective else (), device=args.device)
    _result(args, Path(out).resolve())
    _print_version(out, provenance(out))
    return 0


def cmd_refit(args) -> int:
    from .versions import provenance, refit

    check_device(args.device)
    out = refit(args.model_dir, note=args.note, name=args.name, progress=_progress(args), device=args.device)
    _result(args, Path(out).resolve())
    _print_version(out, provenance(out))
    return 0


def cmd_threshold(args) -> int:
    from .versions import provenance, save_threshold

    rule = args.rule or f"set by hand at {args.value:g} (python -m somad threshold)"
    out = save_threshold(args.model_dir, args.value, rule=rule, note=args.note, name=args.name)
    _result(args, Path(out).resolve())
    _print_version(out, provenance(out))
    return 0


def _print_version(out: Path, prov: dict) -> None:
    """What a new version changed: threshold and training images before and after, refit advice."""
    print(f"saved new version {out} (parent {prov['parent']['name']} unchanged; not made the default)")
    print(f"threshold: {prov['threshold_before']:.3f} -> {prov['threshold_after']:.3f} ({prov['rule']})")
    print(f"training images: {prov['n_train_before']} -> {prov['n_train_after']}"
          + (f" ({len(prov['added'])} taught; partial_fit {prov['partial_fit_seconds']:.1f} s)"
             if prov.get("partial_fit_seconds") is not None else
             f" (SOM refitted on them, {len(prov['added'])} of them taught)" if prov["kind"] == "refit" else ""))
    if prov.get("refit_advice"):
        print(prov["refit_advice"])


def cmd_demo(args) -> int:
    root = demo.generate(args.out, seed=args.seed, force=args.force)
    print(f"demo data in {root}: " + ", ".join(data.list_categories(root)))
    return 0


def cmd_score(args) -> int:
    from .scorecache import score_into_cache

    check_device(args.device)
    cats = _categories(args)
    if args.model_dir is not None:
        if len(cats) != 1 or not args.category or "all" in args.category:
            raise SomadError("--model-dir scores one category: give one --category name too.")
        dirs = {cats[0]: args.model_dir}
    else:
        dirs = _saved_models(args, cats)
    for cat in cats:
        t0 = time.perf_counter()
        out = score_into_cache(dirs[cat], args.data_dir, cat, args.device, _progress(args, f"{cat}: "), args.force)
        _result(args, out.resolve())
        print(f"{cat}: model {dirs[cat]}: test split scores in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_jobs(args) -> int:
    from . import jobs

    if args.jobs_command == "run":
        return jobs.run(args.models_dir, args.id)
    if args.jobs_command == "cancel":
        jobs.cancel(args.models_dir, args.id)
        print(f"job {args.id}: {jobs.job_info(args.models_dir, args.id).status}")
        return 0
    if args.jobs_command == "submit":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise SomadError("jobs submit needs a command after `--`, e.g. `jobs submit -- fit --category bottle`.")
        job_id = jobs.submit(args.models_dir, argv, kind=argv[0], title=args.title or "somad " + " ".join(argv))
        print(f"job {job_id} queued; records in {jobs.jobs_dir(args.models_dir) / job_id}")
        return 0
    found = jobs.list_jobs(args.models_dir)
    if getattr(args, "json", False):
        for j in found:
            print(json.dumps(j.to_dict()))
        return 0
    if not found:
        print(f"no jobs in {jobs.jobs_dir(args.models_dir)}")
    for j in found:
        where = f"{j.stage} {j.done}/{j.total} {jobs.format_eta(j.eta_s)}".strip() if j.stage else ""
        tail = j.error if j.status == "failed" else (j.result or "") if j.status == "done" else where
        print(f"{j.id}  {j.status:<9}  {j.kind:<6}  {j.title}" + (f"  [{tail}]" if tail else ""))
    return 0


COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "report": cmd_report, "predict": cmd_predict,
            "demo-data": cmd_demo, "teach": cmd_teach, "threshold": cmd_threshold,
            "refit": cmd_refit, "score": cmd_score, "jobs": cmd_jobs}


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """Warnings as one ``warning: ...`` line, like errors (no source path or code line)."""
    return f"warning: {message}\n"


def run_command(args) -> int:
    """Run parsed ``args`` (logging and warnings set up as for the CLI); SomadError propagates."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    warnings.formatwarning = _warning_line
    return COMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except SomadError as exc:  # user errors; anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
