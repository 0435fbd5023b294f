"""Disease class from measured phenotypes: a multinomial logistic regression, with the image model as one more voice.

The image model sees one basal slice at three phases and gets a few of ACDC's groups
right; the groups are defined by what the whole segmented heart measures (volumes, EF,
wall thickness and its regional spread: ``measurements.phenotypes``). A linear model on
those standardised features, trained on the ACDC training patients, does what the
challenge's best entries did. The image model's probabilities join by log-linear
pooling, ``log p = log p_phenotypes + w log p_image`` (renormalised), with ``w`` chosen
on the validation patients (0 when the image model does not help).

The classifier is a small JSON file (coefficients, feature means and scales, classes):
numbers only, validated on loading, nothing executed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_json
from ..measurements.phenotypes import PHENOTYPE_FEATURES
from ..weights import WeightsError, read_approved_json, record_in_index

FORMAT = "cmrfm-phenotype-classifier"
FORMAT_VERSION = 1
FILE_NAME = "disease_phenotypes.json"


@dataclass
class PhenotypeClassifier:
    classes: tuple[str, ...]
    features: tuple[str, ...]
    mean: np.ndarray  # [F] feature means (missing features are imputed with them)
    scale: np.ndarray  # [F] feature standard deviations
    coef: np.ndarray  # [C, F] on standardised features
    intercept: np.ndarray  # [C]
    image_model_weight: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # training data, evaluation

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        x = np.where(np.isfinite(x), x, self.mean)  # a feature that cannot be measured counts as average
        return (x - self.mean) / self.scale

    def predict_proba(self, x: np.ndarray, image_probabilities: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities [N, C] of feature rows ``x`` [N, F] (in ``features`` order),
        pooled with the image model's ``image_probabilities`` [N, C] when given."""
        logits = self._standardise(x) @ self.coef.T + self.intercept
        if image_probabilities is not None and self.image_model_weight > 0:
            logits = logits + self.image_model_weight * np.log(np.clip(np.atleast_2d(image_probabilities), 1e-6, 1.0))
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    # -- training ------------------------------------------------------------------------

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], l2: float = 1.0,
            features: tuple[str, ...] = PHENOTYPE_FEATURES, iterations: int = 3000) -> "PhenotypeClassifier":
        """Maximum likelihood with an L2 penalty ``l2 * |coef|^2 / N`` (full-batch gradient descent:
        the problem is convex and has a few dozen rows)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=int)
        mean = np.nanmean(x, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.nanstd(x, axis=0)
        scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
        model = cls(tuple(classes), tuple(features), mean, scale, np.zeros((len(classes), x.shape[1])),
                    np.zeros(len(classes)))
        z = model._standardise(x)
        onehot = np.eye(len(classes))[y]
        n = len(y)
        step = 0.5
        for _ in range(iterations):
            p = model.predict_proba(x)
            error = (p - onehot) / n
            model.coef -= step * (error.T @ z + 2.0 * l2 * model.coef / n)
            model.intercept -= step * error.sum(axis=0)
        return model

    # -- files ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "classes": list(self.classes),
            "features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
            "image_model_weight": float(self.image_model_weight), **self.info,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``FOLDER/disease_phenotypes.json`` and record it in the folder's weights index."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = write_json(Path(folder) / FILE_NAME, self.to_dict())
        record_in_index(folder, FILE_NAME)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "PhenotypeClassifier":
        """The classifier in a weights folder; a clear ValueError (a WeightsError when the file
        is missing, not approved in the folder's index or modified) names the file when it is
        missing, not one of ours, or inconsistent."""
        path = Path(folder) / FILE_NAME
        if not os.path.lexists(path):
            raise WeightsError(f"{path} does not exist")
        return cls.from_dict(read_approved_json(folder, FILE_NAME, "phenotype classifier"), path)

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = FILE_NAME) -> "PhenotypeClassifier":
        """The classifier from its JSON (``to_dict``); a ValueError naming ``path`` when it is
        not one of ours or inconsistent."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a phenotype classifier (format {FORMAT!r} version {FORMAT_VERSION})")
        try:
            classes, features = tuple(map(str, data["classes"])), tuple(map(str, data["features"]))
            arrays = {k: np.asarray(data[k], dtype=float) for k in ("mean", "scale", "coef", "intercept")}
            weight = float(data.get("image_model_weight", 0.0))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: incomplete phenotype classifier ({error})") from None
        c, f = len(classes), len(features)
        shapes = {"mean": (f,), "scale": (f,), "coef": (c, f), "intercept": (c,)}
        for key, shape in shapes.items():
            if arrays[key].shape != shape or not np.isfinite(arrays[key]).all():
                raise ValueError(f"{path}: {key} must be {shape} finite numbers, got {arrays[key].shape}")
        if (arrays["scale"] <= 0).any() or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{path}: feature scales must be positive and the image weight a number >= 0")
        unknown = set(features) - set(PHENOTYPE_FEATURES)
        if unknown:
            raise ValueError(f"{path}: features this version does not measure: {', '.join(sorted(unknown))}")
        info = {k: v for k, v in data.items() if k not in {*shapes, "format", "format_version", "classes", "features",
                                                           "image_model_weight"}}
        return cls(classes, features, arrays["mean"], arrays["scale"], arrays["coef"], arrays["intercept"], weight, info)

    def feature_rows(self, phenotype_values: list[dict[str, float]]) -> np.ndarray:
        """Rows in this classifier's feature order from ``Phenotypes.values`` dicts."""
        return np.array([[v.get(name, math.nan) for name in self.features] for v in phenotype_values], dtype=float)
