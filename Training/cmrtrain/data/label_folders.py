"""Samples from label folders (corrections exported from Slicer; format in CMRFoundationLib.label_folder).

Per case, by task kind:

- segmentation: every slice with any label (a slice the user left empty may simply not
  have been corrected, so it is not taken as background);
- landmarks: every slice with at least one point, LPS converted to (row, col) on that
  slice (NaN for a point the slice lacks); a point off its slice's plane is an error;
- classification: ``single`` tasks one sample per slice; ``lge_levels`` the 3 stored
  slices (basal, mid, apical) as channels; ``basal_frames`` the 3 stored frames.

Samples are named ``<folder name>/<case id>`` and their source is
``labels:<folder name>``.
"""

from __future__ import annotations

import os

import numpy as np

from CMRFoundationLib.label_folder import LabelCase, LabelFolder, LabelFolderError, read_label_folder
from CMRFoundationLib.stack import ImageStack
from CMRFoundationLib.tasks import CLASSIFICATION, INPUT_BASAL_FRAMES, INPUT_LGE_LEVELS, SEGMENTATION, TaskSpec

from .sample import Sample, as_task, repeat3


def label_folder_samples(task: TaskSpec | str, folder: str | os.PathLike) -> list[Sample]:
    """Samples of ``task`` from one label folder; the folder must hold that task."""
    task = as_task(task)
    labels = read_label_folder(folder)
    if labels.task != task.name:
        raise LabelFolderError(f"{labels.dataset_path}: holds task {labels.task!r}, not {task.name!r}")
    samples: list[Sample] = []
    for case in labels.cases:
        samples += case_samples(labels, case)
    return samples


def case_samples(labels: LabelFolder, case: LabelCase) -> list[Sample]:
    """The samples of one case of a label folder."""
    task = labels.spec
    stack, label = labels.load_case(case)
    spacing = (float(stack.spacing[1]), float(stack.spacing[0]))  # (row, col)
    name = f"{labels.folder.name}/{case.id}"
    source = f"labels:{labels.folder.name}"
    pixels = stack.pixels

    if task.kind == SEGMENTATION:
        return [Sample(repeat3(pixels[k, 0]), spacing, label[k], name, source)
                for k in range(len(label)) if label[k].any()]
    if task.kind == CLASSIFICATION:
        target = task.labels.index(case.class_name)
        if task.input == INPUT_LGE_LEVELS:
            return [Sample(pixels[:, 0].astype(np.float32), spacing, target, name, source)]
        if task.input == INPUT_BASAL_FRAMES:
            return [Sample(pixels[0].astype(np.float32), spacing, target, name, source)]
        return [Sample(repeat3(pixels[k, 0]), spacing, target, name, source) for k in range(len(pixels))]
    points = _landmarks_on_slices(labels, case, stack)
    return [Sample(repeat3(pixels[k, 0]), spacing, points[k], name, source)
            for k in range(len(pixels)) if np.isfinite(points[k]).any()]


def _landmarks_on_slices(labels: LabelFolder, case: LabelCase, stack: ImageStack) -> np.ndarray:
    """float32 [slices, K, 2] (row, col) per slice, NaN where a point is absent."""
    names = labels.spec.labels
    n_slices = stack.n_slices
    points = np.full((n_slices, len(names), 2), np.nan, dtype=np.float32)
    for p, name in enumerate(names):
        per_slice = case.landmarks.get(name, [None] * n_slices)
        if len(per_slice) != n_slices:
            raise LabelFolderError(
                f"{labels.dataset_path}: case {case.id!r}: landmarks[{name!r}] has {len(per_slice)} entries for {n_slices} slices"
            )
        for k, lps in enumerate(per_slice):
            if lps is None:
                continue
            i, j, kk = stack.lps_to_ijk_points(lps)[0]
            if abs(kk - k) > 0.5:
                raise LabelFolderError(
                    f"{labels.dataset_path}: case {case.id!r}: {name} of slice {k} lies {abs(kk - k) * stack.spacing[2]:.1f} mm off that slice"
                )
            points[k, p] = (j, i)
    return points
