"""The parts of a study analysis, each a function ``(context, part, stack)`` that fills a PartResult.

A part raises PartSkipped when something it needs is absent (an earlier part, a model),
and any other exception when it fails; the pipeline records either and goes on. Later
parts borrow from earlier ones through ``Context.shared``: the 4-chamber segmentation
(valve planes for the short-axis volumes), the short-axis cine's labels,
ED/ES frames, base direction and insertion points (see geometry.py for why the LGE and
map stacks take the cine's insertion points), and the LGE segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..inference import MIN_LANDMARK_CONFIDENCE
from ..measurements import (
    AHA_SEGMENT_NAMES,
    LongAxisBounds,
    aha_segments,
    atria_over_cine,
    cycle_fractions,
    guess_basal_end,
    lge_extent,
    long_axis_bounds,
    map_values,
    matching_frames,
    segmental_wall_thickness,
    ventricular_function,
)
from ..measurements.insertion_points import joined_insertion_points, stack_insertion_points
from ..measurements.phenotypes import cardiac_phenotypes
from ..measurements.volumes import pixel_area_mm2, slice_depths_mm, slice_thicknesses
from ..stack import ImageStack
from ..task_inputs import cardiac_levels
from ..tasks import get_task
from . import results as r
from .classify import LOW_CONFIDENCE as LOW_CLASS_CONFIDENCE
from .geometry import (
    SaxReference,
    basal_end_along,
    base_direction,
    carried_insertion_points,
    one_frame,
    plane_angle_deg,
)
from .predictors import ModelUnavailable, Predictors
from .results import LabelMap, PartResult

# Enhanced islands smaller than this (8-connected, per slice) are noise: about 10 mm^2 at 1.4 mm pixels.
LGE_MIN_ISLAND_PIXELS = 5
# A 4-chamber plane must contain the long axis, i.e. stand near-perpendicular to the short axis.
LONG_AXIS_MIN_DEG = 60.0

AHA_LABEL_NAMES = ("background", *(f"AHA {n} {name}" for n, name in AHA_SEGMENT_NAMES.items()))


class PartSkipped(Exception):
    """A part cannot run (something it needs is missing); the message says what."""


@dataclass
class SaxState:
    """The short-axis cine as analysed by the function part."""

    stack: ImageStack
    labels: np.ndarray  # seg_sax_cine labels [slices, frames, rows, cols]
    label_names: tuple[str, ...]
    ed_frame: int
    es_frame: int | None
    basal_end: str | None  # "first" or "last"; None when the base could not be told from the apex
    reference: SaxReference | None  # what the LGE and map parts borrow; None without a basal end


@dataclass
class FourChamberState:
    """The 4-chamber cine's segmentation, for the valve planes of the short-axis volumes."""

    stack: ImageStack
    plane_index: int
    labels: np.ndarray  # seg_4ch_cine labels of the measured plane [frames, rows, cols]
    label_names: tuple[str, ...]

    def bounds_along(self, normal: np.ndarray) -> LongAxisBounds:
        """Valve planes and apices of every 4-chamber frame, as depths along a short-axis ``normal``."""
        lv, myo, la, ra = indices(self.label_names, "lv_blood_pool", "lv_myocardium", "la_blood_pool", "ra_blood_pool")
        plane_m = self.stack.ijk_to_lps.copy()
        plane_m[:3, 3] = self.stack.slice_origins_lps()[self.plane_index]
        return long_axis_bounds(self.labels, plane_m, normal, lv_blood=lv, lv_myocardium=myo, la_blood=la, ra_blood=ra)

    @property
    def ed_frame(self) -> int:
        """The frame of largest LV area."""
        lv = self.label_names.index("lv_blood_pool")
        return int(np.argmax((self.labels == lv).sum(axis=(1, 2))))


@dataclass
class Shared:
    four_chamber: FourChamberState | None = None
    sax: SaxState | None = None
    lge_labels: np.ndarray | None = None  # seg_lge labels [slices, 1, rows, cols]
    lge_present_by_extent: bool | None = None


