"""Samples from ACDC (cine short axis, ED and ES, with segmentations; ../shared/data/acdc).

Data facts this module relies on (see the data README): ``patientNNN_ED.npz`` and
``patientNNN_ES.npz`` hold ``image`` (float16 0..1, [slices, H, W]) and ``label`` (0 bg,
1 RV blood, 2 LV myocardium, 3 LV blood); ``patients.json`` gives each patient's disease
group. No pixel spacing survives the pre-processing, so every sample gets the assumed
``spacing_mm`` (ACDC's true in-plane spacing is 1.37-1.68 mm; scale augmentation absorbs
the difference). Slice 0 is the most basal slice (checked on the labels: the LV is
larger at slice 0's end of the labelled range in 173 of the 174 volumes, the other being
a near tie at ES).

What each task takes:

- seg_sax_cine: every slice of ED and ES, also the few slices without any label (above
  the base, below the apex: ACDC leaves them unlabelled, so they are background).
- rv_insertion: ED and ES slices where the points can be derived from the labels (see
  rv_insertion.py); slices without a clean RV/LV contact arc are skipped (1329 of the
  1342 slices with RV and myocardium give points).
- image_type ("cine") and cine_view ("sax"): every slice of ED and ES.
- disease: one sample per patient: the most basal slice whose ED label has LV blood pool
  and myocardium, channels ED, mean(ED, ES), ES; class from patients.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from CMRFoundationLib.measurements.insertion_points import rv_insertion_points
from CMRFoundationLib.tasks import CINE_VIEWS, DISEASES, IMAGE_TYPES, TaskSpec

from .sample import Sample, as_task, load_image_label_npz, remap_labels, repeat3, require_task, select_cases

ACDC_TASKS = ("seg_sax_cine", "rv_insertion", "image_type", "cine_view", "disease")
PHASES = ("ED", "ES")

# ACDC label -> seg_sax_cine index (background, lv_blood_pool, lv_myocardium, rv_blood_pool).
SEG_LABELS = {1: 3, 2: 2, 3: 1}
RV_BLOOD, LV_MYOCARDIUM, LV_BLOOD = 1, 2, 3


def acdc_patients(root: str | os.PathLike) -> dict[str, str]:
    """Patient id -> disease group, from ``root/patients.json``."""
    path = Path(root) / "patients.json"
    try:
        patients = json.loads(path.read_text())
        groups = {pid: entry["group"] for pid, entry in patients.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: cannot read the ACDC patient list ({exc})") from exc
    unknown = {g for g in groups.values() if g not in DISEASES}
    if unknown:
        raise ValueError(f"{path}: unknown disease group(s) {sorted(unknown)}; expected {', '.join(DISEASES)}")
    return groups


def load_acdc_phase(root: str | os.PathLike, patient: str, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [S, H, W], label uint8 [S, H, W]) of one patient at ED or ES."""
    return load_image_label_npz(Path(root) / f"{patient}_{phase}.npz", "ACDC volume")


def acdc_samples(
    task: TaskSpec | str, root: str | os.PathLike, patients: Iterable[str] | None = None, spacing_mm: float = 1.5
) -> list[Sample]:
    """Samples of ``task`` from the ACDC folder ``root`` (all patients, or ``patients``)."""
    task = as_task(task)
    require_task(task, ACDC_TASKS, "acdc")
    groups = acdc_patients(root)
    selected = select_cases(groups, patients, Path(root) / "patients.json", "patient(s)")
    spacing = (float(spacing_mm), float(spacing_mm))
    samples: list[Sample] = []
    for patient in selected:
        volumes = {phase: load_acdc_phase(root, patient, phase) for phase in PHASES}
        samples += _patient_samples(task, patient, groups[patient], volumes, spacing)
    return samples


def _patient_samples(task: TaskSpec, patient: str, group: str, volumes: dict, spacing) -> list[Sample]:
    def sample(image, target) -> Sample:
        return Sample(image, spacing, target, patient, "acdc")

    if task.name == "disease":
        (ed_image, ed_label), (es_image, _) = volumes["ED"], volumes["ES"]
        basal = next((k for k in range(len(ed_label))
                      if (ed_label[k] == LV_BLOOD).any() and (ed_label[k] == LV_MYOCARDIUM).any()), None)
        if basal is None:
            return []
        image = np.stack([ed_image[basal], (ed_image[basal] + es_image[basal]) / 2, es_image[basal]])
        return [sample(image, DISEASES.index(group))]

    samples = []
    for image, label in volumes.values():
        for k in range(len(image)):
            if task.name == "seg_sax_cine":
                samples.append(sample(repeat3(image[k]), remap_labels(label[k], SEG_LABELS)))
            elif task.name == "image_type":
                samples.append(sample(repeat3(image[k]), IMAGE_TYPES.index("cine")))
            elif task.name == "cine_view":
                samples.append(sample(repeat3(image[k]), CINE_VIEWS.index("sax")))
            elif task.name == "rv_insertion":
                points = rv_insertion_points(np.isin(label[k], (LV_MYOCARDIUM, LV_BLOOD)), label[k] == RV_BLOOD)
                if points is not None:
                    samples.append(sample(repeat3(image[k]), points))
    return samples
