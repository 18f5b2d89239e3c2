"""The Model page's version list: every saved model of a category with what changed against its
parent (images added, threshold before and after, metrics before and after where an evaluation
exists), and a side-by-side comparison of two versions. Pure of Streamlit: tests call these.

A version's story is its ``config.json`` ``provenance`` (written by :mod:`somad.versions`):
``kind ('teach' | 'threshold' | 'refit'), parent {name, path, ...}, added [{path, sha256,
confirmed_defective}], time, note, threshold_before, threshold_after, rule, n_train_after``. A plain
fit has none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from somad import store
from somad.errors import SomadError
from somad.persistence import read_config

METRIC_COLUMNS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO"}
"""Metrics shown before and after, ``metrics.json`` key -> column label."""


@dataclass
class Version:
    """One saved model of a category, as the version list shows it.

    Attributes:
        path: the model dir. name: its folder name. parent: the parent's folder name ('' for a fit).
        kind: 'fit', 'teach', 'threshold', 'refit'. time: ISO 8601 time of the change (or ``saved_at``).
        note: the engineer's note. added: files taught (``{path, sha256}``), confirmed_defective: those
            labelled defective that were taught on confirmation. threshold, threshold_before: the image
            threshold now and in the parent (NaN when unknown). rule: how the threshold was set.
        refit_advice: why the SOM itself should be refitted, when the teaching says so ('' otherwise).
        metrics: ``{key: value}`` of an evaluation of this version, if one exists (see :func:`known_metrics`).
    """

    path: Path
    name: str
    parent: str = ""
    kind: str = "fit"
    time: str = ""
    note: str = ""
    added: list = field(default_factory=list)
    confirmed_defective: list = field(default_factory=list)
    threshold: float = math.nan
    threshold_before: float = math.nan
    rule: str = ""
    n_train: int | None = None
    refit_advice: str = ""
    metrics: dict = field(default_factory=dict)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_version(model_dir: str | Path) -> Version:
    """:class:`Version` of one model dir from its config (an unreadable config gives a bare entry)."""
    p = Path(model_dir)
    try:
        cfg = read_config(p)
    except SomadError:
        return Version(p, p.name, kind="(unreadable)")
    prov = cfg.get("provenance") if isinstance(cfg.get("provenance"), dict) else {}
    parent = prov.get("parent") or ""
    parent = parent.get("name", "") if isinstance(parent, dict) else Path(str(parent)).name if parent else ""
    added = [a for a in prov.get("added") or [] if isinstance(a, dict)]
    return Version(
        p, p.name, parent=str(parent), kind=prov.get("kind") or "fit",
        time=str(prov.get("time") or cfg.get("saved_at") or ""), note=str(prov.get("note") or ""),
        added=added, confirmed_defective=[a.get("path") for a in added if a.get("confirmed_defective")],
        threshold=_num(prov.get("threshold_after", cfg.get("threshold"))),
        threshold_before=_num(prov.get("threshold_before")), rule=str(prov.get("rule") or cfg.get("threshold_rule") or ""),
        n_train=prov.get("n_train_after", cfg.get("n_train")), refit_advice=str(prov.get("refit_advice") or ""))


def category_versions(models_dir: str | Path, category: str) -> list[Version]:
    """Every saved model of a category, newest first (:func:`somad.store.list_models`)."""
    return [read_version(p) for p in store.list_models(models_dir, category)]


def known_metrics(metrics: dict | None) -> dict:
    """The metrics of :data:`METRIC_COLUMNS` from an evaluation's metrics (None / NaN dropped)."""
    out = {}
    for key in METRIC_COLUMNS:
        v = _num((metrics or {}).get(key))
        if not math.isnan(v):
            out[key] = v
    return out


def _change(before: float, after: float, digits: int = 3) -> str:
    """"a → b", "b" when there is no before, "" when neither is known."""
    fmt = f"{{:.{digits}f}}"
    if math.isnan(after):
        return ""
    if math.isnan(before) or round(before, digits + 3) == round(after, digits + 3):
        return fmt.format(after)
    return f"{fmt.format(before)} → {fmt.format(after)}"


def version_table(versions: Sequence[Version], default: str = "", loaded: str = "") -> pd.DataFrame:
    """One row per version: name, marks (default, loaded), kind, parent, time, images added, threshold
    before → after with its rule, metrics before → after (the parent's evaluation against this one's,
    where they exist), note."""
    by_name = {v.name: v for v in versions}
    rows = []
    for v in versions:
        parent = by_name.get(v.parent)
        before = parent.threshold if parent and math.isnan(v.threshold_before) else v.threshold_before
        row = {"version": v.name,
               "": " ".join(m for m, on in (("default", v.name == default), ("open", v.name == loaded)) if on),
               "change": v.kind, "parent": v.parent, "time": v.time,
               "images added": len(v.added) or "",
               "threshold": _change(before, v.threshold), "rule": v.rule}
        for key, label in METRIC_COLUMNS.items():
            row[label] = _change(_num((parent.metrics if parent else {}).get(key)), _num(v.metrics.get(key)))
        row["note"] = v.note + (f" (taught {len(v.confirmed_defective)} defective-labelled on confirmation)"
                                if v.confirmed_defective else "")
        rows.append(row)
    return pd.DataFrame(rows)


def compare(a: Version, b: Version) -> pd.DataFrame:
    """Side by side: threshold and its rule, training images, images added, metrics, note, parent."""
    def facts(v: Version) -> dict:
        out = {"change": v.kind, "parent": v.parent or "(a fit)", "time": v.time,
               "threshold": "" if math.isnan(v.threshold) else f"{v.threshold:.4f}", "rule": v.rule,
               "training images": "" if v.n_train is None else str(v.n_train),
               "images added (this step)": ", ".join(Path(str(x.get("path", ""))).name for x in v.added) or "none",
               "note": v.note}
        for key, label in METRIC_COLUMNS.items():
            out[label] = f"{v.metrics[key]:.3f}" if key in v.metrics else "not evaluated"
        return out

    fa, fb = facts(a), facts(b)
    return pd.DataFrame({a.name: list(fa.values()), b.name: list(fb.values())}, index=list(fa.keys()))
