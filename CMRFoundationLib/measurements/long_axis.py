"""Where the ventricles end along the short-axis stack, measured on a long-axis (4-chamber) cine.

Simpson's rule on short-axis slices counts the slab of every slice whole, so the valve
plane, which cuts the most basal slab anywhere, moves a volume by up to half of that slab
(10-25 mL at 8-10 mm slices). CMR readers correct this by placing the valve planes on
the long-axis views; this module does that from the seg_4ch_cine segmentation:

* mitral plane: the median depth of the LV and LA blood pool pixels that touch each
  other (the open valve), i.e. the interface between them;
* tricuspid plane: the seg_4ch_cine task labels no RV, so the RA floor stands for the
  annulus: the 1st percentile of the RA pixels' depths towards the apex (robust to a
  stray pixel), moved half a pixel further, to the edge of those pixels;
* endocardial / epicardial apex: the most apical LV blood pool / LV pixel.

"Depth" is the position along the short-axis stack's unit slice normal (mm from the LPS
origin), so it compares directly with ``volumes.slice_depths_mm`` of every short-axis
slice. Long-axis frames are matched to short-axis frames by
their place in the cardiac cycle (``matching_frames``), since the two cines are separate
breath-holds with their own frame counts.

``volumes.clipped_slab_mm`` then ends the short-axis slabs at these depths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..stack import numbered
from .masks import dilate_in_plane
from .volumes import Label, label_mask

TRICUSPID_PERCENTILE = 1.0


@dataclass
class LongAxisBounds:
    """Depths (mm along the short-axis slice axis) per long-axis frame; NaN where not found."""

    mitral_mm: np.ndarray
    tricuspid_mm: np.ndarray
    lv_apex_mm: np.ndarray  # endocardial
    epicardial_apex_mm: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def for_frames(self, indices: np.ndarray) -> "LongAxisBounds":
        """The bounds re-indexed, e.g. one entry per short-axis frame (``matching_frames``)."""
        return LongAxisBounds(self.mitral_mm[indices], self.tricuspid_mm[indices], self.lv_apex_mm[indices],
                              self.epicardial_apex_mm[indices], list(self.warnings))

    def frame(self, index: int) -> dict[str, float | None]:
        def value(array):
            v = float(array[index])
            return v if np.isfinite(v) else None

        return {"mitral_mm": value(self.mitral_mm), "tricuspid_mm": value(self.tricuspid_mm),
                "lv_apex_mm": value(self.lv_apex_mm), "epicardial_apex_mm": value(self.epicardial_apex_mm)}


def pixel_depths_mm(plane_ijk_to_lps: np.ndarray, shape: tuple[int, int], axis_lps: np.ndarray) -> np.ndarray:
    """Depth along ``axis_lps`` (the short-axis normal) of every pixel centre of one plane, ``[rows, cols]``.

    ``plane_ijk_to_lps`` maps (col, row, 0) of that plane to LPS.
    """
    m = np.asarray(plane_ijk_to_lps, dtype=float)
    axis = np.asarray(axis_lps, dtype=float) / np.linalg.norm(axis_lps)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return float(m[:3, 3] @ axis) + cols * float(m[:3, 0] @ axis) + rows * float(m[:3, 1] @ axis)


def long_axis_bounds(
    labels: np.ndarray,
    plane_ijk_to_lps: np.ndarray,
    axis_lps: np.ndarray,
    *,
    lv_blood: Label,
    lv_myocardium: Label,
    la_blood: Label,
    ra_blood: Label,
) -> LongAxisBounds:
    """Valve planes and apices in every frame of a long-axis plane ``labels`` ``[frames, rows, cols]``."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [frames, rows, cols], got shape {labels.shape}")
    depth = pixel_depths_mm(plane_ijk_to_lps, labels.shape[1:], axis_lps)
    # How far a pixel reaches along the axis beyond its centre (the larger in-plane step).
    half_pixel = 0.5 * max(abs(depth[0, 1] - depth[0, 0]) if depth.shape[1] > 1 else 0.0,
                           abs(depth[1, 0] - depth[0, 0]) if depth.shape[0] > 1 else 0.0)
    n = labels.shape[0]
    mitral, tricuspid, apex, epi_apex = (np.full(n, np.nan) for _ in range(4))
    warnings: list[str] = []
    for f in range(n):
        lv = label_mask(labels[f], lv_blood)
        la = label_mask(labels[f], la_blood)
        ra = label_mask(labels[f], ra_blood)
        heart = lv | label_mask(labels[f], lv_myocardium)
        contact = (lv & dilate_in_plane(la)) | (la & dilate_in_plane(lv))
        if not contact.any():
            continue
        mitral[f] = float(np.median(depth[contact]))
        # The apex lies on the far side of the LV from the mitral plane.
        towards_apex = -1.0 if float(np.mean(depth[lv])) < mitral[f] else 1.0
        apex[f] = float(_extreme(depth[lv], towards_apex))
        epi_apex[f] = float(_extreme(depth[heart], towards_apex))
        if ra.any():
            floor = np.percentile(depth[ra] * towards_apex, 100 - TRICUSPID_PERCENTILE) + half_pixel
            tricuspid[f] = float(floor * towards_apex)
    missing = np.flatnonzero(~np.isfinite(mitral))
    if missing.size:
        warnings.append(f"long-axis frame(s) {numbered(missing)}: the LV does not touch the LA, no mitral plane")
    return LongAxisBounds(mitral, tricuspid, apex, epi_apex, warnings)


