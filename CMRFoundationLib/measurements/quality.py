"""Structural checks of a short-axis segmentation before its volumes are reported.

In the spirit of the UK Biobank pipeline's quality control (W. Bai et al., "Automated
cardiovascular magnetic resonance image analysis with fully convolutional networks",
J Cardiovasc Magn Reson 20:65, 2018): a segmentation whose anatomy is impossible gives
volumes that look like numbers but are not. Each check says what is wrong in words, and
whether it invalidates the volumes: a stack that misses part of the ventricle does, and so
does a fault on a third or more of the slices; a fault on a slice or two is worth a look
but moves a volume by a few percent. An empty list means every check ran and passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..stack import numbered
from .masks import dilate_in_plane
from .volumes import Label, label_mask

MIN_LV_SLICES = 3  # fewer short-axis slices through the LV cannot cover a ventricle (8-10 mm slices)
MAX_OPEN_BORDER = 0.25  # share of the LV blood pool's border that may touch neither myocardium nor itself
MAX_RV_GAP_MM = 10.0  # the RV blood pool lies against the septum; farther means a wrong structure
APEX_AREA_SHARE = 0.5  # LV blood on the apical-most slice at least this share of the largest: apex cut off
WIDESPREAD = 1 / 3  # a fault on at least this share of the slices checked invalidates the volumes


@dataclass(frozen=True)
class StructureProblem:
    text: str
    invalidates_volumes: bool
    slices: tuple[int, ...] = ()  # the slices it was found on (none: the stack as a whole)
    finding: str = ""  # what it is on one of those slices, in a few words


def short_axis_problems(
    labels: np.ndarray,
    pixel_mm: float,
    *,
    lv_blood: Label,
    lv_myocardium: Label,
    rv_blood: Label | None = None,
    basal_end: str | None = None,
) -> list[StructureProblem]:
    """What is anatomically wrong with one frame's short-axis labels ``[slices, rows, cols]``.

    The closed-myocardium check spares the two end slices of the LV: the outflow tract opens
    the ring at the base, and the apical cap is mostly partial volume. ``basal_end``
    ("first"/"last", None when unknown) locates the apex for the coverage check.
    """
    labels = np.asarray(labels)
    blood, myocardium = label_mask(labels, lv_blood), label_mask(labels, lv_myocardium)
    with_lv = np.flatnonzero(blood.any(axis=(1, 2)))
    problems: list[StructureProblem] = []
    if len(with_lv) < MIN_LV_SLICES:
        problems.append(StructureProblem(f"the LV blood pool is found on {len(with_lv)} short-axis slice(s), fewer "
                                         f"than the {MIN_LV_SLICES} that cover a ventricle", True))
        return problems
    basal = {"first": with_lv[0], "last": with_lv[-1]}.get(basal_end)
    spared = {with_lv[0], with_lv[-1]}

    open_slices, checked = [], [k for k in with_lv if k not in spared]
    for k in checked:
        border = blood[k] & dilate_in_plane(~blood[k])
        open_border = blood[k] & dilate_in_plane(~(blood[k] | myocardium[k]))
        if border.any() and open_border.sum() > MAX_OPEN_BORDER * border.sum():
            open_slices.append(int(k))
    if open_slices:
        problems.append(StructureProblem(f"the myocardium does not close around the LV blood pool on slice(s) "
                                         f"{numbered(open_slices)} (more than {MAX_OPEN_BORDER:.0%} of its border open)",
                                         len(open_slices) >= WIDESPREAD * max(1, len(checked)), tuple(open_slices),
                                         "myocardium not closed around the LV blood pool"))

    if rv_blood is not None:
        rv = label_mask(labels, rv_blood)
        reach = max(1, math.ceil(MAX_RV_GAP_MM / pixel_mm))
        near = dilate_in_plane(myocardium, radius=reach)  # box: within reach along rows and columns
        both = np.flatnonzero(rv.any(axis=(1, 2)) & myocardium.any(axis=(1, 2)))
        far = [int(k) for k in both if not (near[k] & rv[k]).any()]
        if far:
            problems.append(StructureProblem(f"the RV blood pool lies more than {MAX_RV_GAP_MM:g} mm from the LV "
                                             f"myocardium on slice(s) {numbered(far)}: not where an RV can be",
                                             len(far) >= WIDESPREAD * len(both), tuple(far),
                                             f"RV blood pool more than {MAX_RV_GAP_MM:g} mm from the LV myocardium"))

    if basal is not None:
        apical = with_lv[-1] if basal == with_lv[0] else with_lv[0]
        areas = blood.sum(axis=(1, 2))
        edge = 0 if apical == with_lv[0] else labels.shape[0] - 1
        if apical == edge and areas[apical] >= APEX_AREA_SHARE * areas.max():
            problems.append(StructureProblem(f"the LV blood pool is still {areas[apical] / areas.max():.0%} of its "
                                             "largest area on the last slice towards the apex: the stack ends "
                                             "before the apex, so volumes are too small", True))
    return problems
