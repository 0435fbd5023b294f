"""The AHA 16-segment bull's-eye as it is drawn: where each segment sits and the colour of a value.

One model for the report's SVG plots and the Slicer scene's bull's-eye images, so that both
show the same picture. Layout as it is usually drawn: anterior at the top, septum on the
left, basal segments (1-6) in the outer ring, mid (7-12) in the middle ring, apical (13-16)
in the centre. Angles are in degrees counter-clockwise from 3 o'clock, with y up.
"""

from __future__ import annotations

import math

import numpy as np

# segment -> (inner radius, outer radius, centre angle, angular width); radii in drawing units.
SEGMENT_PLACES = {
    **{1 + i: (70, 100, 90 + 60 * i, 60) for i in range(6)},  # basal
    **{7 + i: (40, 70, 90 + 60 * i, 60) for i in range(6)},  # mid
    **{13 + i: (0, 40, 90 + 90 * i, 90) for i in range(4)},  # apical
}
RADIUS = max(outer for _, outer, _, _ in SEGMENT_PLACES.values())

NO_DATA = (200, 200, 200)  # a segment without a value
COLOUR_STOPS = ((255, 255, 204), (253, 141, 60), (189, 0, 38))  # light yellow, orange, dark red


# Fixed colour scales, so that one colour means one value in every study: normal sits low
# on the scale and what is abnormal stands out (native T1 about 950-1050 ms at 1.5 T and
# 1150-1300 ms at 3 T with MOLLI, T2 about 45-55 ms, end-diastolic wall thickness 6-11 mm
# with 15 mm and more hypertrophic: Kawel-Boehm et al., JCMR 2020). Measurements not named
# here are coloured over the span of their values.
FIXED_SCALES = {"t2": (35.0, 75.0), "wall_thickness": (0.0, 20.0), "lge_extent": (0.0, 100.0)}
T1_SCALES_BY_FIELD_T = {1.5: (850.0, 1250.0), 3.0: (1050.0, 1450.0)}


def fixed_scale(measurement: str, field_strength_t: float | None = None) -> tuple[float, float] | None:
    """The fixed (low, high) colour scale of a measurement, or None for the span of its values.
    T1 needs the field strength; without it the 1.5 T scale is used."""
    if measurement == "t1":
        field = 1.5 if not field_strength_t else field_strength_t
        return T1_SCALES_BY_FIELD_T[min(T1_SCALES_BY_FIELD_T, key=lambda t: abs(t - field))]
    return FIXED_SCALES.get(measurement)


def finite_values(values: dict[int, float | None]) -> dict[int, float]:
    """The segments that have a value (None and NaN mean no value)."""
    return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}


def value_range(values: dict[int, float], scale: tuple[float, float] | None = None) -> tuple[float, float]:
    """(low, high) of the colour scale: ``scale`` when given (a fixed range), else the span of the finite values."""
    values = finite_values(values)
    low, high = scale or (min(values.values(), default=0.0), max(values.values(), default=1.0))
    if high <= low:  # one value, or all equal: widen so the value sits mid-scale
        low, high = low - 1, high + 1
    return low, high


def colour_of(value: float | None, low: float, high: float) -> tuple[int, int, int]:
    """The colour of ``value`` on the scale ``low``..``high`` (clipped at both ends); NO_DATA without a value."""
    if value is None or not math.isfinite(value):
        return NO_DATA
    t = min(max((value - low) / (high - low), 0.0), 1.0) * (len(COLOUR_STOPS) - 1)
    i = min(int(t), len(COLOUR_STOPS) - 2)
    a, b = COLOUR_STOPS[i], COLOUR_STOPS[i + 1]
    return tuple(round(a[c] + (b[c] - a[c]) * (t - i)) for c in range(3))


def segment_image(size: int = 2 * RADIUS + 1) -> np.ndarray:
    """int [size, size]: the AHA segment number of every pixel (0 outside the bull's-eye); row 0 at the top."""
    centre = (size - 1) / 2
    row, col = np.mgrid[0:size, 0:size]
    dx, dy = col - centre, centre - row  # y up, as in the drawing
    radius = np.hypot(dx, dy) * RADIUS / centre
    angle = np.degrees(np.arctan2(dy, dx))
    segments = np.zeros((size, size), dtype=np.int16)
    for segment, (inner, outer, middle, span) in SEGMENT_PLACES.items():
        offset = (angle - middle + 180) % 360 - 180
        segments[(radius >= inner) & (radius < outer) & (np.abs(offset) <= span / 2)] = segment
    return segments
