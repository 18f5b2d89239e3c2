"""somad: industrial visual anomaly detection with Self-Organizing Maps (SOMAD, Li et al., ICIP 2021).

Core library: data (:mod:`somad.data`), features (:mod:`somad.features`), SOM (:mod:`somad.som`),
Gaussians (:mod:`somad.gaussian`), scoring (:mod:`somad.scoring`), the estimator (:mod:`somad.model`),
metrics (:mod:`somad.metrics`), persistence (:mod:`somad.persistence`), explanations
(:mod:`somad.explain`), workflows (:mod:`somad.pipeline`) and the CLI (:mod:`somad.cli`).
It never imports Streamlit. ``SOMAD``, ``load_model`` and ``save_model`` are imported lazily,
so ``import somad`` does not load torch (``python -m somad --help`` does: the ``fit`` flags come from
``SOMAD``'s signature).
"""
from .errors import BackboneError, DataError, ModelFileError, NotFittedError, ParameterError, SomadError

__all__ = ["SOMAD", "load_model", "save_model", "SomadError", "DataError", "BackboneError",
           "ModelFileError", "NotFittedError", "ParameterError"]
__version__ = "0.1.0"

_LAZY = {"SOMAD": "model", "load_model": "persistence", "save_model": "persistence"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'somad' has no attribute '{name}'")
