"""T1 / T2 map values over the LV myocardium, globally and per AHA segment.

Pixels at the edge of the myocardium mix in blood pool (or epicardial fat), which biases
T1 and T2, so by default the myocardium is eroded by one pixel in-plane (a pixel stays
when its four edge neighbours are myocardium too). A thin wall can lose a whole
segment that way; such a segment falls back to its un-eroded pixels, and the global
values use the same pixels as the segments. Non-finite map values are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .aha import AHA_SEGMENT_NAMES, AhaSegmentation
from .masks import erode_in_plane
from .volumes import Label, label_mask, task_label

MAPPING_LV_MYOCARDIUM = task_label("seg_mapping", "lv_myocardium")


@dataclass
class RegionValues:
    """Summary of the map over one region; SD is the sample SD (ddof=1, 0 for one pixel)."""

    mean: float
    median: float
    sd: float
    pixels: int
    eroded: bool

    @classmethod
    def of(cls, values: np.ndarray, eroded: bool) -> RegionValues:
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return cls(float(values.mean()), float(np.median(values)), sd, int(values.size), eroded)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "median": self.median, "sd": self.sd, "pixels": self.pixels, "eroded": self.eroded}


@dataclass
class MapValues:
    """Myocardial map values: global and per segment (``segments`` maps number -> values)."""

    global_values: RegionValues
    segments: dict[int, RegionValues]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "global": self.global_values.to_dict(),
            "segments": [
                {"segment": n, "name": AHA_SEGMENT_NAMES[n], **values.to_dict()} for n, values in sorted(self.segments.items())
            ],
            "warnings": list(self.warnings),
        }


def map_values(
    map_image: np.ndarray,
    labels: np.ndarray,
    aha: AhaSegmentation | None = None,
    *,
    lv_myocardium: Label = MAPPING_LV_MYOCARDIUM,
    erode: bool = True,
) -> MapValues:
    """Map statistics over the myocardium of ``labels``; both arrays ``[slices, rows, cols]``.

    With ``aha`` the values are also given per segment.
    """
    map_image = np.asarray(map_image, dtype=float)
    labels = np.asarray(labels)
    if map_image.shape != labels.shape or map_image.ndim != 3:
        raise ValueError(f"map and labels must both be [slices, rows, cols]; got {map_image.shape} and {labels.shape}")
    myocardium = label_mask(labels, lv_myocardium) & np.isfinite(map_image)
    if not myocardium.any():
        raise ValueError("no LV myocardium with finite map values")
    warnings: list[str] = []
    used = erode_in_plane(myocardium) if erode else myocardium.copy()
    if erode and not used.any():
        warnings.append("erosion removed the whole myocardium; values are not eroded")
        used, erode = myocardium.copy(), False

    per_segment: dict[int, RegionValues] = {}
    if aha is not None:
        segments = np.asarray(aha.segments)
        if segments.shape != labels.shape:
            raise ValueError(f"AHA segment map {segments.shape} does not match the labels {labels.shape}")
        for n in aha.present_segments:
            in_segment = (segments == n) & myocardium
            if not in_segment.any():
                continue
            eroded = erode
            if not (used & in_segment).any():
                warnings.append(f"segment {n} ({AHA_SEGMENT_NAMES[n]}): empty after erosion; un-eroded pixels used")
                used |= in_segment
                eroded = False
            per_segment[n] = RegionValues.of(map_image[used & in_segment], eroded)
    return MapValues(RegionValues.of(map_image[used], erode), per_segment, warnings)
