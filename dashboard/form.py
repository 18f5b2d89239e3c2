"""The fit form's widgets, built from :func:`somad.model.param_specs` (names, defaults, types,
help and choices come from the estimator's signature; nothing is restated here but the layout)."""
from __future__ import annotations

import streamlit as st

from somad.features import BACKBONES
from somad.model import ParamSpec, param_specs

FORM_PARAMS = ("backbone", "image_size", "d", "device", "grid", "topology", "som_backend", "epochs",
               "sigma", "learning_rate", "k", "blur_sigma")
"""The hyperparameters the dashboard's fit form shows, in order; the others keep their defaults."""

IMAGE_SIZES = tuple(range(64, 321, 32)) + (224,)
"""Image sizes offered by the slider (multiples of 16 from 64 to 320, plus the paper's 224)."""


def _label(spec: ParamSpec) -> str:
    return spec.name.replace("_", " ").capitalize()


def param_input(container, spec: ParamSpec, key: str):
    """One widget for ``spec`` in ``container``; returns the value in the estimator's type
    (None where the spec's default is None and the user left the 'auto' value)."""
    label, help_ = _label(spec), spec.help
    if spec.name == "backbone":
        names = sorted(set(BACKBONES) | {spec.default})
        return container.selectbox(label, names, index=names.index(spec.default), key=key, help=help_)
    if spec.name == "image_size":
        return container.select_slider(label + " (px)", options=sorted(set(IMAGE_SIZES)), value=spec.default,
                                       key=key, help=help_)
    if spec.choices:
        return container.selectbox(label, spec.choices, index=spec.choices.index(spec.default), key=key,
                                   help=help_)
    if spec.type is tuple:  # the SOM grid: 0 x 0 = the feature-map size
        a, b = container.columns(2)
        rows = a.number_input(f"{label} rows (0 = auto)", 0, 128, 0, key=f"{key}_rows", help=help_)
        cols = b.number_input(f"{label} cols (0 = auto)", 0, 128, 0, key=f"{key}_cols", help=help_)
        return (int(rows), int(cols)) if rows and cols else None
    if spec.type is int:
        value = container.number_input(label, 0 if spec.default is None else 1, 100000,
                                       spec.default or 0, step=1, key=key,
                                       help=help_ + (" (0 = auto)" if spec.default is None else ""))
        return int(value) if value or spec.default is not None else None
    value = container.number_input(label + (" (0 = auto)" if spec.default is None else ""), 0.0, 1000.0,
                                   float(spec.default or 0.0), key=key, help=help_)
    return float(value) if value or spec.default is not None else None


def fit_form_params(columns: int = 4) -> dict:
    """Render the :data:`FORM_PARAMS` widgets in rows of ``columns``; returns {name: value}."""
    specs = {s.name: s for s in param_specs()}
    out = {}
    for start in range(0, len(FORM_PARAMS), columns):
        cols = st.columns(columns)
        for col, name in zip(cols, FORM_PARAMS[start:start + columns]):
            out[name] = param_input(col, specs[name], key=f"fit_{name}")
    return out
