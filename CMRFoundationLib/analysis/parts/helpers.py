"""Helpers more than one part uses: AHA segments on a single-frame short-axis stack, the
JSON of landmarks and classes, and the flags of low confidence and missing LV."""

from __future__ import annotations

import numpy as np

from ...measurements import AHA_SEGMENT_NAMES, aha_segments, guess_basal_end
from ...stack import ImageStack, numbered
from .. import results as r
from ..classify import LOW_CONFIDENCE as LOW_CLASS_CONFIDENCE
from ..geometry import basal_end_along, carried_insertion_points
from ..predictors import ModelUnavailable
from ..results import PartResult
from .context import Context

AHA_LABEL_NAMES = ("background", *(f"AHA {n} {name}" for n, name in AHA_SEGMENT_NAMES.items()))


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


# Below these segmentation certainties (inference.segmentation_certainty) an image is flagged.
# Read off Training/results/certainty for the carried weights: on the ACDC test slices the
# 5 % of seg_sax_cine slices below 0.8 have a mean Dice of 0.33 (the rest 0.76); the 17 %
# of EMIDEC LGE slices below 0.7 a mean Dice of 0.55 (the rest 0.69); 4-chamber and map
# models have only synthetic tests (no poor image there), so only far lower values flag.
# A model's certainty level is its own: recalibrate when its weights change.
MIN_SEGMENTATION_CERTAINTY = {"seg_sax_cine": 0.8, "seg_lge": 0.7, "seg_4ch_cine": 0.65, "seg_mapping": 0.75}


def record_certainty(ctx: Context, part: PartResult, prediction, frames: list[int] | None = None) -> None:
    """Keep the per-slice certainty of the measured frames in the results and flag the images
    where the model hesitates: their contours, and what is measured on them, need a look."""
    certainty, threshold = prediction.certainty, MIN_SEGMENTATION_CERTAINTY[prediction.task.name]
    frames = list(range(certainty.shape[1])) if frames is None else [f for f in frames if f is not None]
    part.results["segmentation_certainty"] = {
        "threshold": threshold,
        "by_frame": {str(f): [None if np.isnan(c) else round(float(c), 3) for c in certainty[:, f]] for f in frames},
    }
    low = {f: [k for k in range(certainty.shape[0]) if certainty[k, f] < threshold] for f in frames}
    low = {f: slices for f, slices in low.items() if slices}
    for f, slices in low.items():
        for k in slices:
            at = f" at frame {numbered(f)}" if certainty.shape[1] > 1 else ""
            note_slice(part, k, f"uncertain segmentation{at} (certainty {certainty[k, f]:.2f}, below {threshold})")
    if low:
        where = "; ".join(f"slice(s) {numbered(slices)}" + (f" of frame {numbered(f)}" if certainty.shape[1] > 1 else "")
                          for f, slices in low.items())
        ctx.flag("warning", r.LOW_CONFIDENCE, f"{part.title}: the {prediction.task.name} segmentation is uncertain on "
                 f"{where} (certainty below {threshold}): check those contours", part.series, part.name)


def record_left_out_slices(part: PartResult, left_out: dict[int, str]) -> None:
    """The slices of the part's short-axis stack that its measurements leave out, and why
    (``left_out_slices``, beside ``slice_findings``: the report lists every slice with both)."""
    part.results["left_out_slices"] = {str(k): why for k, why in sorted(left_out.items())}


def note_slice(part: PartResult, k: int, finding: str) -> None:
    """Something found on slice ``k`` that a reader should see beside it (``slice_findings``)."""
    part.results.setdefault("slice_findings", {}).setdefault(str(k), []).append(finding)


def flag_slices_without_lv(ctx: Context, part: PartResult, lv: np.ndarray) -> None:
    """Slices of a short-axis stack with no LV in any frame: beyond the heart at the ends, suspicious in between."""
    has_lv = lv.any(axis=(1, 2, 3))
    inside = np.flatnonzero(has_lv)
    if inside.size == 0:
        return
    outside = [k for k in range(len(has_lv)) if k < inside[0] or k > inside[-1]]
    gaps = [k for k in range(inside[0], inside[-1]) if not has_lv[k]]
    if outside:
        ctx.flag("info", r.SLICE_WITHOUT_LV, f"slice(s) {numbered(outside)} show no LV in any frame: outside the heart "
                 "(above the base or below the apex)", part.series, part.name)
    if gaps:
        ctx.flag("warning", r.SLICE_WITHOUT_LV, f"slice(s) {numbered(gaps)} lie between LV slices but show no LV: "
                 "check the segmentation", part.series, part.name)
