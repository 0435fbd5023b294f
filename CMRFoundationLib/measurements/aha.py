"""The AHA 16-segment model of the LV on a short-axis stack, and segmental wall thickness.

Conventions (one frame, labels ``[slices, rows, cols]``):

* Levels: the slices that hold LV myocardium, ordered from base to apex, are split into
  thirds by count (basal, mid, apical); when the count is not a multiple of three the
  basal third, then the mid third, take the extra slice.
* Angles are measured in millimetres in the image plane (so anisotropic pixels are
  handled) around the LV blood-pool centroid of each slice (the centroid of the whole LV,
  blood pool and myocardium, where a slice has no blood pool).
* Sense of rotation: from the anterior to the inferior RV insertion point along the short
  arc, which is the septal side where the RV is. All slices share one in-plane
  orientation, so one sense is used for the stack: the majority over the slices that
  have their own insertion points. This makes the result independent of image flips.
* Basal and mid slices: six 60-degree sectors starting at the anterior insertion point:
  anteroseptal, inferoseptal, inferior, inferolateral, anterolateral, anterior.
* Apical slices: four 90-degree sectors, septal centred on the bisector of the septal
  arc between the insertion points, then inferior, lateral and anterior.
* Slices without insertion points borrow the angles (about their own centre) of the
  nearest slice that has them; on equal distance, the slice nearer the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..stack import numbered
from .volumes import SAX_LV_BLOOD, SAX_LV_MYOCARDIUM, SAX_RV_BLOOD, Label, label_mask

AHA_SEGMENT_NAMES = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
}
LEVELS = ("basal", "mid", "apical")
# Segments in the order met when turning from the anterior insertion point through the septum.
_SECTORS_FROM_ANTERIOR = {"basal": (2, 3, 4, 5, 6, 1), "mid": (8, 9, 10, 11, 12, 7)}
# Apical segments in the same turning order, starting with the septal one.
_APICAL_FROM_SEPTUM = (14, 15, 16, 13)


class PlaneGeometry:
    """Pixel (row, col) <-> in-plane millimetres (x, y) for one stack's image plane.

    x runs along the columns, y is the part of the row direction perpendicular to it, so
    angles are true angles even for non-square or sheared pixels.
    """

    def __init__(self, ijk_to_lps: np.ndarray):
        m = np.asarray(ijk_to_lps, dtype=float)
        col_step, row_step = m[:3, 0], m[:3, 1]
        x_axis = col_step / np.linalg.norm(col_step)
        y_axis = row_step - (row_step @ x_axis) * x_axis
        y_axis /= np.linalg.norm(y_axis)
        # [x, y] = pixel_to_mm @ [col, row]
        self.pixel_to_mm = np.array([[x_axis @ col_step, x_axis @ row_step], [y_axis @ col_step, y_axis @ row_step]])
        self.mm_to_pixel = np.linalg.inv(self.pixel_to_mm)
        self.min_spacing_mm = float(min(np.linalg.norm(col_step), np.linalg.norm(row_step)))

    def offsets_mm(self, rows: np.ndarray, cols: np.ndarray, centre_rc: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in mm of pixels relative to a centre given as (row, col)."""
        d_col = np.asarray(cols, dtype=float) - centre_rc[1]
        d_row = np.asarray(rows, dtype=float) - centre_rc[0]
        m = self.pixel_to_mm
        return m[0, 0] * d_col + m[0, 1] * d_row, m[1, 0] * d_col + m[1, 1] * d_row

    def angles_deg(self, rows, cols, centre_rc) -> np.ndarray:
        x, y = self.offsets_mm(rows, cols, centre_rc)
        return np.degrees(np.arctan2(y, x))


