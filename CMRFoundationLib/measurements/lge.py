"""Late gadolinium enhancement by the n-SD method: how much myocardium is scarred, and where.

Remote (normal) myocardium is, unless the user draws it, the AHA segment with the lowest
mean intensity among the segments present with at least ``MIN_REMOTE_PIXELS`` pixels:
nulled healthy myocardium is the darkest tissue in an LGE image, and a whole segment
is large enough for a stable mean and SD. Enhanced myocardium is myocardium brighter
than mean_remote + n x SD_remote (n = 5 by default; 2 to 6 are used in practice).
Volumes use the slabs of ``volumes.slice_thicknesses``, so percentages are of volume.

Blood is as bright as scar on LGE, so partial volume with blood is the method's main
source of false enhancement. Two guards, both optional:

* ``excluded_slices``: slices left out of the quantification altogether, e.g. a basal
  slice whose slab reaches into the atrium or an apical cap slice whose slab holds the
  cavity's tip (``partial_volume_slices`` finds them from the anatomy);
* ``blood_pool`` + ``drop_border_rims``: enhanced islands lying wholly on the border with
  the blood pool (one pixel deep) are partial volume, not scar; subendocardial scar
  reaches deeper than one pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .aha import AHA_SEGMENT_NAMES, AhaSegmentation
from .masks import dilate_in_plane, label_components
from .volumes import Label, label_mask, pixel_area_mm2, slice_thicknesses, task_label

LGE_LV_MYOCARDIUM = task_label("seg_lge", "lv_myocardium")
MIN_REMOTE_PIXELS = 20


@dataclass
class SegmentEnhancement:
    segment: int
    myocardium_ml: float
    enhanced_ml: float
    enhanced_percent: float
    mean_intensity: float

    def to_dict(self) -> dict:
        return {
            "segment": self.segment,
            "name": AHA_SEGMENT_NAMES[self.segment],
            "myocardium_ml": float(self.myocardium_ml),
            "enhanced_ml": float(self.enhanced_ml),
            "enhanced_percent": float(self.enhanced_percent),
            "mean_intensity": float(self.mean_intensity),
        }


@dataclass
class LgeExtent:
    """Result of the n-SD analysis; ``enhanced`` is the [slices, rows, cols] mask (not in to_dict)."""

    n_sd: float
    threshold: float
    remote_segment: int | None  # None when the user gave the remote region
    remote_mean: float
    remote_sd: float
    myocardium_ml: float
    enhanced_ml: float
    enhanced_percent: float
    lge_present: bool
    presence_cutoff_percent: float
    segments: list[SegmentEnhancement]
    enhanced: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def by_segment(self) -> dict[int, float]:
        """Enhanced percent of each segment present."""
        return {s.segment: s.enhanced_percent for s in self.segments}

    def to_dict(self) -> dict:
        return {
            "method": f"{self.n_sd:g}-SD above remote myocardium",
            "n_sd": float(self.n_sd),
            "threshold": float(self.threshold),
            "remote_segment": self.remote_segment,
            "remote_mean": float(self.remote_mean),
            "remote_sd": float(self.remote_sd),
            "myocardium_ml": float(self.myocardium_ml),
            "enhanced_ml": float(self.enhanced_ml),
            "enhanced_percent": float(self.enhanced_percent),
            "lge_present": bool(self.lge_present),
            "presence_cutoff_percent": float(self.presence_cutoff_percent),
            "segments": [s.to_dict() for s in self.segments],
            "warnings": list(self.warnings),
        }


def lge_extent(
    image: np.ndarray,
    labels: np.ndarray,
    ijk_to_lps: np.ndarray,
    aha: AhaSegmentation | None,
    *,
    lv_myocardium: Label = LGE_LV_MYOCARDIUM,
    n_sd: float = 5.0,
    remote_mask: np.ndarray | None = None,
    min_component_pixels: int = 0,
    presence_cutoff_percent: float = 1.0,
    slice_positions: Sequence[float] | None = None,
    excluded_slices: Sequence[int] = (),
    blood_pool: Label | None = None,
    drop_border_rims: bool = False,
) -> LgeExtent:
    """Enhanced myocardium of one LGE frame (``image`` and ``labels`` ``[slices, rows, cols]``).

    ``aha`` gives the per-segment report and the remote segment; without it a
    ``remote_mask`` is needed. ``min_component_pixels`` > 0 drops enhanced islands
    smaller than that (8-connected, per slice), which are mostly noise.
    ``excluded_slices``, ``blood_pool`` and ``drop_border_rims``: see the module docstring.
    LGE is called present when the enhanced percent exceeds ``presence_cutoff_percent``.
    """
    image = np.asarray(image, dtype=float)
    labels = np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image and labels must both be [slices, rows, cols]; got {image.shape} and {labels.shape}")
    myocardium = label_mask(labels, lv_myocardium)
    myocardium[list(excluded_slices)] = False
    if not myocardium.any():
        raise ValueError("no LV myocardium in the label map" + (" outside the excluded slices" if len(excluded_slices) else ""))
    segments = None
    if aha is not None:
        segments = np.asarray(aha.segments)
        if segments.shape != labels.shape:
            raise ValueError(f"AHA segment map {segments.shape} does not match the labels {labels.shape}")
    warnings: list[str] = []

    remote_segment = None
    if remote_mask is not None:
        remote = np.asarray(remote_mask, dtype=bool) & myocardium
    elif segments is not None:
        remote_segment = darkest_segment(image, np.where(myocardium, segments, 0))
        remote = (segments == remote_segment) & myocardium
    else:
        raise ValueError("give AHA segments or a remote_mask to define remote myocardium")
    if remote.sum() < 2:
        raise ValueError("remote myocardium holds fewer than 2 pixels; no SD to threshold with")
    remote_values = image[remote]
    remote_mean, remote_sd = float(remote_values.mean()), float(remote_values.std(ddof=1))
    threshold = remote_mean + n_sd * remote_sd
    if remote_values.size < MIN_REMOTE_PIXELS:
        warnings.append(f"remote myocardium has only {remote_values.size} pixels; the threshold is unstable")

    enhanced = myocardium & (image > threshold)
    if min_component_pixels > 0:
        enhanced = drop_small_components(enhanced, min_component_pixels)
    if drop_border_rims:
        if blood_pool is None:
            raise ValueError("drop_border_rims needs the blood_pool label")
        enhanced = drop_border_rims_of(enhanced, label_mask(labels, blood_pool))

    voxel_ml = slice_thicknesses(labels.shape[0], ijk_to_lps, slice_positions) * pixel_area_mm2(ijk_to_lps) / 1000

    def volume_ml(mask: np.ndarray) -> float:
        return float(voxel_ml @ mask.sum(axis=(1, 2)))

    myocardium_ml, enhanced_ml = volume_ml(myocardium), volume_ml(enhanced)
    percent = 100 * enhanced_ml / myocardium_ml
    per_segment = []
    if segments is not None:
        for n in aha.present_segments:
            in_segment = (segments == n) & myocardium
            segment_ml = volume_ml(in_segment)
            if segment_ml == 0:
                continue
            segment_enhanced_ml = volume_ml(enhanced & in_segment)
            per_segment.append(
                SegmentEnhancement(
                    segment=n,
                    myocardium_ml=segment_ml,
                    enhanced_ml=segment_enhanced_ml,
                    enhanced_percent=100 * segment_enhanced_ml / segment_ml,
                    mean_intensity=float(image[in_segment].mean()),
                )
            )
    return LgeExtent(
        n_sd=n_sd,
        threshold=threshold,
        remote_segment=remote_segment,
        remote_mean=remote_mean,
        remote_sd=remote_sd,
        myocardium_ml=myocardium_ml,
        enhanced_ml=enhanced_ml,
        enhanced_percent=percent,
        lge_present=percent > presence_cutoff_percent,
        presence_cutoff_percent=presence_cutoff_percent,
        segments=per_segment,
        enhanced=enhanced,
        warnings=warnings,
    )


def darkest_segment(image: np.ndarray, segments: np.ndarray) -> int:
    """The segment (value > 0 in ``segments``) of lowest mean intensity, among those with
    at least MIN_REMOTE_PIXELS pixels (any size if none is that large)."""
    counts = np.bincount(segments.ravel(), minlength=17)
    sums = np.bincount(segments.ravel(), weights=image.ravel(), minlength=17)
    present = np.flatnonzero(counts[1:] > 0) + 1
    if present.size == 0:
        raise ValueError("no AHA segment holds myocardium")
    large = present[counts[present] >= MIN_REMOTE_PIXELS]
    candidates = large if large.size else present
    means = sums[candidates] / counts[candidates]
    return int(candidates[np.argmin(means)])


def drop_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` ([slices, rows, cols]) without 8-connected in-plane islands under ``min_pixels``."""
    kept = np.zeros_like(mask, dtype=bool)
    for k, plane in enumerate(np.asarray(mask, dtype=bool)):
        if not plane.any():
            continue
        components = label_components(plane, fully_connected=True)
        sizes = np.bincount(components.ravel())
        big = sizes >= min_pixels
        big[0] = False
        kept[k] = big[components]
    return kept


