"""The Model page's write actions on saved models. Each calls :func:`dashboard.roles.require_writer`
first, so a viewer session is refused on the server whatever the page shows (a hidden button is not
the guard); the page's buttons call these and nothing else writes.

Pure of Streamlit widgets: tests call them directly (``tests/test_roles.py``).
"""
from __future__ import annotations

from pathlib import Path

from somad import store

from .roles import require_writer


def make_default(models_dir: str | Path, category: str, name: str) -> None:
    """Mark model ``name`` as the category's default (:func:`somad.store.set_default`).

    Raises:
        ViewerRefused: a viewer session. ModelFileError: no such model.
    """
    require_writer("mark a model as the default")
    store.set_default(models_dir, category, name)


def rename(models_dir: str | Path, category: str, name: str, new_name: str) -> Path:
    """Rename a saved model (:func:`somad.store.rename_model`); returns the new model dir.

    Raises:
        ViewerRefused: a viewer session. ModelFileError: no such model, a bad or taken new name.
    """
    require_writer("rename a model")
    return store.rename_model(models_dir, category, name, new_name)


def delete(models_dir: str | Path, category: str, name: str) -> None:
    """Delete a saved model (:func:`somad.store.delete_model`).

    Raises:
        ViewerRefused: a viewer session. ModelFileError: no such model.
    """
    require_writer("delete a model")
    store.delete_model(models_dir, category, name)


def check_fit() -> None:
    """Refuse a fit for a viewer (called first by whatever starts a fit from the dashboard).

    Raises:
        ViewerRefused: a viewer session.
    """
    require_writer("fit a model")
