"""Atrial area, length and single-plane area-length volume from a 4-chamber label map.

* Area: atrial pixels x pixel area.
* Long-axis length L: from the midpoint of the atrioventricular valve plane to the
  farthest atrial pixel. The valve plane is the set of atrial pixels touching the
  ventricle (within ``touch_px`` pixels, 8-connected); its midpoint is half-way between
  the two ends of that contact line (the annulus hinge points: the contact pixel farthest
  from the contact's centre, then the one farthest from it), so a curved contact line
  still gives the middle of the valve, not a point pulled into the atrium.
* Volume: V = 8 A^2 / (3 pi L) (single-plane area-length method).

Over a cine the reported frame is that of the largest volume (ventricular end-systole).
The seg_4ch_cine task labels no RV, so by default the RA gets an area but no length or
volume; pass ``rv`` when an RV label exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .masks import dilate_in_plane
from .volumes import Label, label_mask, task_label

FOUR_CH_LV_BLOOD = task_label("seg_4ch_cine", "lv_blood_pool")
FOUR_CH_LA = task_label("seg_4ch_cine", "la_blood_pool")
FOUR_CH_RA = task_label("seg_4ch_cine", "ra_blood_pool")


@dataclass
class AtriumMeasures:
    """One atrium in one frame; length and volume are None when the valve plane is unknown."""

    area_cm2: float
    length_mm: float | None = None
    volume_ml: float | None = None
    valve_midpoint_rc: tuple[float, float] | None = None  # (row, col) pixels
    far_point_rc: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        def pair(p):
            return None if p is None else [float(v) for v in p]

        return {
            "area_cm2": float(self.area_cm2),
            "length_mm": None if self.length_mm is None else float(self.length_mm),
            "volume_ml": None if self.volume_ml is None else float(self.volume_ml),
            "valve_midpoint_rc": pair(self.valve_midpoint_rc),
            "far_point_rc": pair(self.far_point_rc),
            "warnings": list(self.warnings),
        }


def area_length_volume_ml(area_mm2: float, length_mm: float) -> float:
    """Single-plane area-length volume 8 A^2 / (3 pi L), in mL."""
    return 8 * area_mm2**2 / (3 * np.pi * length_mm) / 1000


def atrium_measures(
    frame: np.ndarray, spacing: Sequence[float], atrium: Label, ventricle: Label | None, *, touch_px: int = 1
) -> AtriumMeasures:
    """Area, length and volume of one atrium in a ``[rows, cols]`` label frame.

    ``spacing`` is (column mm, row mm) as in ``ImageStack.spacing`` (extra values ignored),
    not DICOM PixelSpacing's (row, column) order.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"frame must be [rows, cols], got shape {frame.shape}")
    col_mm, row_mm = float(spacing[0]), float(spacing[1])
    inside = label_mask(frame, atrium)
    area_mm2 = float(inside.sum()) * col_mm * row_mm
    result = AtriumMeasures(area_cm2=area_mm2 / 100)
    if not inside.any():
        result.warnings.append("atrium not labelled in this frame")
        return result
    if ventricle is None:
        result.warnings.append("no ventricle label: the valve plane, length and volume are unknown")
        return result
    contact = inside & dilate_in_plane(label_mask(frame, ventricle), touch_px)
    if not contact.any():
        result.warnings.append("the atrium does not touch its ventricle: no valve plane, length or volume")
        return result

    def in_mm(rows, cols):
        return np.stack([rows * row_mm, cols * col_mm], axis=-1)

    valve = in_mm(*np.nonzero(contact))
    first_end = valve[np.argmax(np.linalg.norm(valve - valve.mean(axis=0), axis=1))]
    second_end = valve[np.argmax(np.linalg.norm(valve - first_end, axis=1))]
    midpoint_mm = (first_end + second_end) / 2
    rows, cols = np.nonzero(inside)
    distances = np.linalg.norm(in_mm(rows, cols) - midpoint_mm, axis=1)
    far = int(np.argmax(distances))
    result.length_mm = float(distances[far])
    result.valve_midpoint_rc = (float(midpoint_mm[0] / row_mm), float(midpoint_mm[1] / col_mm))
    result.far_point_rc = (int(rows[far]), int(cols[far]))
    if result.length_mm > 0:
        result.volume_ml = area_length_volume_ml(area_mm2, result.length_mm)
    return result


@dataclass
class AtriumCine:
    """One atrium over a cine, and the frame of its largest volume (or area without volume)."""

    frames: list[AtriumMeasures]
    max_frame: int | None

    @property
    def at_max(self) -> AtriumMeasures | None:
        return None if self.max_frame is None else self.frames[self.max_frame]

    def to_dict(self) -> dict:
        at_max = self.at_max
        return {
            "max_frame": self.max_frame,
            "max": None if at_max is None else at_max.to_dict(),
            "area_cm2": [float(m.area_cm2) for m in self.frames],
            "length_mm": [m.length_mm for m in self.frames],
            "volume_ml": [m.volume_ml for m in self.frames],
        }


@dataclass
class AtriaCine:
    la: AtriumCine
    ra: AtriumCine

    def to_dict(self) -> dict:
        return {"la": self.la.to_dict(), "ra": self.ra.to_dict()}


def atria_over_cine(
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    la: Label = FOUR_CH_LA,
    ra: Label = FOUR_CH_RA,
    lv: Label = FOUR_CH_LV_BLOOD,
    rv: Label | None = None,
    touch_px: int = 1,
) -> AtriaCine:
    """LA and RA in every frame of a 4-chamber cine: ``[frames, rows, cols]`` or ``[1, frames, rows, cols]``.

    Defaults are seg_4ch_cine's labels; the LA meets the LV blood pool, the RA the RV.
    """
    labels = np.asarray(labels)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 3:
        raise ValueError(f"labels must be [frames, rows, cols] (or one slice of a stack), got shape {labels.shape}")

    def over_frames(atrium: Label, ventricle: Label | None) -> AtriumCine:
        frames = [atrium_measures(f, spacing, atrium, ventricle, touch_px=touch_px) for f in labels]
        volumes = [m.volume_ml if m.volume_ml is not None else -1.0 for m in frames]
        areas = [m.area_cm2 for m in frames]
        if max(volumes) > 0:
            return AtriumCine(frames, int(np.argmax(volumes)))
        return AtriumCine(frames, int(np.argmax(areas)) if max(areas) > 0 else None)

    return AtriaCine(over_frames(la, lv), over_frames(ra, rv))