def drop_border_rims_of(enhanced: np.ndarray, blood: np.ndarray) -> np.ndarray:
    """``enhanced`` without the islands (8-connected, per slice) whose every pixel touches ``blood``."""
    kept = np.zeros_like(enhanced, dtype=bool)
    for k, plane in enumerate(np.asarray(enhanced, dtype=bool)):
        if not plane.any():
            continue
        components = label_components(plane, fully_connected=True)
        off_border = components[plane & ~dilate_in_plane(blood[k])]
        kept[k] = plane & np.isin(components, np.unique(off_border))
    return kept


def partial_volume_slices(
    has_myocardium: np.ndarray,
    has_blood_pool: np.ndarray,
    slice_depths_mm: np.ndarray | None = None,
    half_slab_mm: np.ndarray | None = None,
    mitral_mm: float | None = None,
    apex_mm: float | None = None,
) -> dict[int, str]:
    """LGE slices whose slab mixes myocardium with bright blood beyond it, and why.

    * a slice with myocardium but no LV blood pool is a cap: the apex's tip or a slice
      grazing the base, its slab holding cavity or atrial blood above or below;
    * given the mitral plane and the LV apex as depths along the slice normal (from a
      long-axis cine at end-diastole: LGE is triggered in diastole) with each slice's depth
      and half slab, a slice whose slab reaches past the mitral plane holds atrial blood.
    """
    has_myocardium, has_blood_pool = np.asarray(has_myocardium, bool), np.asarray(has_blood_pool, bool)
    excluded: dict[int, str] = {}
    for k in np.flatnonzero(has_myocardium & ~has_blood_pool):
        excluded[int(k)] = "myocardium without LV blood pool (apical tip or basal cap): partial volume with blood"
    if mitral_mm is None or apex_mm is None or not (np.isfinite(mitral_mm) and np.isfinite(apex_mm)):
        return excluded
    towards_base = 1.0 if mitral_mm > apex_mm else -1.0
    for k in np.flatnonzero(has_myocardium):
        past = (slice_depths_mm[k] - mitral_mm) * towards_base + half_slab_mm[k]
        if past > 0 and int(k) not in excluded:
            excluded[int(k)] = (f"its slab reaches {past:.1f} mm past the mitral plane of the 4-chamber cine: "
                                "partial volume with atrial blood")
    return excluded
