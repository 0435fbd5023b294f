"""Physiologically plausible ranges: a value outside them is a failed measurement, not a finding.

These are not normal ranges. They enclose the normal adult reference ranges of CMR
(Kawel-Boehm N. et al., "Reference ranges ('normal values') for cardiovascular magnetic
resonance (CMR) in adults and children: 2020 update", J Cardiovasc Magn Reson 22:87,
2020) and the extremes of disease reported in CMR studies (dilated cardiomyopathy with
an EF near 10 % and LV EDV index near 250 ml/m2, hypertrophic cardiomyopathy with walls
of 30 mm and more, amyloid with native T1 far above normal), with a margin. A value
outside is almost always a segmentation or series failure (e.g. a perfusion series read
as a cine: EF 99.6 %, ESV 0 ml, LV mass 30 g), so it is flagged where it is shown and
kept out of the DICOM SR.

Each MeasurementSpec (analysis/parts) names its range; this module is the one place the
limits and their reasons live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlausibleRange:
    low: float
    high: float
    why: str  # the reason for the limits, shown with a flag
    # Limits that depend on the field strength (tesla -> (low, high)); the nearest field is used.
    by_field_t: dict[float, tuple[float, float]] = field(default_factory=dict)

    def limits(self, field_strength_t: float | None = None) -> tuple[float, float]:
        if self.by_field_t and field_strength_t is not None and math.isfinite(field_strength_t):
            nearest = min(self.by_field_t, key=lambda t: abs(t - field_strength_t))
            return self.by_field_t[nearest]
        return self.low, self.high

    def problem(self, value: float, unit: str, label: str, field_strength_t: float | None = None) -> str | None:
        """Why ``value`` cannot be right, or None when it is plausible."""
        low, high = self.limits(field_strength_t)
        if low <= value <= high:
            return None
        at = f" at {field_strength_t:g} T" if self.by_field_t and field_strength_t else ""
        unit = "" if unit in ("", "{ratio}") else f" {unit}"
        return (f"{label} {value:.4g}{unit} is outside the plausible {low:g}-{high:g}{unit}{at} ({self.why}): "
                "check the segmentation and the series before using it")


_ADULT = "normal adult CMR reference ranges (Kawel-Boehm 2020) widened to the extremes of disease"

EJECTION_FRACTION = PlausibleRange(5, 90, _ADULT)
END_DIASTOLIC_VOLUME = PlausibleRange(20, 600, _ADULT)  # ml; children from about 20 ml
END_SYSTOLIC_VOLUME = PlausibleRange(3, 500, _ADULT)
STROKE_VOLUME = PlausibleRange(5, 250, _ADULT)
EDV_INDEX = PlausibleRange(25, 300, _ADULT)  # ml/m2
ESV_INDEX = PlausibleRange(2, 250, _ADULT)
SV_INDEX = PlausibleRange(5, 130, _ADULT)
LV_MASS = PlausibleRange(15, 500, _ADULT)  # g; children from about 15 g
LV_MASS_INDEX = PlausibleRange(20, 250, _ADULT)  # g/m2
BODY_SURFACE_AREA = PlausibleRange(0.2, 3.2, "newborn to the largest adults")
RV_LV_EDV_RATIO = PlausibleRange(0.3, 3.5, _ADULT)
WALL_THICKNESS = PlausibleRange(1, 40, _ADULT)  # mm, per segment: thin scar to severe hypertrophy
ATRIAL_AREA = PlausibleRange(3, 100, _ADULT)  # cm2
ATRIAL_LENGTH = PlausibleRange(15, 150, _ADULT)  # mm
ATRIAL_VOLUME = PlausibleRange(5, 500, _ADULT)  # ml
ENHANCED_VOLUME = PlausibleRange(0, 300, "at most the whole myocardium")  # ml
PERCENT_OF_MYOCARDIUM = PlausibleRange(0, 100, "a share of the myocardium")
# Native T1 and T2 depend on the field strength (MOLLI-type T1: about 950-1050 ms at 1.5 T,
# 1150-1300 ms at 3 T; T2 about 45-55 ms at both); the limits leave room for oedema,
# amyloid and iron overload (low T1, low T2).
NATIVE_T1 = PlausibleRange(600, 1800, "native myocardial T1 of health and disease",
                           by_field_t={1.5: (600, 1500), 3.0: (750, 1800)})
T2 = PlausibleRange(20, 110, "myocardial T2 of health and disease")
