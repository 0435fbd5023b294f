"""What every part is built from: its declaration (PartSpec, MeasurementSpec) and the
context it runs in (the models, the flags, and what earlier parts left in ``Shared``).

A part is a function ``run(context, part, stack)`` that fills a PartResult. It raises
PartSkipped when something it needs is absent (an earlier part, a model), and any other
exception when it fails; the pipeline records either and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
from pydicom.sr.coding import Code

from ...measurements import LongAxisBounds, long_axis_bounds
from ...measurements.plausibility import PlausibleRange
from ...stack import ImageStack
from ..geometry import SaxReference
from ..results import OK, PartResult

if TYPE_CHECKING:  # the predictors load torch models; a part only calls them
    from ..predictors import Predictors


class PartSkipped(Exception):
    """A part cannot run (something it needs is missing); the message says what."""


@dataclass(frozen=True)
class MeasurementSpec:
    """One kind of number a part reports, declared once for every place that shows it:
    the CSV and analysis.json (``name``, ``unit``), the report and the scene table
    (``label``, ``decimals``), the DICOM SR (``concept``, ``site``: a structure of
    terminology.py; no concept: not written to the SR) and the cohort table
    (``summary_column``: its place among the key measurements, the table's first, from 1); a value
    outside ``plausible`` (``measurements.plausibility``) is flagged and kept out of the SR."""

    name: str
    unit: str
    label: str
    decimals: int = 0
    concept: Code | None = None
    site: str | None = None
    summary_column: int | None = None
    plausible: PlausibleRange | None = None


@dataclass(frozen=True)
class PartSpec:
    """One analysis: the series it reads (a select.ROLES name), how to run it, its share of
    the progress bar, and what it measures."""

    name: str
    title: str
    role: str
    run: Callable[["Context", PartResult, ImageStack], None]
    progress_weight: float = 0.5
    measurements: tuple[MeasurementSpec, ...] = ()


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
    """What earlier parts leave for later ones (the parts run in the order of PARTS)."""

    four_chamber: FourChamberState | None = None
    sax: SaxState | None = None
    lge_labels: np.ndarray | None = None  # seg_lge labels [slices, 1, rows, cols]
    lge_present_by_extent: bool | None = None


@dataclass
class Context:
    predictors: "Predictors"
    lge_n_sd: float
    flag: Callable[..., None]  # flag(severity, code, message, series=None, part=None)
    shared: Shared = field(default_factory=Shared)
    parts: dict[str, PartResult] = field(default_factory=dict)  # the parts run so far, by name

    def value(self, name: str, segment: int | None = None) -> float | None:
        """A measurement an earlier part reported (None when it did not run or had no value)."""
        return next((m.value for part in self.parts.values() if part.status == OK for m in part.measurements
                     if m.name == name and m.segment == segment), None)

    def predict(self, task: str, stack: ImageStack, levels=None):
        from ..predictors import ModelUnavailable

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