@dataclass
class SliceSectors:
    """How one slice is divided: its level, centre and the angles of its sectors."""

    level: str  # basal | mid | apical
    centre_rc: tuple[float, float]  # (row, col) the angles turn around
    anterior_deg: float  # in-plane angle of the anterior insertion point
    septal_arc_deg: float  # from anterior to inferior insertion point, through the septum
    turn: int  # +1 or -1: the sense (in the x, y plane) that goes through the septum
    insertion_slice: int  # the slice whose insertion points gave the angles

    def segment_at(self, angle_deg: np.ndarray) -> np.ndarray:
        """AHA segment number (1..16) at in-plane angles about ``centre_rc``."""
        turned = np.mod(self.turn * (np.asarray(angle_deg, dtype=float) - self.anterior_deg), 360.0)
        if self.level == "apical":
            from_septal_start = np.mod(turned - self.septal_arc_deg / 2 + 45.0, 360.0)
            return np.array(_APICAL_FROM_SEPTUM)[(from_septal_start // 90).astype(int) % 4]
        return np.array(_SECTORS_FROM_ANTERIOR[self.level])[(turned // 60).astype(int) % 6]

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "centre_rc": [float(v) for v in self.centre_rc],
            "anterior_deg": float(self.anterior_deg),
            "septal_arc_deg": float(self.septal_arc_deg),
            "turn": int(self.turn),
            "insertion_slice": int(self.insertion_slice),
        }


@dataclass
class AhaSegmentation:
    """Segment map (0 = not myocardium, 1..16) of one frame and how it was made."""

    segments: np.ndarray  # uint8, [slices, rows, cols]
    slices: list[SliceSectors | None]  # None for slices without LV myocardium
    basal_end: str  # "first" or "last": which end of the stack is basal
    warnings: list[str] = field(default_factory=list)

    @property
    def slice_levels(self) -> list[str | None]:
        return [None if s is None else s.level for s in self.slices]

    @property
    def present_segments(self) -> list[int]:
        return [int(v) for v in np.unique(self.segments) if v > 0]

    def to_dict(self) -> dict:
        counts = np.bincount(self.segments.ravel(), minlength=17)
        return {
            "basal_end": self.basal_end,
            "slice_levels": self.slice_levels,
            "slices": [None if s is None else s.to_dict() for s in self.slices],
            "slice_segments": [[int(v) for v in np.unique(plane) if v > 0] for plane in self.segments],
            "segments": [
                {"segment": n, "name": AHA_SEGMENT_NAMES[n], "pixels": int(counts[n])} for n in self.present_segments
            ],
            "warnings": list(self.warnings),
        }


def guess_basal_end(
    labels: np.ndarray,
    *,
    lv_blood: Label = SAX_LV_BLOOD,
    lv_myocardium: Label = SAX_LV_MYOCARDIUM,
    rv_blood: Label | None = SAX_RV_BLOOD,
) -> str:
    """Which end of a short-axis stack ``[slices, rows, cols]`` is the base: "first" or "last".

    The LV narrows from base to apex, so the outer third of the myocardial slices with the
    larger LV cross-section (blood pool + myocardium, i.e. the size of the myocardial
    ring) is basal. On a tie the end with more RV blood pool wins (the RV stops short of
    the apex); on a full tie, "first".
    """
    labels = _check_frame(labels)
    myocardial = np.flatnonzero(label_mask(labels, lv_myocardium).any(axis=(1, 2)))
    if myocardial.size == 0:
        raise ValueError("no LV myocardium in the label map; cannot tell the base from the apex")
    third = max(1, int(np.ceil(myocardial.size / 3)))
    first, last = myocardial[:third], myocardial[-third:]
    lv_area = label_mask(labels, (*np.atleast_1d(lv_blood), *np.atleast_1d(lv_myocardium))).sum(axis=(1, 2))
    if lv_area[first].sum() != lv_area[last].sum():
        return "first" if lv_area[first].sum() > lv_area[last].sum() else "last"
    if rv_blood is not None:
        rv_area = label_mask(labels, rv_blood).sum(axis=(1, 2))
        if rv_area[last].sum() > rv_area[first].sum():
            return "last"
    return "first"


def aha_segments(
    labels: np.ndarray,
    ijk_to_lps: np.ndarray,
    insertion_points: np.ndarray,
    *,
    basal_end: str | None = None,
    lv_blood: Label = SAX_LV_BLOOD,
    lv_myocardium: Label = SAX_LV_MYOCARDIUM,
    rv_blood: Label | None = SAX_RV_BLOOD,
) -> AhaSegmentation:
    """AHA segments of the LV myocardium in one frame of a short-axis stack.

    ``labels``: ``[slices, rows, cols]``. ``insertion_points``: ``[slices, 2, 2]``, per
    slice the anterior then the inferior RV insertion point as (row, col) pixels, NaN
    where a slice has none. ``basal_end``: "first" if slice 0 is basal, "last" if the last
    slice is; None guesses it with ``guess_basal_end`` (said in the warnings).
    """
    labels = _check_frame(labels)
    points = np.asarray(insertion_points, dtype=float)
    if points.shape != (labels.shape[0], 2, 2):
        raise ValueError(
            f"insertion_points must be [slices, 2 (anterior, inferior), 2 (row, col)] = {(labels.shape[0], 2, 2)}, got {points.shape}"
        )
    warnings: list[str] = []
    if basal_end is None:
        basal_end = guess_basal_end(labels, lv_blood=lv_blood, lv_myocardium=lv_myocardium, rv_blood=rv_blood)
        warnings.append(f"base not given: guessed at the {basal_end} slice end (larger LV cross-section)")
    if basal_end not in ("first", "last"):
        raise ValueError(f"basal_end must be 'first', 'last' or None, got {basal_end!r}")

    myocardium = label_mask(labels, lv_myocardium)
    levels = slice_levels(myocardium, basal_end)
    if sum(level is not None for level in levels) < 3:
        warnings.append("fewer than three slices with LV myocardium: not every level is present")
    geometry = PlaneGeometry(ijk_to_lps)
    centres = [_lv_centre(labels[k], lv_blood, lv_myocardium) for k in range(labels.shape[0])]
    own_angles = _insertion_angles(points, centres, geometry, warnings)
    if not own_angles:
        raise ValueError("no slice with LV has both RV insertion points; cannot place the AHA segments")
    turn = _septal_turn(own_angles, warnings)

    segments = np.zeros(labels.shape, dtype=np.uint8)
    sectors: list[SliceSectors | None] = [None] * labels.shape[0]
    for k, level in enumerate(levels):
        if level is None:
            continue
        source = _nearest_with_points(k, sorted(own_angles), basal_end)
        anterior, inferior = own_angles[source]
        sectors[k] = SliceSectors(
            level=level,
            centre_rc=centres[k],
            anterior_deg=anterior,
            septal_arc_deg=float(np.mod(turn * (inferior - anterior), 360.0)),
            turn=turn,
            insertion_slice=source,
        )
        rows, cols = np.nonzero(myocardium[k])
        segments[k, rows, cols] = sectors[k].segment_at(geometry.angles_deg(rows, cols, centres[k]))
    return AhaSegmentation(segments, sectors, basal_end, warnings)


def slice_levels(myocardium: np.ndarray, basal_end: str) -> list[str | None]:
    """basal / mid / apical for each slice holding myocardium (``[slices, rows, cols]`` mask), else None."""
    myocardial = np.flatnonzero(np.asarray(myocardium).any(axis=(1, 2)))
    base_to_apex = myocardial if basal_end == "first" else myocardial[::-1]
    levels: list[str | None] = [None] * len(myocardium)
    for level, part in zip(LEVELS, np.array_split(base_to_apex, 3)):
        for k in part:
            levels[int(k)] = level
    return levels


@dataclass
class SegmentThickness:
    segment: int
    mean_mm: float
    rays: int

    def to_dict(self) -> dict:
        name = AHA_SEGMENT_NAMES[self.segment]
        return {"segment": self.segment, "name": name, "mean_mm": float(self.mean_mm), "rays": self.rays}


@dataclass
class WallThickness:
    """Mean myocardial thickness per AHA segment (mm), from radial rays."""

    segments: list[SegmentThickness]
    ray_step_deg: float

    def by_segment(self) -> dict[int, float]:
        return {s.segment: s.mean_mm for s in self.segments}

    def to_dict(self) -> dict:
        return {"ray_step_deg": self.ray_step_deg, "segments": [s.to_dict() for s in self.segments]}


def segmental_wall_thickness(
    labels: np.ndarray,
    ijk_to_lps: np.ndarray,
    aha: AhaSegmentation,
    *,
    lv_myocardium: Label = SAX_LV_MYOCARDIUM,
    ray_step_deg: float = 2.0,
) -> WallThickness:
    """Wall thickness per segment, usually at end-diastole (``labels`` ``[slices, rows, cols]``).

    From each slice's centre a ray every ``ray_step_deg`` is sampled every tenth of a
    pixel (nearest pixel); its thickness is the length of myocardium along it in mm, and
    it counts for the segment at its angle. Rays that miss the myocardium (a gap in a
    basal ring) are left out rather than counted as zero.
    """
    labels = _check_frame(labels)
    if labels.shape != aha.segments.shape:
        raise ValueError(f"labels {labels.shape} do not match the AHA segment map {aha.segments.shape}")
    myocardium = label_mask(labels, lv_myocardium)
    geometry = PlaneGeometry(ijk_to_lps)
    step_mm = geometry.min_spacing_mm / 10
    angles = np.arange(0.0, 360.0, ray_step_deg)
    directions_mm = np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))])  # [2, rays]
    directions_px = geometry.mm_to_pixel @ directions_mm  # [(col, row), rays]
    found: dict[int, list[float]] = {}
    for k, sectors in enumerate(aha.slices):
        if sectors is None or not myocardium[k].any():
            continue
        rows, cols = np.nonzero(myocardium[k])
        x, y = geometry.offsets_mm(rows, cols, sectors.centre_rc)
        reach_mm = float(np.hypot(x, y).max()) + 2 * geometry.min_spacing_mm
        radii = np.arange(0.0, reach_mm, step_mm)
        sample_cols = np.rint(sectors.centre_rc[1] + radii[:, None] * directions_px[0]).astype(int)
        sample_rows = np.rint(sectors.centre_rc[0] + radii[:, None] * directions_px[1]).astype(int)
        inside = (sample_rows >= 0) & (sample_rows < labels.shape[1]) & (sample_cols >= 0) & (sample_cols < labels.shape[2])
        hits = np.zeros(inside.shape, dtype=bool)
        hits[inside] = myocardium[k, sample_rows[inside], sample_cols[inside]]
        thickness = hits.sum(axis=0) * step_mm
        segment_of_ray = sectors.segment_at(angles)
        for segment, value in zip(segment_of_ray[thickness > 0], thickness[thickness > 0]):
            found.setdefault(int(segment), []).append(float(value))
    return WallThickness(
        [SegmentThickness(n, float(np.mean(found[n])), len(found[n])) for n in sorted(found)], ray_step_deg
    )


