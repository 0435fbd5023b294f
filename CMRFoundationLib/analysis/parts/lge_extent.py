"""LGE extent on the short-axis LGE stack: segment it; enhanced myocardium by n SD above
remote myocardium, globally and per AHA segment, leaving out the slices whose slab mixes
myocardium with blood (``measurements.partial_volume_slices``)."""

from __future__ import annotations

import numpy as np
from pydicom.sr.coding import Code

from ...measurements import lge_extent, not_a_long_axis_plane, partial_volume_slices
from ...measurements import plausibility as plausible
from ...measurements.volumes import slice_depths_mm, slice_thicknesses
from ...stack import ImageStack, numbered
from ...terminology import PRIVATE_SCHEME as _P
from ..geometry import plane_angle_deg
from ..results import LabelMap, PartResult
from .context import Context, FourChamberState, MeasurementSpec, PartSpec, indices
from .helpers import AHA_LABEL_NAMES, record_certainty, record_left_out_slices, segments_on

# Enhanced islands smaller than this (8-connected, per slice) are noise: about 10 mm^2 at 1.4 mm pixels.
LGE_MIN_ISLAND_PIXELS = 5


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    prediction = ctx.predict("seg_lge", stack)
    lv, myo = indices(prediction.task.labels, "lv_blood_pool", "lv_myocardium")
    ctx.shared.lge_labels = prediction.labels
    labels = prediction.labels[:, 0]
    if not (labels == myo).any():
        raise ValueError("no LV myocardium found in the LGE stack")
    aha, how = segments_on(ctx, part, stack, labels, lv, myo)
    if aha is None:
        raise ValueError(f"AHA segments cannot be placed, so there is no remote myocardium: {how}")
    excluded = lge_partial_volume_slices(ctx.shared.four_chamber, stack, labels, lv, myo)
    for k, why in excluded.items():
        part.notes.append(f"slice {numbered(k)} left out of the LGE quantification: {why}")
    extent = lge_extent(stack.pixels[:, 0], labels, stack.ijk_to_lps, aha, lv_myocardium=myo, n_sd=ctx.lge_n_sd,
                        slice_positions=stack.slice_positions, excluded_slices=sorted(excluded),
                        min_component_pixels=LGE_MIN_ISLAND_PIXELS, blood_pool=lv, drop_border_rims=True)
    ctx.shared.lge_present_by_extent = extent.lge_present
    part.notes += extent.warnings
    part.results = {"insertion_points_source": how, "aha": aha.to_dict(), "extent": extent.to_dict(),
                    "excluded_slices": {str(k): why for k, why in sorted(excluded.items())},
                    "min_island_pixels": LGE_MIN_ISLAND_PIXELS, "border_rims_dropped": True}
    no_myocardium = {int(k): "no LV myocardium segmented" for k in np.flatnonzero(~(labels == myo).any(axis=(1, 2)))}
    record_left_out_slices(part, {**no_myocardium, **excluded})
    record_certainty(ctx, part, prediction)
    method = f"{extent.n_sd:g}-SD above remote myocardium"
    part.measure("lge_extent", extent.enhanced_percent, method=method)
    part.measure("lge_volume", extent.enhanced_ml, method=method)
    for segment in extent.segments:
        part.measure("lge_extent", segment.enhanced_percent, segment=segment.segment, method=method)
    # The label map (and SEG) shows the enhanced myocardium as a structure of its own.
    with_scar = prediction.labels.copy()
    with_scar[:, 0][extent.enhanced] = len(prediction.task.labels)
    names = (*prediction.task.labels, "enhanced_myocardium")
    part.label_maps.append(LabelMap(prediction.task.name, with_scar, names, seg_frames=[0]))
    part.label_maps.append(LabelMap("aha_segments", aha.segments[:, None], AHA_LABEL_NAMES))


def lge_partial_volume_slices(
    four: FourChamberState | None, stack: ImageStack, labels: np.ndarray, lv: int, myo: int
) -> dict[int, str]:
    """The LGE slices to leave out (``measurements.partial_volume_slices``), with the mitral
    plane and LV apex of the 4-chamber cine at its end-diastole when its plane is a long-axis one."""
    has_myo, has_blood = (labels == myo).any(axis=(1, 2)), (labels == lv).any(axis=(1, 2))
    if four is None or not_a_long_axis_plane(plane_angle_deg(four.stack, stack)) is not None:
        return partial_volume_slices(has_myo, has_blood)
    bounds = four.bounds_along(stack.normal)
    depths = slice_depths_mm(stack.n_slices, stack.ijk_to_lps, stack.slice_positions)
    if stack.info.slice_thickness:
        half_slab = np.full(stack.n_slices, stack.info.slice_thickness / 2)
    else:
        half_slab = slice_thicknesses(stack.n_slices, stack.ijk_to_lps, stack.slice_positions) / 2
    return partial_volume_slices(has_myo, has_blood, depths, half_slab, float(bounds.mitral_mm[four.ed_frame]),
                                 float(bounds.lv_apex_mm[four.ed_frame]))


PART = PartSpec(
    name="lge_extent",
    title="LGE extent",
    role="lge_sax",
    run=run,
    progress_weight=0.7,
    measurements=(
        MeasurementSpec("lge_extent", "%", "Enhanced myocardium (% of LV myocardium)", 1,
                        Code("LGE-EXTENT", _P, "Enhanced myocardium, percent of LV myocardium"), "enhanced_myocardium",
                        summary_column=9, plausible=plausible.PERCENT_OF_MYOCARDIUM),
        MeasurementSpec("lge_volume", "ml", "Enhanced myocardial volume", 1,
                        Code("LGE-VOLUME", _P, "Enhanced myocardial volume"), "enhanced_myocardium",
                        plausible=plausible.ENHANCED_VOLUME),
    ),
)
