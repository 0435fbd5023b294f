"""LGE present or absent from two voices: the lge_presence model and the enhanced extent.

The model sees three slices; the n-SD extent (``measurements.lge_extent``) sees every
pixel of the segmented myocardium. The extent becomes a probability by a logistic curve
``p = 1 / (1 + exp(-(extent - midpoint) / width))`` fitted on labelled cases
(``Training/evaluate_lge_presence.py``), and the call is the mean of the two
probabilities. The curve is a small JSON file beside the weights: numbers only,
validated on loading, nothing executed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import read_json, write_json

FORMAT = "cmrfm-lge-presence-rule"
FORMAT_VERSION = 1
FILE_NAME = "lge_presence_rule.json"


@dataclass(frozen=True)
class LgePresenceRule:
    midpoint_percent: float  # extent (% of LV myocardium) at which the extent alone says 50 %
    width_percent: float  # how many percent of extent move the odds by a factor e
    source: str = ""

    def extent_probability(self, extent_percent: float) -> float:
        z = (float(extent_percent) - self.midpoint_percent) / self.width_percent
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def combined(self, model_p_present: float | None, extent_percent: float | None) -> float:
        """P(present) from whichever voices are there (the mean of the two when both are)."""
        voices = [float(model_p_present)] if model_p_present is not None else []
        if extent_percent is not None and math.isfinite(extent_percent):
            voices.append(self.extent_probability(extent_percent))
        if not voices:
            raise ValueError("neither the presence model nor the extent is available")
        return float(np.mean(voices))

    def describe(self) -> str:
        return f"50 % at {self.midpoint_percent:.1f} % of the myocardium, width {self.width_percent:.2f} %"

    # -- files ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "midpoint_percent": self.midpoint_percent,
                "width_percent": self.width_percent, "source": self.source}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "LgePresenceRule":
        """The rule in a weights folder; a ValueError names the file when it is missing or not one of ours."""
        path = Path(folder) / FILE_NAME
        data = read_json(path, "LGE presence rule")
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not an LGE presence rule (format {FORMAT!r} version {FORMAT_VERSION})")
        try:
            midpoint, width = float(data["midpoint_percent"]), float(data["width_percent"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: incomplete LGE presence rule ({error})") from None
        if not (math.isfinite(midpoint) and math.isfinite(width) and width > 0 and 0 <= midpoint <= 100):
            raise ValueError(f"{path}: the midpoint must be 0-100 % and the width a positive number")
        return cls(midpoint, width, str(data.get("source", "")))


def fit_extent_curve(extent_percent: list[float], present: list[bool], l2: float = 0.1,
                     iterations: int = 5000) -> tuple[float, float]:
    """(midpoint, width) of the logistic curve of presence on extent, by penalised maximum
    likelihood (gradient descent on the standardised extent: one feature, a few dozen cases)."""
    x = np.asarray(extent_percent, dtype=float)
    y = np.asarray(present, dtype=float)
    if len(x) < 4 or y.min() == y.max():
        raise ValueError("need at least four cases with both classes to fit the extent curve")
    mean, scale = x.mean(), max(x.std(), 1e-6)
    z = (x - mean) / scale
    a = b = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        a -= 0.5 * (np.mean((p - y) * z) + l2 * a / len(x))
        b -= 0.5 * np.mean(p - y)
    if a <= 1e-6:
        raise ValueError("more extent does not mean more often present in these cases: no curve to fit")
    width = scale / a
    return float(mean - b * width), float(width)
