"""Shared fixtures of the dashboard tests: the demo data and one small model fitted on it (session scope)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SMALL = {"image_size": 64, "d": 32, "epochs": 3, "cv_folds": 2}


@pytest.fixture(scope="session")
def demo_root() -> Path:
    """The embedded demo data set (generated if missing)."""
    from somad import demo

    return demo.ensure_demo()


@pytest.fixture(scope="session")
def small_model_env(tmp_path_factory, demo_root):
    """``(models_dir, model_dir, model)``: a small SOMAD (16x16 SOM) fitted on demo 'tiles', saved in a tmp dir."""
    from somad import pipeline

    models = tmp_path_factory.mktemp("models")
    out = pipeline.model_path(models, "tiles", "small")
    model = pipeline.fit_category(demo_root, "tiles", out, dict(SMALL))
    return models, out, model


@pytest.fixture(scope="session")
def small_eval(small_model_env, demo_root):
    """:class:`somad.explain.ExplainedEvaluation` of the small model on demo 'tiles'."""
    from somad import explain

    return explain.evaluate_with_patches(small_model_env[2], demo_root, "tiles")


@pytest.fixture()
def app_env(monkeypatch, small_model_env, demo_root):
    """Point the app at the demo data and the tmp models dir."""
    monkeypatch.setenv("SOMAD_DATA_DIR", str(demo_root))
    monkeypatch.setenv("SOMAD_MODELS_DIR", str(small_model_env[0]))
    return small_model_env