def _extreme(values: np.ndarray, direction: float) -> float:
    return float(values.max() if direction > 0 else values.min())


def cycle_fractions(n_frames: int, frame_times_ms: np.ndarray | None) -> np.ndarray:
    """Place of every frame in the cardiac cycle, 0..1 (from trigger times when known)."""
    if frame_times_ms is not None and len(frame_times_ms) == n_frames and n_frames > 1:
        times = np.asarray(frame_times_ms, dtype=float)
        step = float(np.median(np.diff(times)))
        if np.all(np.isfinite(times)) and step > 0:
            return (times - times[0]) / (step * n_frames)
    return np.arange(n_frames) / max(n_frames, 1)


def matching_frames(sax_fractions: np.ndarray, lax_fractions: np.ndarray) -> np.ndarray:
    """For every short-axis frame, the long-axis frame nearest to it in the (cyclic) cardiac cycle."""
    d = np.abs(np.asarray(sax_fractions)[:, None] - np.asarray(lax_fractions)[None, :]) % 1.0
    return np.argmin(np.minimum(d, 1 - d), axis=1)


# A long-axis plane must contain the long axis, i.e. stand near-perpendicular to the short axis.
LONG_AXIS_MIN_DEG = 60.0


def not_a_long_axis_plane(plane_angle_deg: float) -> str | None:
    """Why a plane at ``plane_angle_deg`` from the short-axis slices cannot give valve planes or apices, or None."""
    if plane_angle_deg < LONG_AXIS_MIN_DEG:
        return f"the 4-chamber plane is only {plane_angle_deg:.0f} degrees from the short axis"
    return None


def valve_plane_problem(mitral_mm: np.ndarray, slice_depths_mm: np.ndarray, slice_spacing_mm: float) -> str | None:
    """Why a long-axis cine's valve planes must not clip a short-axis stack's end slabs, or None when they may.

    ``mitral_mm``: the mitral plane's depth per frame (NaN where not found) along the
    short-axis normal; ``slice_depths_mm``: the short-axis slices' depths on that axis,
    ``slice_spacing_mm`` the distance between them (the slice thickness for one slice). A
    mitral plane more than one slice beyond the stack means another breath-hold
    position, which would move every slab.
    """
    found = mitral_mm[np.isfinite(mitral_mm)]
    if found.size == 0:
        return "no mitral plane found on the 4-chamber cine"
    depths, reach = np.asarray(slice_depths_mm, dtype=float), float(slice_spacing_mm)
    if not (depths.min() - reach <= np.median(found) <= depths.max() + reach):
        return "the mitral plane of the 4-chamber cine lies outside the short-axis stack (more than one slice beyond it)"
    return None
