"""somad: industrial visual anomaly detection with Self-Organizing Maps (SOMAD, Li et al., ICIP 2021).

Core library: data (:mod:`somad.data`), features (:mod:`somad.features`), SOM (:mod:`somad.som`),
Gaussians (:mod:`somad.gaussian`), scoring (:mod:`somad.scoring`), the estimator (:mod:`somad.model`),
metrics (:mod:`somad.metrics`), persistence (:mod:`somad.persistence`), explanations
(:mod:`somad.explain`), workflows (:mod:`somad.pipeline`) and the CLI (:mod:`somad.cli`).
It never imports Streamlit.
"""
from .errors import BackboneError, DataError, ModelFileError, NotFittedError, SomadError
from .model import SOMAD
from .persistence import load_model, save_model

__all__ = ["SOMAD", "load_model", "save_model", "SomadError", "DataError", "BackboneError",
           "ModelFileError", "NotFittedError"]
__version__ = "0.1.0"
