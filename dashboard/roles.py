"""Who may change things: presenters write, viewers only look.

``SOMAD_READ_ONLY=1`` makes every session a viewer. Every function that writes (submit a fit,
rename, delete, make default, teach, save a threshold, cancel a job) calls :func:`require_writer`
first, on the server, whatever the page shows: hiding a button is not the guard.

Stub of this stage's shared API; the roles work (presenter unlock) extends it in place.
"""
from __future__ import annotations

import os

from somad.errors import SomadError

READ_ONLY_ENV = "SOMAD_READ_ONLY"


class ViewerRefused(SomadError):
    """A write was asked for by a viewer session (the message is browser-worded)."""


def read_only_server() -> bool:
    """True when ``SOMAD_READ_ONLY`` is set to 1/true/yes (every session starts as a viewer)."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes")


def can_write() -> bool:
    """True when this session may change models, jobs and thresholds."""
    return not read_only_server()


def require_writer(action: str) -> None:
    """Refuse ``action`` (e.g. "delete a model") for a viewer session.

    Raises:
        ViewerRefused: this session is a viewer; the message names the action.
    """
    if not can_write():
        raise ViewerRefused(f"This dashboard is shared read-only: viewers cannot {action}. "
                            "Ask the presenter, or unlock presenter mode on the Model page.")
