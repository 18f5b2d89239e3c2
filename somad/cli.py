"""Command line: ``python -m somad {demo-data,fit,evaluate,report,predict}``.

Every long step shows a tqdm progress bar. Bad input prints one ``error:``
line naming the file or parameter and exits with status 2; nothing is written.
``predict`` without ``--strict`` is the exception for unreadable image files: it
scores the others and exits with :data:`EXIT_UNREADABLE` (see :data:`PREDICT_EXIT_HELP`).
"""
from __future__ import annotations

import argparse
import csv
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


def _add_device(p: argparse.ArgumentParser) -> None:
    from .model import PARAM_HELP

    p.add_argument("--device", default="cpu", help=f"{PARAM_HELP['device']} (default: cpu)")


def _add_data(p: argparse.ArgumentParser, name_help: str) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="root holding MVTec-layout categories (default: the demo data, generated if missing)")
    p.add_argument("--category", default="all", help="category name, or 'all' (default)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS, help=f"where models live (default: {DEFAULT_MODELS})")
    p.add_argument("--name", default=None, help=f"model name under <models-dir>/<category>/ (default: {name_help})")
    _add_device(p)


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
    common = [verbose]  # -v also after the subcommand

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

    p = sub.add_parser("evaluate", parents=common, help="evaluate saved models on test/ of a category")
    _add_data(p, SAVED_NAME_HELP)
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="metrics.json, per_image.csv and figures go to <results-dir>/<category>/ (default: results)")
    p.add_argument("--figures", type=_figures, default=6,
                   help="comparison PNGs per category: the hardest cases (default: 6)")
    _add_keep_empty_masks(p)

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
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    return parser


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
    if args.data_dir == DEFAULT_DATA:
        demo.ensure_demo(DEFAULT_DATA)
    found = data.list_categories(args.data_dir)
    if args.category != "all":
        data.category_dir(args.data_dir, args.category)
        return [args.category]
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


def cmd_fit(args) -> int:
    from .model import check_params, param_specs
    from .pipeline import check_writable, fit_category

    params = {spec.name: getattr(args, spec.name) for spec in param_specs()}
    check_params(params)  # before any data is touched
    cats = _categories(args)
    name = check_name(args.name) if args.name is not None else DEFAULT_MODEL_NAME
    for cat in cats:  # check every target before fitting any
        check_writable(model_path(args.models_dir, cat, name), args.force)
    for cat in cats:
        out = model_path(args.models_dir, cat, name)
        t0 = time.perf_counter()
        model = fit_category(args.data_dir, cat, out, params, args.max_train_images, args.force,
                             TqdmProgress(f"{cat}: "), replay=args.replay)
        t = model.timings_
        print(f"{cat}: saved {out}  ({model.n_train_} images, grid {model.grid_[0]}x{model.grid_[1]}, "
              f"QE {model.quantization_error_:.3f}, TE {model.topographic_error_:.3f}, "
              f"threshold {model.threshold_:.3f}, {time.perf_counter() - t0:.1f} s with backbone loading, "
              "localisation check and saving; SOMAD.fit stages: "
              + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + " s)")
    return 0


def cmd_evaluate(args) -> int:
    from .persistence import load_model
    from .pipeline import check_results_dir, evaluate_model, write_results

    check_device(args.device)
    cats = _categories(args)
    dirs = _saved_models(args, cats)
    for cat in cats:  # before any scoring
        check_results_dir(args.results_dir / cat)
    rows = []
    for cat in cats:
        model = load_model(dirs[cat], device=args.device)
        ev = evaluate_model(model, args.data_dir, cat, TqdmProgress(f"{cat}: "),
                            keep_empty_masks=args.keep_empty_masks)
        out = write_results(ev, model, args.results_dir / cat, args.figures)
        m = ev.metrics
        rows.append([cat] + [_metric_cell(m, k) for k in TABLE_METRICS] + [f"{m['timings']['total']:.1f}"])
        print(f"{cat}: model {dirs[cat]}: wrote {out}/metrics.json, per_image.csv, figures/")
    print("\n| category | image AUROC | pixel AUROC | AUPRO | image F1-max | pixel F1-max | eval s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


TABLE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
"""Metrics in the table ``evaluate`` prints."""


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
        ev = evaluate_model(model, args.data_dir, cat, TqdmProgress(f"{cat}: "),
                            keep_empty_masks=args.keep_empty_masks, return_patches=True)
        out = write_report(model, ev, targets[cat], str(model_dir))
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


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from .persistence import load_model
    from .pipeline import PREDICTIONS_CSV, expand_images, predict_folder

    check_device(args.device)
    check_output_file(Path(args.out) / PREDICTIONS_CSV, "--out")
    paths = expand_images(args.images)
    if args.strict:
        for p in paths:
            data.check_image_file(p)  # every file's header checked before any work
    model = load_model(args.model_dir, device=args.device)
    res = predict_folder(model, paths, args.out, args.overlays, TqdmProgress(), strict=args.strict,
                         on_error=lambda row: tqdm.write(f"error: {row['error']}", file=sys.stderr))
    if res["n_images"] <= PRINT_ROWS:
        with open(res["csv"], newline="") as fh:
            for row in list(csv.reader(fh))[1:]:
                print("\t".join(row).rstrip("\t"))
    failed = (f"{res['n_scored']:,} scored, {res['n_errors']:,} unreadable (rows with verdict 'error'); "
              if res["n_errors"] else "")
    print(f"{res['n_images']:,} images in {res['seconds']:.1f} s ({res['images_per_s']:.1f} images/s): {failed}"
          f"{res['n_anomalous']:,} anomalous ({DECISION_RULE}, threshold {model.threshold_:.3f}); "
          f"wrote {res['csv']}" + (f" and overlays in {res['overlays']}" if res["overlays"] else ""))
    return EXIT_UNREADABLE if res["n_errors"] else 0


def cmd_demo(args) -> int:
    root = demo.generate(args.out, seed=args.seed, force=args.force)
    print(f"demo data in {root}: " + ", ".join(data.list_categories(root)))
    return 0


COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "report": cmd_report, "predict": cmd_predict,
            "demo-data": cmd_demo}


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """Warnings as one ``warning: ...`` line, like errors (no source path or code line)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    warnings.formatwarning = _warning_line
    try:
        return COMMANDS[args.command](args)
    except SomadError as exc:  # user errors; anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
