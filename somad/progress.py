"""Progress reporting: the declared stages of fit, evaluation and prediction.

Long workflows report ``progress(stage, done, total)`` to an optional callback;
``stage`` is a :class:`Stage` (a ``str`` enum, so it prints and compares as its
value). Each stage declares the unit it counts, which progress bars show.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable


class Stage(str, Enum):
    """A stage of a workflow; ``unit`` is what ``done`` and ``total`` count."""

    LOAD_TRAIN = "load train"
    FEATURES = "features"
    SOM = "som"
    GAUSSIANS = "gaussians"
    THRESHOLD = "threshold"
    LOAD_TEST = "load test"
    SCORE = "score"
    METRICS = "metrics"
    PREDICT = "predict"

    @property
    def unit(self) -> str:
        return _UNITS.get(self, "img")

    def __str__(self) -> str:
        return self.value


_UNITS = {Stage.SOM: "epoch", Stage.GAUSSIANS: "step", Stage.THRESHOLD: "fold", Stage.METRICS: "curve"}

Progress = Callable[[Stage, int, int], None]
"""Progress callback: ``progress(stage, done, total)``."""


def for_stage(progress: Progress | None, stage: Stage) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback bound to ``stage``, or None without a callback."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def counter(progress: Progress | None, stage: Stage, total: int) -> Callable[[int], None] | None:
    """A callback that adds ``k`` items done at each call and reports the running count."""
    if progress is None:
        return None
    state = {"done": 0}

    def step(k: int) -> None:
        state["done"] += k
        progress(stage, state["done"], total)

    return step
