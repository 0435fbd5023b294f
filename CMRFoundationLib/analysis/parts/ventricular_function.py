"""Ventricular function on the short-axis cine: segment every slice of every frame; LV and
RV volumes, EF and LV mass (indexed to BSA when height and weight are known). Its
segmentation, ED/ES frames and base direction are what the later parts borrow."""

from __future__ import annotations

import numpy as np
from pydicom.sr.coding import Code

from ...measurements import (
    LongAxisBounds,
    cycle_fractions,
    guess_basal_end,
    matching_frames,
    not_a_long_axis_plane,
    valve_plane_problem,
    ventricular_function,
)
from ...measurements import plausibility as plausible
from ...measurements.quality import short_axis_problems
from ...measurements.volumes import clipped_slab_mm, slice_depths_mm, slice_thicknesses
from ...stack import ImageStack
from ...terminology import PRIVATE_SCHEME as _P
from .. import results as r
from ..geometry import SaxReference, base_direction, plane_angle_deg
from ..results import LabelMap, PartResult
from .context import Context, FourChamberState, MeasurementSpec, PartSkipped, PartSpec, SaxState, indices
from .helpers import body_size, flag_slices_without_lv, note_slice, record_certainty, record_left_out_slices

_STROKE_VOLUME = Code("90096001", "SCT", "Stroke Volume")


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    if stack.n_slices < 2:
        raise PartSkipped("a single short-axis slice gives no volumes: the function needs a stack through the ventricles")
    prediction = ctx.predict("seg_sax_cine", stack)
    lv, myo, rv = indices(prediction.task.labels, "lv_blood_pool", "lv_myocardium", "rv_blood_pool")
    labels = prediction.labels
    height_cm, weight_kg = body_size(stack)
    if height_cm is None or weight_kg is None:
        part.notes.append("patient height or weight missing from the header: values are not indexed to BSA")
    long_axis, long_axis_json = valve_planes(ctx.shared.four_chamber, stack)
    part.notes.append(long_axis_json["method"])
    function = ventricular_function(labels, stack.ijk_to_lps, slice_positions=stack.slice_positions, lv_blood=lv,
                                    lv_myocardium=myo, rv_blood=rv, height_cm=height_cm, weight_kg=weight_kg,
                                    long_axis=long_axis)
    part.results = function.to_dict()
    part.notes += function.warnings
    if long_axis is not None:
        long_axis_json["ed"] = long_axis.frame(function.ed_frame)
        long_axis_json["es"] = None if function.es_frame is None else long_axis.frame(function.es_frame)
    part.results["long_axis"] = long_axis_json
    flag_slices_without_lv(ctx, part, labels == lv)
    frames = {"ED": function.ed_frame, **({"ES": function.es_frame} if function.es_frame is not None else {})}
    record_lv_volume_gaps(part, lv_volume_gaps(labels == lv, stack, long_axis, frames), frames)

    basal_end = reference = None
    try:
        basal_end = guess_basal_end(labels[:, function.ed_frame], lv_blood=lv, lv_myocardium=myo, rv_blood=rv)
        reference = SaxReference(stack, base_direction(stack, basal_end))
    except ValueError as error:
        part.notes.append(f"base and apex not told apart: {error}")
    part.results["basal_end"] = basal_end
    record_certainty(ctx, part, prediction, [function.ed_frame, function.es_frame])
    problems = short_axis_problems(labels[:, function.ed_frame], float(np.mean(stack.spacing[:2])), lv_blood=lv,
                                   lv_myocardium=myo, rv_blood=rv, basal_end=basal_end)
    part.results["structure_problems_at_ed"] = [p.text for p in problems]
    for problem in problems:
        ctx.flag("warning", r.SEGMENTATION_QUALITY, f"short-axis segmentation at ED: {problem.text}", part.series,
                 part.name)
        for k in problem.slices:
            note_slice(part, k, f"structure check at ED: {problem.finding}")
    invalidating = [p.text for p in problems if p.invalidates_volumes]
    ctx.shared.sax = SaxState(stack, labels, prediction.task.labels, function.ed_frame, function.es_frame, basal_end, reference)

    ed, es = function.ed_frame, function.es_frame
    for side, volumes in (("lv", function.lv), ("rv", function.rv)):
        if volumes is None:
            continue
        for attribute, name, frame in (("edv_ml", "edv", ed), ("esv_ml", "esv", es), ("sv_ml", "sv", None),
                                       ("ef_percent", "ef", None), ("edv_index_ml_m2", "edv_index", ed),
                                       ("esv_index_ml_m2", "esv_index", es), ("sv_index_ml_m2", "sv_index", None)):
            part.measure(f"{side}_{name}", getattr(volumes, attribute), frame=frame)
    part.measure("lv_mass", function.lv_mass_g, frame=ed)
    part.measure("lv_mass_index", function.lv_mass_index_g_m2, frame=ed)
    if invalidating:  # the volumes of an impossible segmentation are not numbers to report as such
        for row in part.measurements:
            row.check = "the segmentation failed a structural check: " + "; ".join(invalidating)
    part.measure("bsa", function.bsa_m2)
    seg_frames = sorted({function.ed_frame, function.es_frame} - {None})
    part.label_maps.append(LabelMap(prediction.task.name, labels, prediction.task.labels, seg_frames=seg_frames))


