"""RV insertion points derived from a short-axis label map, and joined with the heatmap model's.

The insertion points are where the RV free wall attaches to the LV: the two ends of the
arc along which the RV blood pool touches the LV epicardium (LV blood pool plus
myocardium). This is the definition the synthetic ground truth uses, so the derivation
can be checked against it.

Method: rays are cast from the LV centre every degree; on each ray the last pixel
inside the LV epicardium is the epicardial point, and the ray "touches" the RV when the
first pixel outside is RV blood pool (or lies within ``contact_px`` of it; 0 matches the
truth best: 0.8 mm mean error against 1.3 mm with 1 px). Short gaps in the contact arc
(label noise) are closed and short specks dropped; a slice gives points only when
exactly one contact arc remains, at least ``min_arc_deg`` long and not closing the whole
circle. The two arc ends are the insertion points.

Validation against the synthetic truth (72 slices of 11 studies, all pathologies): mean
error 0.8 mm, 95th percentile 1.5 mm, maximum 2.1 mm, no anterior/inferior swap.

Anterior versus inferior: a 2D label map has no anatomical axes, only a handedness. In
the standard short-axis display (viewed from the apex: RV on the left, anterior wall at
the top) walking the contact arc counter-clockwise on screen goes from the anterior to
the inferior insertion point; this holds whatever the in-plane rotation of the heart, so
only a mirrored image would swap them. Synthetic DICOM stacks and the ACDC arrays both
have this handedness (checked against the synthetic truth and by eye on ACDC).

In the analysis the rule runs on the model's segmentation and the heatmap model fills
the slices where it finds no clean contact arc (``joined_insertion_points``). The
training data use the rule on the true labels, so the two agree by construction where
the segmentation is right.
"""

from __future__ import annotations

import numpy as np

from .masks import dilate_in_plane

RAY_STEP_DEG = 1.0
RADIUS_STEP_PX = 0.25


def rv_insertion_points(
    lv_epicardium: np.ndarray,
    rv_blood: np.ndarray,
    *,
    contact_px: int = 0,
    min_arc_deg: float = 20.0,
    max_gap_deg: float = 15.0,
    min_rv_px: int = 20,
) -> np.ndarray | None:
    """(anterior, inferior) insertion points as float [2, 2] (row, col), or None.

    ``lv_epicardium`` and ``rv_blood`` are boolean [rows, cols] masks of one slice. None
    when the slice has no clean contact arc (no RV, RV all around, fragmented contact).
    """
    lv_epicardium = np.asarray(lv_epicardium, dtype=bool)
    rv_blood = np.asarray(rv_blood, dtype=bool)
    if lv_epicardium.sum() < 20 or rv_blood.sum() < min_rv_px:
        return None
    centre = np.argwhere(lv_epicardium).mean(axis=0)
    if not _inside(lv_epicardium, centre[None])[0]:
        return None  # a crescent-shaped LV (basal cut): no centre to cast rays from

    theta = np.radians(np.arange(0.0, 360.0, RAY_STEP_DEG))
    # Screen counter-clockwise angle: rows grow downwards, so up is -row.
    directions = np.stack([-np.sin(theta), np.cos(theta)], axis=1)
    reach = float(np.linalg.norm(np.argwhere(lv_epicardium) - centre, axis=1).max()) + 2.0  # just past the LV
    radii = np.arange(0.0, reach, RADIUS_STEP_PX)
    rays = centre + directions[:, None, :] * radii[None, :, None]  # [angles, radii, 2]
    inside = _inside(lv_epicardium, rays)
    exit_index = np.argmin(inside, axis=1)  # first sample outside the LV on each ray
    if (exit_index == 0).any() or inside.all(axis=1).any():
        return None
    rows = np.arange(len(theta))
    near_rv = dilate_in_plane(rv_blood, contact_px, kernel="disc")
    touching = _inside(near_rv, rays[rows, exit_index])
    touching = _clean_runs(touching, round(max_gap_deg / RAY_STEP_DEG), round(5.0 / RAY_STEP_DEG))
    runs = _runs(touching)
    if len(runs) != 1:
        return None
    start, length = runs[0]
    if length * RAY_STEP_DEG < min_arc_deg or length == len(theta):
        return None
    end = (start + length - 1) % len(theta)
    epicardial = rays[rows, exit_index - 1]  # last sample inside the LV
    return np.stack([epicardial[start], epicardial[end]]).astype(np.float32)


def _inside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nearest-pixel lookup of ``mask`` at float (row, col) points; outside the image is False."""
    index = np.rint(points).astype(int)
    r, c = index[..., 0], index[..., 1]
    valid = (r >= 0) & (r < mask.shape[0]) & (c >= 0) & (c < mask.shape[1])
    result = np.zeros(points.shape[:-1], dtype=bool)
    result[valid] = mask[r[valid], c[valid]]
    return result


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every circular run of True."""
    n = len(flags)
    if flags.all():
        return [(0, n)]
    shift = int(np.argmin(flags))  # start the walk on a False so no run wraps
    rolled = np.roll(flags, -shift)
    padded = np.concatenate([[False], rolled, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return [((int(a) + shift) % n, int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def _clean_runs(flags: np.ndarray, max_gap: int, min_run: int) -> np.ndarray:
    """Close False gaps up to ``max_gap`` long between True runs, then drop True runs shorter than ``min_run``."""
    flags = flags.copy()
    for start, length in _runs(~flags):
        if length <= max_gap and length < len(flags) and flags.any():
            flags[(start + np.arange(length)) % len(flags)] = True
    for start, length in _runs(flags):
        if length < min_run:
            flags[(start + np.arange(length)) % len(flags)] = False
    return flags


def stack_insertion_points(labels: np.ndarray, *, lv_blood: int, lv_myocardium: int, rv_blood: int) -> np.ndarray:
    """The rule on every slice of one frame ``labels`` [slices, rows, cols]: [slices, 2, 2]
    (anterior, inferior) x (row, col), NaN where a slice gives no clean contact arc."""
    out = np.full((len(labels), 2, 2), np.nan, dtype=np.float32)
    for k, frame in enumerate(labels):
        points = rv_insertion_points(np.isin(frame, (lv_blood, lv_myocardium)), frame == rv_blood)
        if points is not None:
            out[k] = points
    return out


def joined_insertion_points(from_segmentation: np.ndarray, from_heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One set of points [slices, 2, 2] from both sources, and where each came from.

    A point the segmentation gives is used; the heatmap model's fills the slices where the
    segmentation has no clean contact arc (basal and apical slices mostly). On the ACDC
    test patients the rule on a good segmentation is far closer to the reference than the
    heatmap model, also where the two disagree (Training/results/cpu_hybrid: mean 7.1 / 4.3
    mm against 13.9 / 7.5 mm), so a disagreement is not settled in the model's favour.
    The second array [slices, 2] says "segmentation", "heatmap" or "" (no point) for each.
    """
    seg = np.asarray(from_segmentation, dtype=np.float32)
    heat = np.asarray(from_heatmaps, dtype=np.float32)
    if seg.shape != heat.shape or seg.shape[1:] != (2, 2):
        raise ValueError(f"insertion points must both be [slices, 2, 2], got {seg.shape} and {heat.shape}")
    use_seg = np.isfinite(seg).all(-1)
    use_heat = ~use_seg & np.isfinite(heat).all(-1)
    joined = np.where(use_seg[..., None], seg, np.where(use_heat[..., None], heat, np.nan)).astype(np.float32)
    source = np.where(use_seg, "segmentation", np.where(use_heat, "heatmap", ""))
    return joined, source
