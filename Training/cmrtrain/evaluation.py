"""Evaluation of a task on held-out samples, on native pixels, through the inference code.

Anything with ``predict_images(images [N, 3, H, W], spacing) -> ImagePredictions`` can be
evaluated: our models (TaskPredictor), the ResNet50 baseline (also a TaskPredictor, from
its own weights folder) and the myopari ONNX models (baselines/myopari.py). All see the
same samples of the same split, so their numbers compare directly.

Segmentation is scored per case: the slices of a case (ED and ES of a patient, or one
LGE stack) are pooled into one Dice per class, as a 3D Dice would; HD95 is per slice
(the data carry no slice spacing) and averaged.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from CMRFoundationLib.tasks import CLASSIFICATION, LANDMARKS, SEGMENTATION, TaskSpec

from .data import Sample
from .metrics import classification_summary, hd95_per_class, landmark_errors_mm, summarize_values


def _batches(samples: list[Sample], batch_size: int):
    """Consecutive samples of one case sharing shape and spacing: one pre-processing grid
    serves a batch, and per-volume methods (myopari normalises a whole stack) see one case."""
    batch: list[Sample] = []
    for sample in samples:
        if batch and (len(batch) == batch_size or sample.image.shape != batch[0].image.shape
                      or sample.spacing != batch[0].spacing or sample.case != batch[0].case):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


def evaluate(task: TaskSpec, predictor, samples: list[Sample], batch_size: int = 16) -> dict:
    """The task's metrics for ``predictor`` on ``samples``."""
    if not samples:
        raise ValueError(f"task {task.name}: nothing to evaluate (no samples)")
    predictions = []
    for batch in _batches(samples, batch_size):
        result = predictor.predict_images(np.stack([s.image for s in batch]), batch[0].spacing)
        for i, sample in enumerate(batch):
            predictions.append((sample, result, i))
    if task.kind == SEGMENTATION:
        return _segmentation_report(task, predictions)
    if task.kind == LANDMARKS:
        errors = np.stack([landmark_errors_mm(r.points[i], s.target, s.spacing) for s, r, i in predictions])
        missed = np.stack([np.isnan(r.points[i]).any(-1) & ~np.isnan(s.target).any(-1) for s, r, i in predictions])
        return {
            "n_images": len(predictions),
            "error_mm": {name: summarize_values(errors[:, k]) for k, name in enumerate(task.labels)},
            "error_mm_all": summarize_values(errors),
            "not_found": {name: int(missed[:, k].sum()) for k, name in enumerate(task.labels)},
        }
    predicted = [int(np.argmax(r.probabilities[i])) for _, r, i in predictions]
    return classification_summary(np.array(predicted), np.array([int(s.target) for s, _, _ in predictions]), task.labels)


def _segmentation_report(task: TaskSpec, predictions) -> dict:
    n = task.n_outputs
    overlap = defaultdict(lambda: np.zeros((n - 1, 2)))  # case -> per class [2|P∩T|, |P|+|T|]
    hd95 = []
    for sample, result, i in predictions:
        predicted, truth = result.labels[i], sample.target
        for c in range(1, n):
            p, t = predicted == c, truth == c
            overlap[sample.case][c - 1] += (2 * np.logical_and(p, t).sum(), p.sum() + t.sum())
        hd95.append(hd95_per_class(predicted, truth, n, sample.spacing))
    per_case = np.array([np.where(v[:, 1] > 0, v[:, 0] / np.maximum(v[:, 1], 1), np.nan) for v in overlap.values()])
    hd95 = np.array(hd95)
    names = task.labels[1:]
    return {
        "n_cases": len(overlap),
        "n_images": len(predictions),
        "dice": {name: summarize_values(per_case[:, k]) for k, name in enumerate(names)},
        "mean_dice": float(np.nanmean(per_case)),
        "hd95_mm": {name: summarize_values(hd95[:, k]) for k, name in enumerate(names)},
    }


def markdown_table(task: TaskSpec, results: dict[str, dict]) -> str:
    """One row per method, one column per class, for the results file."""
    if task.kind == SEGMENTATION:
        names = task.labels[1:]
        head = "| method | cases | " + " | ".join(f"Dice {n}" for n in names) + " | mean Dice | " + \
            " | ".join(f"HD95 {n} (mm)" for n in names) + " |"
        rows = [head, "|" + "---|" * (3 + 2 * len(names))]
        for method, r in results.items():
            dice = " | ".join(_fmt(r["dice"][n]["mean"], r["dice"][n]["sd"]) for n in names)
            hd = " | ".join(_fmt(r["hd95_mm"][n]["mean"], r["hd95_mm"][n]["sd"], 1) for n in names)
            rows.append(f"| {method} | {r['n_cases']} | {dice} | {r['mean_dice']:.3f} | {hd} |")
        return "\n".join(rows)
    if task.kind == LANDMARKS:
        rows = ["| method | images | " + " | ".join(f"{n} error (mm)" for n in task.labels) + " | not found |",
                "|" + "---|" * (3 + len(task.labels))]
        for method, r in results.items():
            errors = " | ".join(_fmt(r["error_mm"][n]["mean"], r["error_mm"][n]["sd"], 1) for n in task.labels)
            rows.append(f"| {method} | {r['n_images']} | {errors} | {sum(r['not_found'].values())} |")
        return "\n".join(rows)
    rows = ["| method | n | accuracy | " + " | ".join(task.labels) + " |", "|" + "---|" * (3 + len(task.labels))]
    for method, r in results.items():
        per_class = " | ".join("-" if r["per_class_accuracy"][n] is None else f"{r['per_class_accuracy'][n]:.2f}"
                               for n in task.labels)
        rows.append(f"| {method} | {r['n']} | {r['accuracy']:.3f} | {per_class} |")
    return "\n".join(rows)


def _fmt(mean, sd, digits: int = 3) -> str:
    return "-" if mean is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def write_results(out: str | Path, task: TaskSpec, results: dict[str, dict], meta: dict) -> Path:
    """OUT/<task>.json and OUT/<task>.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task.name}.json").write_text(json.dumps({"task": task.name, **meta, "results": results}, indent=1))
    lines = [f"# {task.title} ({task.name})", "", *(f"- {k}: {v}" for k, v in meta.items()), "", markdown_table(task, results), ""]
    (out / f"{task.name}.md").write_text("\n".join(lines))
    return out / f"{task.name}.md"


def kind_metric(task: TaskSpec, result: dict) -> tuple[str, float]:
    """The single headline number of a result (for manifests and summaries)."""
    if task.kind == SEGMENTATION:
        return "mean_dice", result["mean_dice"]
    if task.kind == LANDMARKS:
        return "mean_error_mm", result["error_mm_all"]["mean"]
    assert task.kind == CLASSIFICATION
    return "accuracy", result["accuracy"]