def lv_volume_gaps(lv: np.ndarray, stack: ImageStack, long_axis: LongAxisBounds | None,
                   frames: dict[str, int]) -> dict[int, dict[str, str]]:
    """slice -> {phase: why the slice adds nothing to the LV volume at that phase (of ``frames``,
    e.g. {"ED": 0, "ES": 9})}: no LV blood pool segmented there, or a slab beyond the mitral plane
    or the apex of the 4-chamber cine."""
    present = lv.any(axis=(2, 3))  # [slices, frames]
    depth = slice_depths_mm(stack.n_slices, stack.ijk_to_lps, stack.slice_positions)
    slab = slice_thicknesses(stack.n_slices, stack.ijk_to_lps, stack.slice_positions)
    gaps: dict[int, dict[str, str]] = {}
    for phase, f in frames.items():
        counted = present[:, f].astype(float)
        if long_axis is not None:
            mitral, apex = long_axis.mitral_mm[f], long_axis.lv_apex_mm[f]
            counted *= clipped_slab_mm(present[:, f], depth, slab, mitral, apex)
        for k in np.flatnonzero(counted == 0):
            if not present[k, f]:
                why = "no LV blood pool"
            else:
                to_mitral, to_apex = abs(depth[k] - mitral), abs(depth[k] - apex)  # NaN where not found
                why = f"beyond the {'LV apex' if to_apex < to_mitral or np.isnan(to_mitral) else 'mitral plane'} of the 4-chamber cine"
            gaps.setdefault(int(k), {})[phase] = why
    return gaps


def record_lv_volume_gaps(part: PartResult, gaps: dict[int, dict[str, str]], frames: dict[str, int]) -> None:
    """A slice that adds nothing at ED nor ES is left out of the volumes; one that adds to one of
    them only is counted, with a note of which."""
    left_out = {}
    for k, why in gaps.items():
        text = "; ".join(f"{reason} at {' and '.join(p for p in why if why[p] == reason)}" for reason in dict.fromkeys(why.values()))
        if len(why) == len(frames):
            left_out[k] = text
        else:
            note_slice(part, k, f"in the LV volume at {' and '.join(p for p in frames if p not in why)} only ({text})")
    record_left_out_slices(part, left_out)


def valve_planes(four: FourChamberState | None, sax: ImageStack) -> tuple[LongAxisBounds | None, dict]:
    """Valve planes and apices per short-axis frame from the 4-chamber segmentation, and how, for the results.

    None (Simpson's rule with whole slabs) when there is no 4-chamber segmentation, its
    plane is not a long-axis plane of this stack, or ``measurements.valve_plane_problem``
    finds its mitral plane unfit.
    """
    simpson = "Simpson's rule, every short-axis slab counted whole"
    if four is None:
        return None, {"method": f"{simpson}: no 4-chamber cine segmentation for the valve planes"}
    problem = not_a_long_axis_plane(plane_angle_deg(four.stack, sax))
    if problem is not None:
        return None, {"method": f"{simpson}: {problem}"}
    bounds = four.bounds_along(sax.normal)
    frames = matching_frames(cycle_fractions(sax.n_frames, sax.frame_times),
                             cycle_fractions(four.stack.n_frames, four.stack.frame_times))
    bounds = bounds.for_frames(frames)
    depths = slice_depths_mm(sax.n_slices, sax.ijk_to_lps, sax.slice_positions)
    spacing = float(np.median(np.abs(np.diff(depths)))) if sax.n_slices > 1 else float(sax.spacing[2])
    problem = valve_plane_problem(bounds.mitral_mm, depths, spacing)
    if problem is not None:
        return None, {"method": f"{simpson}: {problem}", "warnings": bounds.warnings}
    return bounds, {"method": "Simpson's rule with the end slabs clipped to the mitral and tricuspid planes and the "
                              f"apex found on the 4-chamber cine (series {four.stack.info.series_number})",
                    "depth_axis": "mm along the short-axis slice normal",
                    "slice_depths_mm": [round(float(d), 2) for d in depths],
                    "four_chamber_frame_of_sax_frame": [int(f) for f in frames], "warnings": bounds.warnings}


