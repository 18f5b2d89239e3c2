"""Who may change things: presenters write, viewers only look.

``SOMAD_READ_ONLY=1`` makes every session a viewer. Every function that writes (submit a fit,
rename, delete, make default, teach, save a threshold, cancel a job) calls :func:`require_writer`
first, on the server, whatever the page shows: hiding a button is not the guard.

**Presenter unlock.** On a read-only server, a session becomes a presenter (may write) when someone
types the password kept in Streamlit's ``secrets.toml`` under :data:`PASSWORD_SECRET` (read with
``st.secrets``; never from a URL or the environment). The comparison is constant-time
(:func:`hmac.compare_digest` of SHA-256 digests, so not even the length leaks), the unlock lasts
for that browser session only (``st.session_state``), and failed tries are slowed server-wide
(:class:`Throttle`: after the n-th failure in a row no try is compared for ``2^(n-1)`` s, at most
:data:`MAX_WAIT_S`), so opening new tabs does not reset the wait.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time

import streamlit as st

from somad.errors import SomadError

from .keys import Keys

READ_ONLY_ENV = "SOMAD_READ_ONLY"
PASSWORD_SECRET = "presenter_password"
"""Key of the presenter password in ``.streamlit/secrets.toml`` (``presenter_password = "..."``)."""
MAX_WAIT_S = 60.0
"""Longest wait after failed unlock tries, in seconds."""


class ViewerRefused(SomadError):
    """A write was asked for by a viewer session (the message is browser-worded)."""


def read_only_server() -> bool:
    """True when ``SOMAD_READ_ONLY`` is set to 1/true/yes (every session starts as a viewer)."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes")


def is_presenter() -> bool:
    """True when this browser session was unlocked with the presenter password."""
    try:
        return bool(st.session_state.get(Keys.PRESENTER, False))
    except Exception:  # outside a Streamlit session (CLI, plain tests): nobody is unlocked
        return False


def can_write() -> bool:
    """True when this session may change models, jobs and thresholds: the server is not read-only,
    or this session was unlocked as presenter."""
    return not read_only_server() or is_presenter()


def require_writer(action: str) -> None:
    """Refuse ``action`` (e.g. "delete a model") for a viewer session.

    Raises:
        ViewerRefused: this session is a viewer; the message names the action.
    """
    if not can_write():
        raise ViewerRefused(f"This dashboard is shared read-only: viewers cannot {action}. "
                            "Ask the presenter, or unlock presenter mode on the Model page.")


def presenter_password() -> str | None:
    """The presenter password from ``st.secrets`` (None when there is no secrets file, no
    :data:`PASSWORD_SECRET` entry, or an empty one: then no session can unlock)."""
    try:
        value = st.secrets.get(PASSWORD_SECRET)
    except Exception:  # no secrets.toml anywhere (StreamlitSecretNotFoundError) or an unreadable one
        return None
    return value if isinstance(value, str) and value else None


def unlock_offered() -> bool:
    """True when a viewer may try to unlock: the server is read-only and a password is configured."""
    return read_only_server() and presenter_password() is not None


class Throttle:
    """Slows password guessing: after ``n`` failures in a row, tries are refused for
    ``min(base_s * 2^(n-1), cap_s)`` seconds; a success resets it. Thread-safe.

    Args:
        base_s: wait after the first failure (s); cap_s: longest wait (s); clock: monotonic seconds.
    """

    def __init__(self, base_s: float = 1.0, cap_s: float = MAX_WAIT_S, clock=time.monotonic):
        self.base_s, self.cap_s, self.clock = base_s, cap_s, clock
        self.failures = 0
        self.until = -math.inf
        self._lock = threading.Lock()

    def wait_left(self) -> float:
        """Seconds until the next try is compared (0 when it may be tried now)."""
        with self._lock:
            return max(0.0, self.until - self.clock())

    def failed(self) -> float:
        """Record a failure; returns the wait it starts (s)."""
        with self._lock:
            self.failures += 1
            wait = min(self.base_s * 2 ** (self.failures - 1), self.cap_s)
            self.until = self.clock() + wait
            return wait

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.until = 0, -math.inf


THROTTLE = Throttle()
"""The server-wide throttle of unlock tries (shared by every session of this server process)."""


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def check_password(typed: str, secret: str | None, throttle: Throttle = THROTTLE) -> tuple[bool, str]:
    """Compare a typed presenter password with ``secret`` in constant time, through ``throttle``.

    Returns:
        ``(ok, message)``: the message is browser-worded (why it was refused, or that it worked).
    """
    if not secret:
        return False, "No presenter password is configured on this server: presenter mode is off."
    wait = throttle.wait_left()
    if wait > 0:
        return False, f"Too many wrong passwords: try again in {math.ceil(wait)} s."
    if hmac.compare_digest(_digest(str(typed)), _digest(secret)):
        throttle.succeeded()
        return True, "Presenter mode is on for this browser tab: you can fit, rename, delete and mark models."
    wait = throttle.failed()
    return False, f"Wrong password. The next try is possible in {math.ceil(wait)} s."


def unlock(typed: str) -> tuple[bool, str]:
    """Unlock presenter mode for this session when ``typed`` is the configured password
    (:func:`check_password`); returns ``(ok, message)``."""
    ok, message = check_password(typed, presenter_password())
    if ok:
        st.session_state[Keys.PRESENTER] = True
    return ok, message


def lock() -> None:
    """End presenter mode for this session (it is a viewer again on a read-only server)."""
    st.session_state.pop(Keys.PRESENTER, None)


def role_label() -> str:
    """'editor' (server not read-only), 'presenter' (unlocked session) or 'viewer'."""
    if not read_only_server():
        return "editor"
    return "presenter" if is_presenter() else "viewer"
