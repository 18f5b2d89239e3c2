"""Reading a link's query parameters without believing them (pure: no Streamlit calls).

Every value of the view state in a URL (:data:`dashboard.state.URL_KEYS`) is checked before a page
uses it. What cannot be used is dropped, and each drop comes back as one browser-worded reason, which
the dashboard shows in a toast: a link never silently turns into another view or another verdict
(``thr=nan`` used to call every image normal).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

PAIR_PARAMS = {"neuron": "neuron", "cell": "feature cell"}
"""Parameters holding ``row,col`` pairs, and what they name in messages."""


def parse_pair(text: str) -> tuple[int, int]:
    """``"r,c"`` -> ``(r, c)``, both integers >= 0.

    Raises:
        ValueError: not two comma-separated non-negative integers.
    """
    parts = str(text).split(",")
    if len(parts) != 2:
        raise ValueError(text)
    r, c = (int(p.strip()) for p in parts)
    if r < 0 or c < 0:
        raise ValueError(text)
    return r, c


def parse_threshold(text: str) -> float:
    """A link's image threshold: a finite number >= 0 (image scores are distances, never negative).

    Raises:
        ValueError: not a number, NaN, infinite or negative.
    """
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


MAX_REGIONS = 20
"""Most regions a link may ask for (:data:`somad.regions.MAX_REGIONS`; a smaller map caps it on the page)."""


def parse_regions(text: str) -> int:
    """A link's number of map regions: a whole number from 0 (chosen automatically) to :data:`MAX_REGIONS`.

    Raises:
        ValueError: anything else.
    """
    value = int(str(text).strip())
    if not 0 <= value <= MAX_REGIONS:
        raise ValueError(text)
    return value


def _shown(text: str, limit: int = 40) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


PARSERS = {
    "thr": (parse_threshold, lambda key, text: f"threshold {text} is not a finite number ≥ 0: the model's "
                                               "deployable threshold is used"),
    "regions": (parse_regions, lambda key, text: f"number of regions {text} is not a whole number from 0 to "
                                                 f"{MAX_REGIONS}: chosen automatically"),
    **{key: (parse_pair, lambda key, text: f"{PAIR_PARAMS[key]} {text} is not 'row,col': the page picks one")
       for key in PAIR_PARAMS},
}
"""Link parameter -> (parser raising ValueError, the reason it is dropped given the key and the shown
text). Parameters not listed are names, kept as text."""


def parse_link(params: Mapping[str, str], known: Iterable[str]) -> tuple[dict[str, object], list[str]]:
    """Split a link's query parameters into usable values and reasons for what was dropped.

    Args:
        params: query parameter -> text (one value each).
        known: the parameter names the dashboard reads (:data:`dashboard.state.URL_KEYS`).

    Returns:
        ``(values, dropped)``: ``values`` maps each usable parameter to its value (``thr`` a float,
        ``neuron``/``cell`` ``(row, col)`` int pairs, the others stripped text; range and name checks
        that need the model come later, :func:`check_ranges`); ``dropped`` holds one reason per
        value left out.
    """
    known = list(known)
    values: dict[str, object] = {}
    dropped: list[str] = []
    unknown = sorted(k for k in params if k not in set(known))
    if unknown:
        dropped.append("unknown link parameter" + ("s " if len(unknown) > 1 else " ")
                       + ", ".join(_shown(k, 20) for k in unknown) + " ignored")
    for key in known:
        text = params.get(key)
        if text is None or not str(text).strip():
            continue
        text = str(text).strip()
        parse = PARSERS.get(key)
        if parse is None:  # a name (model, image, ...): checked against the model by the caller
            values[key] = text
            continue
        try:
            values[key] = parse[0](text)
        except ValueError:
            dropped.append(parse[1](key, _shown(text)))
    return values, dropped


def check_ranges(values: dict[str, object], grid: tuple[int, int] | None, feature_shape: tuple[int, int] | None,
                 image_names: Iterable[str] | None) -> list[str]:
    """Drop (in place) the link values outside the current model: a neuron off its SOM ``grid``
    (rows, cols), a feature cell off its ``feature_shape`` (h, w), an image not in its test split
    (``image_names``, "<defect>/<file>"). A check whose context is None is skipped.

    Returns:
        one reason per value dropped.
    """
    dropped = []
    for key, shape in (("neuron", grid), ("cell", feature_shape)):
        pair = values.get(key)
        if pair is not None and shape is not None and not (pair[0] < shape[0] and pair[1] < shape[1]):
            dropped.append(f"{PAIR_PARAMS[key]} {pair[0]},{pair[1]} is outside the model's {shape[0]}x{shape[1]} "
                           f"{'SOM' if key == 'neuron' else 'feature map'}: the page picks one")
            del values[key]
    if values.get("image") is not None and image_names is not None and values["image"] not in set(image_names):
        dropped.append(f"image {_shown(values['image'])} is not in this category's test split: the page picks one")
        del values["image"]
    return dropped


def dropped_message(dropped: list[str]) -> str:
    """One toast text for every reason of :func:`parse_link` and :func:`check_ranges`."""
    return "Part of this link was not used: " + "; ".join(dropped) + "."
