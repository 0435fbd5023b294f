"""Samples from EMIDEC (LGE short axis with myocardium / infarct labels; ../shared/data/emidec).

Data facts this module relies on (see the data README): ``Case_XNNN.npz`` holds
``image`` (uint8, [slices, 256, 256]) and ``label`` (0 bg, 1 LV cavity, 2 myocardium,
3 infarct, 4 MVO); ``cases.json`` gives ``lge_present`` per case. No pixel spacing
survives, so every sample gets the assumed ``spacing_mm``. Slices run from apex to base
here (the LV is smaller at slice 0 in all 80 cases); the LGE levels are ordered by that
rule (``base_to_apex``), not by index, so a reversed case would still come out right.

What each task takes:

- seg_lge: every slice; cavity -> lv_blood_pool, myocardium, infarct and MVO ->
  lv_myocardium.
- lge_presence: one sample per case: basal, mid and apical slices of the labelled LV
  range as the three channels; class from cases.json.
- image_type ("lge"): every slice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from CMRFoundationLib.tasks import IMAGE_TYPES, TaskSpec

from .sample import (
    Sample,
    as_task,
    base_to_apex,
    lge_levels,
    load_image_label_npz,
    remap_labels,
    repeat3,
    require_task,
    select_cases,
)

EMIDEC_TASKS = ("seg_lge", "lge_presence", "image_type")

# EMIDEC label -> seg_lge index (background, lv_blood_pool, lv_myocardium).
SEG_LABELS = {1: 1, 2: 2, 3: 2, 4: 2}


def emidec_cases(root: str | os.PathLike) -> dict[str, bool]:
    """Case id -> LGE present, from ``root/cases.json``."""
    path = Path(root) / "cases.json"
    try:
        cases = json.loads(path.read_text())
        return {cid: bool(entry["lge_present"]) for cid, entry in cases.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: cannot read the EMIDEC case list ({exc})") from exc


def load_emidec_case(root: str | os.PathLike, case: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [S, H, W], label uint8 [S, H, W]) of one case."""
    return load_image_label_npz(Path(root) / f"{case}.npz", "EMIDEC case")


def emidec_samples(
    task: TaskSpec | str, root: str | os.PathLike, cases: Iterable[str] | None = None, spacing_mm: float = 1.5
) -> list[Sample]:
    """Samples of ``task`` from the EMIDEC folder ``root`` (all cases, or ``cases``)."""
    task = as_task(task)
    require_task(task, EMIDEC_TASKS, "emidec")
    present = emidec_cases(root)
    selected = select_cases(present, cases, Path(root) / "cases.json", "case(s)")
    spacing = (float(spacing_mm), float(spacing_mm))
    samples: list[Sample] = []
    for case in selected:
        image, label = load_emidec_case(root, case)
        if task.name == "lge_presence":
            ordered = base_to_apex((label > 0).sum(axis=(1, 2)))
            if ordered:
                samples.append(Sample(lge_levels(image, ordered), spacing, int(present[case]), case, "emidec"))
            continue
        for k in range(len(image)):
            target = remap_labels(label[k], SEG_LABELS) if task.name == "seg_lge" else IMAGE_TYPES.index("lge")
            samples.append(Sample(repeat3(image[k]), spacing, target, case, "emidec"))
    return samples