def _check_frame(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be one frame, [slices, rows, cols], got shape {labels.shape}")
    return labels


def _lv_centre(frame: np.ndarray, lv_blood: Label, lv_myocardium: Label) -> tuple[float, float] | None:
    """(row, col) centroid of the blood pool, else of the whole LV, else None."""
    for mask in (label_mask(frame, lv_blood), label_mask(frame, (*np.atleast_1d(lv_blood), *np.atleast_1d(lv_myocardium)))):
        if mask.any():
            rows, cols = np.nonzero(mask)
            return float(rows.mean()), float(cols.mean())
    return None


def _insertion_angles(points, centres, geometry: PlaneGeometry, warnings: list[str]) -> dict[int, tuple[float, float]]:
    """{slice: (anterior, inferior) angle in degrees} for slices with both points and an LV."""
    angles = {}
    for k, (anterior, inferior) in enumerate(points):
        if not np.isfinite(anterior).all() or not np.isfinite(inferior).all():
            continue
        if centres[k] is None:
            warnings.append(f"slice {numbered(k)}: RV insertion points but no LV; points ignored")
            continue
        pair = geometry.angles_deg(np.array([anterior[0], inferior[0]]), np.array([anterior[1], inferior[1]]), centres[k])
        angles[k] = (float(pair[0]), float(pair[1]))
    return angles


def _septal_turn(angles: dict[int, tuple[float, float]], warnings: list[str]) -> int:
    """+1 or -1: the sense whose way from anterior to inferior is the short (septal) arc."""
    votes = [1 if np.mod(inferior - anterior, 360.0) <= 180.0 else -1 for anterior, inferior in angles.values()]
    turn = 1 if sum(votes) >= 0 else -1
    disagree = [k for k, vote in zip(angles, votes) if vote != turn]
    if disagree:
        warnings.append(
            f"slice(s) {numbered(disagree)}: insertion points span more than 180 degrees the usual way; the stack's majority sense is used"
        )
    return turn


def _nearest_with_points(k: int, with_points: list[int], basal_end: str) -> int:
    """The slice with insertion points nearest to k; on a tie, the one nearer the base."""
    def nearer_base(s: int) -> bool:
        return s < k if basal_end == "first" else s > k

    return min(with_points, key=lambda s: (abs(s - k), not nearer_base(s)))
