"""The training sample every data source yields, and helpers the sources share."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from CMRFoundationLib.tasks import TASKS, TaskSpec


@dataclass
class Sample:
    """One training example of one task, on its native pixel grid.

    ``image`` is float32 [3, H, W] of raw intensities whose channels follow the task's
    input recipe. ``target`` is, for segmentation, uint8 [H, W] in the task's label
    indices; for landmarks, float32 [K, 2] (row, col) pixel coordinates with NaN where a
    point is absent; for classification, the int index of the class in ``task.labels``.
    """

    image: np.ndarray
    spacing: tuple[float, float]  # mm per pixel (row, col)
    target: np.ndarray | int
    case: str  # patient / case id: splits are made per case
    source: str  # "acdc" | "emidec" | "synthetic" | "labels:<folder name>"


def load_image_label_npz(path: str | os.PathLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [S, H, W], label uint8 [S, H, W]) from a repacked ``.npz`` of ../shared/data."""
    try:
        with np.load(path) as data:
            image, label = data["image"].astype(np.float32), data["label"].astype(np.uint8)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from exc
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"{path}: image {image.shape} and label {label.shape} must both be [slices, H, W]")
    return image, label


def select_cases(known, wanted, listing: str | os.PathLike, what: str) -> list[str]:
    """``wanted`` ids (all ``known`` ones, sorted, when None); unknown ids are an error naming ``listing``."""
    selected = sorted(known) if wanted is None else list(wanted)
    missing = [c for c in selected if c not in known]
    if missing:
        raise ValueError(f"{listing}: no such {what}: {', '.join(missing)}")
    return selected


def as_task(task: TaskSpec | str) -> TaskSpec:
    """Accept a task by spec or by name."""
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[task]


def require_task(task: TaskSpec, supported: tuple[str, ...], source: str) -> None:
    """A clear error when a source has no data for ``task``."""
    if task.name not in supported:
        raise ValueError(f"source {source!r} has no data for task {task.name!r}; it supports: {', '.join(supported)}")


def repeat3(image: np.ndarray) -> np.ndarray:
    """The ``single`` recipe: one 2D image as 3 identical channels, float32."""
    image = np.asarray(image, dtype=np.float32)
    return np.repeat(image[None], 3, axis=0)


def remap_labels(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Source label values to task label indices (values not in ``mapping`` become 0)."""
    table = np.zeros(256, dtype=np.uint8)
    for source_value, task_index in mapping.items():
        table[source_value] = task_index
    return table[np.asarray(labels, dtype=np.uint8)]


def base_to_apex(lv_area: np.ndarray) -> list[int]:
    """The labelled slices of a short-axis stack ordered from base to apex, or [] if none.

    ``lv_area`` is the LV (blood pool + myocardium) pixel count per slice. The base is the
    end of the labelled range where the LV is larger (the LV tapers to the apex); the two
    slices at each end are compared so that one small basal slice does not flip it.
    """
    labelled = np.flatnonzero(np.asarray(lv_area) > 0)
    if len(labelled) == 0:
        return []
    first, last = labelled[0], labelled[-1]
    area = np.asarray(lv_area, dtype=float)
    first_end = area[first : first + 2].mean()
    last_end = area[max(last - 1, first) : last + 1].mean()
    ordered = list(range(first, last + 1))
    return [int(k) for k in (ordered if first_end >= last_end else ordered[::-1])]


def lge_levels(image_stack: np.ndarray, ordered: list[int]) -> np.ndarray:
    """The ``lge_levels`` recipe: basal, mid and apical slices of [slices, H, W] as [3, H, W]."""
    picks = [ordered[0], ordered[len(ordered) // 2], ordered[-1]]
    return np.stack([np.asarray(image_stack[k], dtype=np.float32) for k in picks])