def _volumes(side: str, structure: str, codes: dict[str, Code], columns: tuple[int, int, int]) -> tuple[MeasurementSpec, ...]:
    upper, (edv_column, esv_column, ef_column) = side.upper(), columns
    return (
        MeasurementSpec(f"{side}_edv", "ml", f"{upper} end-diastolic volume", 1, codes["edv"], structure,
                        summary_column=edv_column, plausible=plausible.END_DIASTOLIC_VOLUME),
        MeasurementSpec(f"{side}_esv", "ml", f"{upper} end-systolic volume", 1, codes["esv"], structure,
                        summary_column=esv_column, plausible=plausible.END_SYSTOLIC_VOLUME),
        MeasurementSpec(f"{side}_sv", "ml", f"{upper} stroke volume", 1, _STROKE_VOLUME, structure,
                        plausible=plausible.STROKE_VOLUME),
        MeasurementSpec(f"{side}_ef", "%", f"{upper} ejection fraction", 1, codes["ef"], structure,
                        summary_column=ef_column, plausible=plausible.EJECTION_FRACTION),
        # No standard codes for the indexed volumes:
        MeasurementSpec(f"{side}_edv_index", "ml/m2", f"{upper} EDV indexed to BSA", 1,
                        Code(f"{upper}EDVI", _P, f"{upper} end-diastolic volume index"), structure,
                        plausible=plausible.EDV_INDEX),
        MeasurementSpec(f"{side}_esv_index", "ml/m2", f"{upper} ESV indexed to BSA", 1,
                        Code(f"{upper}ESVI", _P, f"{upper} end-systolic volume index"), structure,
                        plausible=plausible.ESV_INDEX),
        MeasurementSpec(f"{side}_sv_index", "ml/m2", f"{upper} SV indexed to BSA", 1,
                        Code(f"{upper}SVI", _P, f"{upper} stroke volume index"), structure,
                        plausible=plausible.SV_INDEX),
    )


PART = PartSpec(
    name="function",
    title="Ventricular function",
    role="cine_sax",
    run=run,
    progress_weight=2.0,
    measurements=(
        *_volumes("lv", "lv_blood_pool", {"edv": Code("8821-1", "LN", "Left Ventricular ED Volume"),
                                          "esv": Code("8823-7", "LN", "Left Ventricular ES Volume"),
                                          "ef": Code("8811-2", "LN", "Left ventricular ejection fraction by MR")}, (1, 2, 3)),
        *_volumes("rv", "rv_blood_pool", {"edv": Code("8822-9", "LN", "Right Ventricular ED Volume"),
                                          "esv": Code("8824-5", "LN", "Right Ventricular ES Volume"),
                                          "ef": Code("8818-7", "LN", "Right ventricular ejection fraction by MR")}, (5, 6, 7)),
        MeasurementSpec("lv_mass", "g", "LV myocardial mass", 1, Code("18087-7", "LN", "Left Ventricle Mass"),
                        "lv_myocardium", summary_column=4, plausible=plausible.LV_MASS),
        MeasurementSpec("lv_mass_index", "g/m2", "LV mass indexed to BSA", 1, Code("LVMI", _P, "LV mass index"),
                        "lv_myocardium", plausible=plausible.LV_MASS_INDEX),
        MeasurementSpec("bsa", "m2", "Body surface area", 2, Code("8277-6", "LN", "BSA"),
                        plausible=plausible.BODY_SURFACE_AREA),
    ),
)
