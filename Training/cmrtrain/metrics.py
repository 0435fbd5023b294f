"""Evaluation metrics: Dice and HD95 per class, accuracy per class, landmark error in mm.

Dice and HD95 agree with MONAI's DiceMetric and compute_hausdorff_distance(percentile=95) except
for a class absent from both masks (Dice NaN here, 1.0 there): Testing/Python/test_metrics_vs_monai.py.
"""

from __future__ import annotations

import numpy as np


def dice_per_class(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of classes 1..n-1; NaN where a class is absent from both (it says nothing then)."""
    scores = np.full(n_classes - 1, np.nan)
    for c in range(1, n_classes):
        p, t = predicted == c, truth == c
        total = p.sum() + t.sum()
        if total:
            scores[c - 1] = 2.0 * np.logical_and(p, t).sum() / total
    return scores


def hd95_per_class(predicted: np.ndarray, truth: np.ndarray, n_classes: int, spacing: tuple[float, ...]) -> np.ndarray:
    """95th-percentile Hausdorff distance (mm) of classes 1..n-1 on a 2D or 3D grid.

    Symmetric, as usual: the larger of the two directed 95th percentiles of the distances
    between the boundaries. NaN where either side lacks the class (undefined, not zero).
    """
    scores = np.full(n_classes - 1, np.nan)
    for c in range(1, n_classes):
        p, t = predicted == c, truth == c
        if p.any() and t.any():
            p_edge, t_edge = _boundary(p), _boundary(t)
            to_truth = _distance_to(t_edge, spacing)[p_edge]
            to_predicted = _distance_to(p_edge, spacing)[t_edge]
            scores[c - 1] = max(np.percentile(to_truth, 95), np.percentile(to_predicted, 95))
    return scores


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a face neighbour outside it (the image edge counts as outside).

    numpy, not the SimpleITK erosion of measurements.masks: this runs on the GPU image,
    which has no SimpleITK (see _distance_to).
    """
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return mask & ~inner


def _distance_to(edge: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Euclidean distance (mm) of every pixel to the nearest ``edge`` pixel (an exact transform:
    SimpleITK's, or SciPy's on a training machine without SimpleITK, e.g. a GPU image)."""
    try:
        import SimpleITK as sitk
    except ImportError:
        from scipy.ndimage import distance_transform_edt

        return distance_transform_edt(~edge.astype(bool), sampling=spacing)
    image = sitk.GetImageFromArray(edge.astype(np.uint8))
    image.SetSpacing([float(v) for v in reversed(spacing)])  # numpy (row, col) -> ITK (x, y)
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.abs(sitk.GetArrayFromImage(distance))


def classification_summary(predicted: np.ndarray, truth: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Overall and per-class accuracy (= recall of each class) and the confusion matrix."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {
        name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None) for i, name in enumerate(labels)
    }
    return {
        "n": int(len(truth)),
        "accuracy": float((predicted == truth).mean()) if len(truth) else None,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
    }


def landmark_errors_mm(predicted: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Euclidean error per point in mm for (row, col) pixel points [..., K, 2]; NaN where truth is absent."""
    delta = (np.asarray(predicted, float) - np.asarray(truth, float)) * np.asarray(spacing, float)
    return np.sqrt((delta**2).sum(axis=-1))


def summarize_values(values: np.ndarray) -> dict:
    """Mean, SD, median and count of the finite values."""
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return {"n": 0, "mean": None, "sd": None, "median": None}
    return {"n": int(finite.size), "mean": float(finite.mean()), "sd": float(finite.std()), "median": float(np.median(finite))}
