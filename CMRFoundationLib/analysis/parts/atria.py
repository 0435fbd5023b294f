"""Atria on the 4-chamber cine: segment it; atrial areas, lengths and area-length volumes
over the cycle. Its segmentation gives the function part its valve planes, so it runs first."""

from __future__ import annotations

import numpy as np
from pydicom.sr.coding import Code

from ...measurements import atria_over_cine
from ...measurements import plausibility as plausible
from ...measurements.volumes import pixel_area_mm2
from ...stack import ImageStack, numbered
from ..results import LabelMap, PartResult
from .context import Context, FourChamberState, MeasurementSpec, PartSpec, indices
from .helpers import record_certainty


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    prediction = ctx.predict("seg_4ch_cine", stack)
    lv, la, ra = indices(prediction.task.labels, "lv_blood_pool", "la_blood_pool", "ra_blood_pool")
    plane_index = stack.n_slices // 2
    if stack.n_slices > 1:
        part.notes.append(f"{stack.n_slices} slices: the middle one (slice {numbered(plane_index)}) is measured")
    plane = prediction.labels[plane_index]  # [frames, rows, cols]
    four = ctx.shared.four_chamber = FourChamberState(stack, plane_index, plane, prediction.task.labels)
    atria = atria_over_cine(plane, stack.spacing, la=la, ra=ra, lv=lv)
    lv_area_cm2 = (plane == lv).sum(axis=(1, 2)) * pixel_area_mm2(stack.ijk_to_lps) / 100
    ed, es = four.ed_frame, int(np.argmin(lv_area_cm2))
    part.results = {"slice": plane_index, "ed_frame": ed, "es_frame": es,
                    "lv_area_cm2": [round(float(a), 3) for a in lv_area_cm2], **atria.to_dict()}
    record_certainty(ctx, part, prediction)
    for name, atrium in (("la", atria.la), ("ra", atria.ra)):
        at_max = atrium.at_max
        if at_max is None:
            part.notes.append(f"{name.upper()} not found in any frame")
            continue
        part.notes += [f"{name.upper()}: {w}" for w in at_max.warnings]
        for measured, value in (("area", at_max.area_cm2), ("length", at_max.length_mm), ("volume", at_max.volume_ml)):
            part.measure(f"{name}_{measured}", value, frame=atrium.max_frame)
    part.label_maps.append(LabelMap(prediction.task.name, prediction.labels, prediction.task.labels, seg_frames=sorted({ed, es})))


PART = PartSpec(
    name="atria",
    title="Atria (4-chamber)",
    role="cine_4ch",
    run=run,
    progress_weight=0.5,
    measurements=(
        MeasurementSpec("la_area", "cm2", "LA maximal area", 1, plausible=plausible.ATRIAL_AREA),
        MeasurementSpec("la_length", "mm", "LA length at maximal area", 1, plausible=plausible.ATRIAL_LENGTH),
        # The largest LA volume, reached at ventricular end-systole.
        MeasurementSpec("la_volume", "ml", "LA maximal volume (area-length)", 1,
                        Code("122408", "DCM", "Left Atrial ES Volume"), "la_blood_pool", summary_column=8,
                        plausible=plausible.ATRIAL_VOLUME),
        MeasurementSpec("ra_area", "cm2", "RA maximal area", 1, plausible=plausible.ATRIAL_AREA),
        MeasurementSpec("ra_length", "mm", "RA length at maximal area", 1, plausible=plausible.ATRIAL_LENGTH),
        MeasurementSpec("ra_volume", "ml", "RA maximal volume (area-length)", 1, plausible=plausible.ATRIAL_VOLUME),
    ),
)
