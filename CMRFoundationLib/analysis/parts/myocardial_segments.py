"""The AHA segments of the short-axis cine at end-diastole: RV insertion points (the
segmentation's contact arc first, the heatmap model in the gaps), the 16 segments from
them, and segmental wall thickness."""

from __future__ import annotations

import numpy as np
from pydicom.sr.coding import Code

from ...measurements import aha_segments, segmental_wall_thickness
from ...measurements import plausibility as plausible
from ...measurements.insertion_points import joined_insertion_points, stack_insertion_points
from ...stack import ImageStack, numbered
from ...tasks import MIN_LANDMARK_CONFIDENCE
from .. import results as r
from ..geometry import one_frame
from ..results import LabelMap, PartResult
from .context import Context, MeasurementSpec, PartSkipped, PartSpec, indices
from .helpers import AHA_LABEL_NAMES, insertion_points_json


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    sax = ctx.need_sax()
    if sax.reference is None:
        raise PartSkipped("the base of the short-axis stack could not be told from the apex")
    lv, myo, rv = indices(sax.label_names, "lv_blood_pool", "lv_myocardium", "rv_blood_pool")
    ed = sax.ed_frame
    ed_labels = sax.labels[:, ed]
    landmarks = ctx.predict("rv_insertion", one_frame(stack, ed))
    confidence = landmarks.confidence[:, 0]
    from_segmentation = stack_insertion_points(ed_labels, lv_blood=lv, lv_myocardium=myo, rv_blood=rv)
    points, source = joined_insertion_points(from_segmentation, landmarks.points_rc[:, 0])
    with_lv = (ed_labels == myo).any(axis=(1, 2))
    points[~with_lv] = np.nan  # the model also answers on slices beyond the heart
    source[~with_lv] = ""
    weak = [int(k) for k in np.flatnonzero(with_lv)
            if ((source[k] == "") | ((source[k] == "heatmap") & (confidence[k] < MIN_LANDMARK_CONFIDENCE))).any()]
    if weak:
        ctx.flag("warning", r.LOW_CONFIDENCE, f"RV insertion point not found or below confidence "
                 f"{MIN_LANDMARK_CONFIDENCE} in slice(s) {numbered(weak)}: those slices borrow the segment angles of the "
                 "nearest slice", part.series, part.name)
    aha = aha_segments(ed_labels, stack.ijk_to_lps, points, basal_end=sax.basal_end, lv_blood=lv,
                       lv_myocardium=myo, rv_blood=rv)
    thickness = segmental_wall_thickness(ed_labels, stack.ijk_to_lps, aha, lv_myocardium=myo)
    sax.reference.insertion_lps = stack.pixel_points_to_lps(points)

    part.notes += aha.warnings
    part.results = {"frame": ed, "basal_end": aha.basal_end,
                    "insertion_points": insertion_points_json(stack, points, confidence, with_lv, source),
                    "aha": aha.to_dict(), "wall_thickness": thickness.to_dict()}
    for segment in thickness.segments:
        part.measure("wall_thickness", segment.mean_mm, segment=segment.segment, frame=ed)
    part.label_maps.append(LabelMap("aha_segments_ed", aha.segments[:, None], AHA_LABEL_NAMES, frames=[ed]))


PART = PartSpec(
    name="myocardial_segments",
    title="AHA segments and wall thickness",
    role="cine_sax",
    run=run,
    progress_weight=0.7,
    measurements=(
        MeasurementSpec("wall_thickness", "mm", "End-diastolic wall thickness", 1,
                        Code("122445", "DCM", "Wall Thickness"), "lv_myocardium",
                        plausible=plausible.WALL_THICKNESS),
    ),
)