@dataclass
class Context:
    predictors: Predictors
    lge_n_sd: float
    flag: Callable[..., None]  # flag(severity, code, message, series=None, part=None)
    shared: Shared = field(default_factory=Shared)

    def predict(self, task: str, stack: ImageStack, levels=None):
        try:
            predictor = self.predictors.get(task)
        except ModelUnavailable as error:
            raise PartSkipped(str(error)) from None
        return predictor.predict_stack(stack, levels)

    def need_sax(self) -> SaxState:
        if self.shared.sax is None:
            raise PartSkipped("needs the short-axis cine segmentation of the ventricular function part, which did not run")
        return self.shared.sax


def indices(label_names: tuple[str, ...], *names: str) -> list[int]:
    """The label values of ``names`` in a task's label order."""
    return [label_names.index(name) for name in names]


# --- short-axis cine ----------------------------------------------------------------------


def ventricular_function_part(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    """Segment every slice of every frame; volumes, EF and mass (indexed when height and weight are known)."""
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

    basal_end = reference = None
    try:
        basal_end = guess_basal_end(labels[:, function.ed_frame], lv_blood=lv, lv_myocardium=myo, rv_blood=rv)
        reference = SaxReference(stack, base_direction(stack, basal_end))
    except ValueError as error:
        part.notes.append(f"base and apex not told apart: {error}")
    part.results["basal_end"] = basal_end
    ctx.shared.sax = SaxState(stack, labels, prediction.task.labels, function.ed_frame, function.es_frame, basal_end, reference)

    for side, volumes in (("lv", function.lv), ("rv", function.rv)):
        if volumes is None:
            continue
        for attribute, name, unit in (("edv_ml", "edv", "ml"), ("esv_ml", "esv", "ml"), ("sv_ml", "sv", "ml"),
                                      ("ef_percent", "ef", "%"), ("edv_index_ml_m2", "edv_index", "ml/m2"),
                                      ("esv_index_ml_m2", "esv_index", "ml/m2"), ("sv_index_ml_m2", "sv_index", "ml/m2")):
            part.measure(f"{side}_{name}", getattr(volumes, attribute), unit)
    part.measure("lv_mass", function.lv_mass_g, "g")
    part.measure("lv_mass_index", function.lv_mass_index_g_m2, "g/m2")
    part.measure("bsa", function.bsa_m2, "m2")
    seg_frames = sorted({function.ed_frame, function.es_frame} - {None})
    part.label_maps.append(LabelMap(prediction.task.name, labels, prediction.task.labels, seg_frames=seg_frames))


def myocardial_segments_part(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    """RV insertion points at end-diastole, the AHA 16 segments from them, and segmental wall thickness."""
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
                 f"{MIN_LANDMARK_CONFIDENCE} in slice(s) {weak}: those slices borrow the segment angles of the "
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
        part.measure("wall_thickness", segment.mean_mm, "mm", segment=segment.segment)
    part.label_maps.append(LabelMap("aha_segments_ed", aha.segments[:, None], AHA_LABEL_NAMES, frames=[ed]))


def disease_part(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    """Disease class from the measured phenotypes of the ED and ES segmentation
    (``measurements.phenotypes``), pooled with the image model (basal slice at ED,
    mid-systole and ES) as the classifier's file says; either alone when the other is
    unavailable."""
    sax = ctx.need_sax()
    if sax.es_frame is None:
        raise PartSkipped("no end-systolic frame in the short-axis cine")
    lv, myo, rv = indices(sax.label_names, "lv_blood_pool", "lv_myocardium", "rv_blood_pool")
    levels = cardiac_levels(sax.labels, lv, myo, rv)
    levels.ed_frame, levels.es_frame = sax.ed_frame, sax.es_frame
    part.notes += levels.notes
    try:
        image_prediction = ctx.predict("disease", stack, levels)
    except PartSkipped as missing:
        image_prediction, image_missing = None, str(missing)
    try:
        classifier = ctx.predictors.phenotype_classifier()
    except ModelUnavailable as missing:
        if image_prediction is None:
            raise PartSkipped(f"{image_missing}; {missing}") from None
        part.notes.append(f"{missing}: the class is the image model's alone")
        part.results = {**classification_json(image_prediction, levels), "method": "image model"}
        flag_low_class_confidence(ctx, part, image_prediction.class_name, float(np.max(image_prediction.probabilities)))
        return
    column_row = stack.spacing[:2]
    phenotypes = cardiac_phenotypes(sax.labels[:, sax.ed_frame], sax.labels[:, sax.es_frame],
                                    (float(column_row[1]), float(column_row[0])), lv_blood=lv, lv_myocardium=myo,
                                    rv_blood=rv)
    part.notes += phenotypes.notes
    image_p = None if image_prediction is None else image_prediction.probabilities
    image_json = None if image_prediction is None else classification_json(image_prediction, levels)
    pooled = classifier.predict_proba(classifier.feature_rows([phenotypes.values]), image_p)[0]
    uses_image = image_p is not None and classifier.image_model_weight > 0
    chosen = classifier.classes[int(np.argmax(pooled))]
    part.results = {
        "class": chosen,
        "probabilities": {name: round(float(p), 4) for name, p in zip(classifier.classes, pooled)},
        "method": "phenotypes + image model" if uses_image else "phenotypes",
        "phenotypes": phenotypes.to_dict()["values"],
        "image_model": image_json,
        "levels": None if image_json is None else image_json["levels"],
    }
    flag_low_class_confidence(ctx, part, chosen, float(np.max(pooled)))


# --- 4-chamber cine -----------------------------------------------------------------------


def atria_part(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    """Segment the 4-chamber cine; atrial areas, lengths and area-length volumes over the cycle."""
    prediction = ctx.predict("seg_4ch_cine", stack)
    lv, la, ra = indices(prediction.task.labels, "lv_blood_pool", "la_blood_pool", "ra_blood_pool")
    plane_index = stack.n_slices // 2
    if stack.n_slices > 1:
        part.notes.append(f"{stack.n_slices} slices: the middle one (slice {plane_index}) is measured")
    plane = prediction.labels[plane_index]  # [frames, rows, cols]
    four = ctx.shared.four_chamber = FourChamberState(stack, plane_index, plane, prediction.task.labels)
    atria = atria_over_cine(plane, stack.spacing, la=la, ra=ra, lv=lv)
    lv_area_cm2 = (plane == lv).sum(axis=(1, 2)) * pixel_area_mm2(stack.ijk_to_lps) / 100
    ed, es = four.ed_frame, int(np.argmin(lv_area_cm2))
    part.results = {"slice": plane_index, "ed_frame": ed, "es_frame": es,
                    "lv_area_cm2": [round(float(a), 3) for a in lv_area_cm2], **atria.to_dict()}
    for name, atrium in (("la", atria.la), ("ra", atria.ra)):
        at_max = atrium.at_max
        if at_max is None:
            part.notes.append(f"{name.upper()} not found in any frame")
            continue
        part.notes += [f"{name.upper()}: {w}" for w in at_max.warnings]
        part.measure(f"{name}_area", at_max.area_cm2, "cm2")
        part.measure(f"{name}_length", at_max.length_mm, "mm")
        part.measure(f"{name}_volume", at_max.volume_ml, "ml")
    part.label_maps.append(LabelMap(prediction.task.name, prediction.labels, prediction.task.labels, seg_frames=sorted({ed, es})))


# --- short-axis LGE -----------------------------------------------------------------------


def lge_extent_part(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    """Segment the LGE stack; enhanced myocardium by n-SD above remote, globally and per AHA segment."""
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
        part.notes.append(f"slice {k} left out of the LGE quantification: {why}")
    extent = lge_extent(stack.pixels[:, 0], labels, stack.ijk_to_lps, aha, lv_myocardium=myo, n_sd=ctx.lge_n_sd,
                        slice_positions=stack.slice_positions, excluded_slices=sorted(excluded),
                        min_component_pixels=LGE_MIN_ISLAND_PIXELS, blood_pool=lv, drop_border_rims=True)
    ctx.shared.lge_present_by_extent = extent.lge_present
    part.notes += extent.warnings
    part.results = {"insertion_points_source": how, "aha": aha.to_dict(), "extent": extent.to_dict(),
                    "excluded_slices": {str(k): why for k, why in sorted(excluded.items())},
                    "min_island_pixels": LGE_MIN_ISLAND_PIXELS, "border_rims_dropped": True}
    method = f"{extent.n_sd:g}-SD above remote myocardium"
    part.measure("lge_extent", extent.enhanced_percent, "%", method=method)
    part.measure("lge_volume", extent.enhanced_ml, "ml", method=method)
    for segment in extent.segments:
        part.measure("lge_extent", segment.enhanced_percent, "%", segment=segment.segment, method=method)
    # The label map (and SEG) shows the enhanced myocardium as a structure of its own.
    with_scar = prediction.labels.copy()
    with_scar[:, 0][extent.enhanced] = len(prediction.task.labels)
    names = (*prediction.task.labels, "enhanced_myocardium")
    part.label_maps.append(LabelMap(prediction.task.name, with_scar, names, seg_frames=[0]))
    part.label_maps.append(LabelMap("aha_segments", aha.segments[:, None], AHA_LABEL_NAMES))


def lge_partial_volume_slices(
    four: FourChamberState | None, stack: ImageStack, labels: np.ndarray, lv: int, myo: int
) -> dict[int, str]:
    """LGE slices whose slab mixes myocardium with bright blood beyond it, and why (see lge.py).

    * a slice with myocardium but no LV blood pool is a cap: the apex's tip or a slice
      grazing the base, its slab holding cavity or atrial blood above or below;
    * with the 4-chamber cine, a slice whose slab reaches past the mitral plane (at the
      4-chamber end-diastole: LGE is triggered in diastole) holds atrial blood.
    """
    excluded: dict[int, str] = {}
    has_myo = (labels == myo).any(axis=(1, 2))
    has_blood = (labels == lv).any(axis=(1, 2))
    for k in np.flatnonzero(has_myo & ~has_blood):
        excluded[int(k)] = "myocardium without LV blood pool (apical tip or basal cap): partial volume with blood"
    if four is None or plane_angle_deg(four.stack, stack) < LONG_AXIS_MIN_DEG:
        return excluded
    bounds = four.bounds_along(stack.normal)
    mitral, apex = float(bounds.mitral_mm[four.ed_frame]), float(bounds.lv_apex_mm[four.ed_frame])
    if not (np.isfinite(mitral) and np.isfinite(apex)):
        return excluded
    towards_base = 1.0 if mitral > apex else -1.0
    depths = slice_depths_mm(stack.n_slices, stack.ijk_to_lps, stack.slice_positions)
    if stack.info.slice_thickness:
        half_slab = np.full(stack.n_slices, stack.info.slice_thickness / 2)
    else:
        half_slab = slice_thicknesses(stack.n_slices, stack.ijk_to_lps, stack.slice_positions) / 2
    for k in np.flatnonzero(has_myo):
        if (depths[k] - mitral) * towards_base + half_slab[k] > 0 and int(k) not in excluded:
            excluded[int(k)] = (f"its slab reaches {(depths[k] - mitral) * towards_base + half_slab[k]:.1f} mm past the "
                                f"mitral plane of the 4-chamber cine: partial volume with atrial blood")
    return excluded


def lge_presence_part(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    """LGE present or absent from the basal, mid and apical slices (levels from the LGE segmentation)."""
    if ctx.shared.lge_labels is None:
        raise PartSkipped("needs the LGE segmentation of the LGE extent part, which did not run")
    levels = cardiac_levels(ctx.shared.lge_labels, *indices(get_task("seg_lge").labels, "lv_blood_pool", "lv_myocardium"))
    prediction = ctx.predict("lge_presence", stack, levels)
    part.results = classification_json(prediction, levels)
    part.notes += levels.notes
    flag_low_class_confidence(ctx, part, prediction.class_name, float(np.max(prediction.probabilities)))
    by_extent = ctx.shared.lge_present_by_extent
    if by_extent is not None and by_extent != (prediction.class_name == "present"):
        ctx.flag("info", r.RESULT_WARNING, f"the LGE presence model says {prediction.class_name}, the "
                 f"{ctx.lge_n_sd:g}-SD extent says {'present' if by_extent else 'absent'}", part.series, part.name)


# --- T1 / T2 maps -------------------------------------------------------------------------


def map_part(quantity: str):
    """The part for a T1 or T2 map: segment, then mean values globally and per AHA segment."""

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
        part.measure(quantity, values.global_values.mean, "ms")
        for segment, region in sorted(values.segments.items()):
            part.measure(quantity, region.mean, "ms", segment=segment)
        if aha is not None:
            part.label_maps.append(LabelMap("aha_segments", aha.segments[:, None], AHA_LABEL_NAMES))

    return run


# --- shared helpers -----------------------------------------------------------------------


def segments_on(ctx: Context, part: PartResult, stack: ImageStack, labels: np.ndarray, lv: int, myo: int):
    """AHA segments of a single-frame short-axis stack (LGE, map): (AhaSegmentation or None, how, in words).

    Insertion points come from the cine when it has them (geometry.py says why), else from
    the rv_insertion model on this stack; the base from the cine's base direction, else
    guessed from this stack's own segmentation.
    """
    sax = ctx.shared.sax
    reference = sax.reference if sax is not None else None
    if reference is None:
        points, how = None, "there is no short-axis cine analysis"
    else:
        points, how = carried_insertion_points(reference, stack)
    if points is None:
        try:
            landmarks = ctx.predictors.get("rv_insertion").predict_stack(stack)
            points, how = landmarks.points_rc[:, 0].copy(), f"rv_insertion model on this stack, trained on cine ({how})"
        except ModelUnavailable as error:
            return None, f"{how}; {error}"
    points[~(labels == myo).any(axis=(1, 2))] = np.nan
    if reference is not None:
        basal_end, base_how = basal_end_along(stack, reference.towards_base), "from the short-axis cine"
    else:
        basal_end, base_how = guess_basal_end(labels, lv_blood=lv, lv_myocardium=myo, rv_blood=None), "guessed from this stack"
    try:
        aha = aha_segments(labels, stack.ijk_to_lps, points, basal_end=basal_end, lv_blood=lv, lv_myocardium=myo, rv_blood=None)
    except ValueError as error:
        return None, f"{how}; {error}"
    part.notes += aha.warnings
    return aha, f"{how}; base {base_how} ({basal_end} slice end)"


def valve_planes(four: FourChamberState | None, sax: ImageStack) -> tuple[LongAxisBounds | None, dict]:
    """Valve planes and apices per short-axis frame from the 4-chamber segmentation, and how, for the results.

    None (Simpson's rule with whole slabs) when there is no 4-chamber segmentation, its
    plane is not a long-axis plane of this stack, or it finds no mitral plane near the
    short-axis stack (a different breath-hold position would move every slab).
    """
    simpson = "Simpson's rule, every short-axis slab counted whole"
    if four is None:
        return None, {"method": f"{simpson}: no 4-chamber cine segmentation for the valve planes"}
    angle = plane_angle_deg(four.stack, sax)
    if angle < LONG_AXIS_MIN_DEG:
        return None, {"method": f"{simpson}: the 4-chamber plane is only {angle:.0f} degrees from the short axis"}
    bounds = four.bounds_along(sax.normal)
    frames = matching_frames(cycle_fractions(sax.n_frames, sax.frame_times),
                             cycle_fractions(four.stack.n_frames, four.stack.frame_times))
    bounds = bounds.for_frames(frames)
    depths = slice_depths_mm(sax.n_slices, sax.ijk_to_lps, sax.slice_positions)
    reach = float(np.median(np.abs(np.diff(depths)))) if sax.n_slices > 1 else float(sax.spacing[2])
    mitral = bounds.mitral_mm[np.isfinite(bounds.mitral_mm)]
    if mitral.size == 0:
        return None, {"method": f"{simpson}: no mitral plane found on the 4-chamber cine", "warnings": bounds.warnings}
    if not (depths.min() - reach <= np.median(mitral) <= depths.max() + reach):
        return None, {"method": f"{simpson}: the mitral plane of the 4-chamber cine lies outside the short-axis stack "
                                f"(more than one slice beyond it)"}
    return bounds, {"method": "Simpson's rule with the end slabs clipped to the mitral and tricuspid planes and the "
                              f"apex found on the 4-chamber cine (series {four.stack.info.series_number})",
                    "depth_axis": "mm along the short-axis slice normal",
                    "slice_depths_mm": [round(float(d), 2) for d in depths],
                    "four_chamber_frame_of_sax_frame": [int(f) for f in frames], "warnings": bounds.warnings}


def body_size(stack: ImageStack) -> tuple[float | None, float | None]:
    """(height cm, weight kg) from the header, None where absent or zero."""
    info = stack.info
    height = info.patient_size * 100 if info.patient_size else None
    return height, info.patient_weight or None


def insertion_points_json(stack: ImageStack, points: np.ndarray, confidence: np.ndarray, with_lv: np.ndarray,
                          source: np.ndarray) -> list[dict]:
    """Per slice with LV: each point's pixel and LPS position, the heatmap model's confidence,
    and its source ("segmentation": the contact arc of the segmentation; "heatmap": the model)."""
    lps = stack.pixel_points_to_lps(points)
    found = []
    for k in np.flatnonzero(with_lv):
        entry = {"slice": int(k)}
        for j, name in enumerate(("anterior", "inferior")):
            entry[name] = None if np.isnan(points[k, j]).any() else {
                "row_col": [round(float(v), 2) for v in points[k, j]], "lps": [round(float(v), 2) for v in lps[k, j]],
                "confidence": round(float(confidence[k, j]), 3), "source": str(source[k, j])}
        found.append(entry)
    return found


def classification_json(prediction, levels) -> dict:
    return {"class": prediction.class_name,
            "probabilities": {name: round(float(p), 4) for name, p in zip(prediction.task.labels, prediction.probabilities)},
            "levels": {"basal_slice": levels.basal_slice, "mid_slice": levels.mid_slice, "apical_slice": levels.apical_slice,
                       "ed_frame": levels.ed_frame, "es_frame": levels.es_frame}}


def flag_low_class_confidence(ctx: Context, part: PartResult, class_name: str, p: float) -> None:
    if p < LOW_CLASS_CONFIDENCE:
        ctx.flag("warning", r.LOW_CONFIDENCE, f"{part.title}: {class_name} with low confidence (p={p:.2f})",
                 part.series, part.name)


def flag_slices_without_lv(ctx: Context, part: PartResult, lv: np.ndarray) -> None:
    """Slices of a short-axis stack with no LV in any frame: beyond the heart at the ends, suspicious in between."""
    has_lv = lv.any(axis=(1, 2, 3))
    inside = np.flatnonzero(has_lv)
    if inside.size == 0:
        return
    outside = [k for k in range(len(has_lv)) if k < inside[0] or k > inside[-1]]
    gaps = [k for k in range(inside[0], inside[-1]) if not has_lv[k]]
    if outside:
        ctx.flag("info", r.SLICE_WITHOUT_LV, f"slice(s) {outside} show no LV in any frame: outside the heart "
                 "(above the base or below the apex)", part.series, part.name)
    if gaps:
        ctx.flag("warning", r.SLICE_WITHOUT_LV, f"slice(s) {gaps} lie between LV slices but show no LV: "
                 "check the segmentation", part.series, part.name)


@dataclass(frozen=True)
class PartSpec:
    name: str
    title: str
    role: str  # the select.ROLES entry whose series it reads
    run: Callable[[Context, PartResult, ImageStack], None]


# In this order: the atria part's 4-chamber segmentation gives the function part its valve planes.
PARTS = (
    PartSpec("atria", "Atria (4-chamber)", "cine_4ch", atria_part),
    PartSpec("function", "Ventricular function", "cine_sax", ventricular_function_part),
    PartSpec("myocardial_segments", "AHA segments and wall thickness", "cine_sax", myocardial_segments_part),
    PartSpec("disease", "Disease class", "cine_sax", disease_part),
    PartSpec("lge_extent", "LGE extent", "lge_sax", lge_extent_part),
    PartSpec("lge_presence", "LGE presence", "lge_sax", lge_presence_part),
    PartSpec("t1_map", "T1 map", "t1_map", map_part("t1")),
    PartSpec("t2_map", "T2 map", "t2_map", map_part("t2")),
)
