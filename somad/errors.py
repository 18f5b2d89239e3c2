"""Exception types raised by somad.

Every error carries a message that names the offending file or parameter and
says what to do about it; the CLI prints the message and exits non-zero, the
dashboard shows it with ``st.error``.
"""


class SomadError(Exception):
    """Base class of every error somad raises on bad input."""


class DataError(SomadError):
    """A dataset root, category, image or mask is missing or unusable."""


class BackboneError(SomadError):
    """A backbone name is unknown or its pretrained weights cannot be had."""


class ModelFileError(SomadError):
    """A model directory is missing, incomplete, tampered or of another format."""


class OutputError(SomadError):
    """An output path that cannot be written (a file where a folder is needed, no permission, ...)."""


class ResourceError(SomadError):
    """Free disk or memory cannot hold the work asked for (the message names the figure needed)."""


class ParameterError(SomadError, ValueError):
    """A hyperparameter or option has a value that cannot work (named in the message)."""


class NotFittedError(SomadError, ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Also a ``ValueError`` and an ``AttributeError``, like scikit-learn's, so code
    written for scikit-learn estimators catches it.
    """
