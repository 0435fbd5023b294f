"""T1 and T2 maps: segment the map; mean values of the LV myocardium, globally and per AHA
segment (the insertion points carried from the short-axis cine when it has them)."""

from __future__ import annotations

import numpy as np
from pydicom.sr.coding import Code

from ...measurements import map_values
from ...measurements import plausibility as plausible
from ...stack import ImageStack
from ..results import LabelMap, PartResult
from .context import Context, MeasurementSpec, PartSpec, indices
from .helpers import AHA_LABEL_NAMES, record_certainty, record_left_out_slices, segments_on


def map_part(quantity: str):
    """The run function of the part for a T1 or T2 map."""

    def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
        prediction = ctx.predict("seg_mapping", stack)
        lv, myo = indices(prediction.task.labels, "lv_blood_pool", "lv_myocardium")
        labels = prediction.labels[:, 0]
        part.label_maps.append(LabelMap(prediction.task.name, prediction.labels, prediction.task.labels, seg_frames=[0]))
        aha, how = segments_on(ctx, part, stack, labels, lv, myo)
        if aha is None:
            part.notes.append(f"no AHA segments ({how}): global values only")
        values = map_values(stack.pixels[:, 0], labels, aha, lv_myocardium=myo)
        part.notes += values.warnings
        part.results = {"quantity": quantity, "unit": "ms", "insertion_points_source": how,
                        "aha": None if aha is None else aha.to_dict(), "values": values.to_dict()}
        record_left_out_slices(part, {int(k): "no LV myocardium segmented"
                                      for k in np.flatnonzero(~(labels == myo).any(axis=(1, 2)))})
        record_certainty(ctx, part, prediction)
        part.measure(quantity, values.global_values.mean)
        for segment, region in sorted(values.segments.items()):
            part.measure(quantity, region.mean, segment=segment)
        if aha is not None:
            part.label_maps.append(LabelMap("aha_segments", aha.segments[:, None], AHA_LABEL_NAMES))

    return run


PARTS = (
    PartSpec("t1_map", "T1 map", "t1_map", map_part("t1"), progress_weight=0.3, measurements=(
        MeasurementSpec("t1", "ms", "Native T1", 0, Code("113063", "DCM", "T1"), "lv_myocardium", summary_column=10,
                        plausible=plausible.NATIVE_T1),)),
    PartSpec("t2_map", "T2 map", "t2_map", map_part("t2"), progress_weight=0.3, measurements=(
        MeasurementSpec("t2", "ms", "T2", 0, Code("113065", "DCM", "T2"), "lv_myocardium", summary_column=11,
                        plausible=plausible.T2),)),
)
