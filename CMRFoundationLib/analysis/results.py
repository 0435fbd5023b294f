"""What an analysis found: dataclasses that become the versioned JSON ``analysis.json``.

Arrays stay in memory and out of the JSON: the stacks (``SeriesRecord.stack``) and the
label maps (``PartResult.label_maps``), which write_outputs stores as NIfTI and DICOM
SEG and a report can draw. Everything else a report needs is in the JSON: volume
curves, AHA segment values, class probabilities, the quality flags.

JSON layout (``StudyAnalysis.to_dict``), format "cmrfm-analysis", format_version 1::

    format, format_version, created, software   what wrote it
    source                                      the study folder (or "stacks")
    study                                       patient and study facts from the headers
    options                                     AnalysisOptions
    weights                                     weights folder and the files of each task used
    problems                                    files that could not be used: path, reason, severity
    series                                      every stack read: geometry, classification
    selection                                   role -> chosen series, reason, alternatives
    parts                                       part -> status (ok/skipped/failed), reason, results
    measurements                                one row per number: section, name, value, unit, series, segment,
                                                frame (the cine frame it was measured on, or null), method, check
                                                (why the value is not to be trusted, or null)
    flags                                       what a reader should check: severity, code, message
    complete, outputs                           added by write_outputs: true once every file is written; the files

Slices and frames are positions from 0 here (``ed_frame``, ``"slice"``, ``frames``, the keys of
``by_frame``), as in the arrays; everything a person reads (the report, the words of flags and
notes, measurements.csv, file names, the Slicer scene) numbers them from 1 (stack.numbered):
``"ed_frame": 3`` is "frame 4" there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from .. import __version__
from ..measurements.aha import AHA_SEGMENT_NAMES
from ..problems import Problem
from ..stack import ImageStack
from .classify import StackClassification
from .options import AnalysisOptions
from .select import Selection

FORMAT = "cmrfm-analysis"
FORMAT_VERSION = 1

OK, SKIPPED, FAILED = "ok", "skipped", "failed"

# Flag codes, so that a report (or a test) can pick flags out without parsing words.
UNUSABLE_FILE = "unusable_file"
SLICE_GAPS = "slice_gaps"
SERIES_NOT_USED = "series_not_used"
LOW_CONFIDENCE = "low_confidence"
HEADER_DISAGREES = "header_pixel_disagreement"
SLICE_WITHOUT_LV = "slice_without_lv"
PART_NOT_DONE = "part_not_done"
MODEL_UNAVAILABLE = "model_unavailable"
RESULT_WARNING = "result_warning"
IMPLAUSIBLE_VALUE = "implausible_value"
SEGMENTATION_QUALITY = "segmentation_quality"


@dataclass
class Flag:
    """One thing a reader should look at; severity is info, warning or error."""

    severity: str
    code: str
    message: str
    series: str | None = None
    part: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MeasurementRow:
    """One number of the report. ``name`` is the DICOM SR name (dicom/sr.py) wherever one exists."""

    section: str  # the part that measured it
    name: str
    value: float
    unit: str
    series: str  # series key, e.g. "S006"
    segment: int | None = None  # AHA segment number
    frame: int | None = None  # the cine frame measured on (position from 0); None: one frame, or several (e.g. EF)
    method: str | None = None
    check: str | None = None  # why the value cannot be trusted (e.g. outside its plausible range); None: it passed

    @property
    def segment_label(self) -> str:
        return "" if self.segment is None else f"AHA {self.segment} {AHA_SEGMENT_NAMES[self.segment]}"

    def to_dict(self) -> dict:
        return {"section": self.section, "name": self.name, "value": self.value, "unit": self.unit,
                "series": self.series, "segment": self.segment, "segment_label": self.segment_label or None,
                "frame": self.frame, "method": self.method, "check": self.check}


@dataclass
class LabelMap:
    """A label map on a stack's grid: uint8 ``[slices, frames, rows, cols]``.

    ``frames`` names the stack frames it covers when not all of them (e.g. ``[ed]``);
    ``seg_frames`` the frames to write as DICOM SEG (None: no SEG, e.g. AHA segment maps,
    whose values are not structures of terminology.py).
    """

    name: str
    labels: np.ndarray
    label_names: tuple[str, ...]
    frames: list[int] | None = None
    seg_frames: list[int] | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "label_names": list(self.label_names), "shape": list(self.labels.shape),
                "frames": self.frames, "seg_frames": self.seg_frames}


@dataclass
class PartResult:
    """One part of the analysis (e.g. ventricular function) and what became of it."""

    name: str
    title: str
    status: str = SKIPPED
    reason: str | None = None
    series: str | None = None
    results: dict = field(default_factory=dict)
    measurements: list[MeasurementRow] = field(default_factory=list)
    label_maps: list[LabelMap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict, repr=False)  # the part's declared measurements -> unit

    def measure(self, name: str, value, segment: int | None = None, method: str | None = None,
                frame: int | None = None) -> None:
        """Add a measurement of this part's series, in the unit its PartSpec declares (``frame``: the
        cine frame it comes from, if one); None or non-finite values are left out."""
        if name not in self.units:
            raise ValueError(f"part {self.name!r} measures {name!r}, which its PartSpec does not declare")
        if value is not None and math.isfinite(float(value)):
            self.measurements.append(MeasurementRow(self.name, name, float(value), self.units[name], self.series,
                                                    segment, frame, method))

    def to_dict(self) -> dict:
        return {"title": self.title, "status": self.status, "reason": self.reason, "series": self.series,
                "results": self.results, "label_maps": [m.to_dict() for m in self.label_maps], "notes": list(self.notes)}


@dataclass
class SeriesRecord:
    """One stack of the study, under a key unique in the study ("S006", "S001-2" for a series' 2nd stack)."""

    key: str
    stack: ImageStack
    classification: StackClassification | None = None
    header_rules_out: str | None = None  # why its acquisition header rules out every part (acquisition.not_analysable)

    def to_dict(self) -> dict:
        stack, info = self.stack, self.stack.info
        return {
            "key": self.key,
            "series_number": info.series_number,
            "series_uid": info.series_uid,
            "description": info.series_description,
            "shape": list(stack.pixels.shape),
            "spacing_mm": [round(float(v), 4) for v in stack.spacing],
            "orientation": stack.orientation,
            "frame_times_ms": None if stack.frame_times is None else [round(float(t), 2) for t in stack.frame_times],
            "slice_positions_mm": None if stack.slice_positions is None else [round(float(p), 3) for p in stack.slice_positions],
            "ijk_to_lps": stack.ijk_to_lps.tolist(),  # the voxel grid, to find the series among a viewer's volumes
            "reader_warnings": list(stack.warnings),
            "classification": None if self.classification is None else self.classification.to_dict(),
            "header_rules_out": self.header_rules_out,
        }


@dataclass
class StudyAnalysis:
    """Everything one analysis found (its JSON layout is in the module docstring)."""

    source: str
    options: AnalysisOptions
    series: list[SeriesRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    selection: dict[str, Selection] = field(default_factory=dict)
    parts: dict[str, PartResult] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def record(self, key: str) -> SeriesRecord:
        return next(r for r in self.series if r.key == key)

    def stack(self, key: str) -> ImageStack:
        return self.record(key).stack

    @property
    def measurements(self) -> list[MeasurementRow]:
        return [row for part in self.parts.values() if part.status == OK for row in part.measurements]

    def value(self, name: str, segment: int | None = None) -> float | None:
        """The first measurement called ``name`` (and of ``segment``), or None."""
        return next((m.value for m in self.measurements if m.name == name and m.segment == segment), None)

    def study_facts(self) -> dict:
        """Patient and study facts from the headers (the same in every series of a study)."""
        if not self.series:
            return {}
        info = self.series[0].stack.info
        return {"study_uid": info.study_uid, "study_date": info.study_date, "study_description": info.study_description,
                "patient_id": info.patient_id, "patient_sex": info.patient_sex, "patient_age": info.patient_age,
                "height_m": info.patient_size, "weight_kg": info.patient_weight, "heart_rate_bpm": info.heart_rate,
                "manufacturer": info.manufacturer, "field_strength_t": info.field_strength}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "software": {"name": "CMRFoundation", "version": __version__},
            "source": self.source,
            "study": self.study_facts(),
            "options": self.options.to_dict(),
            "weights": self.weights,
            "problems": [asdict(p) for p in self.problems],
            "series": [r.to_dict() for r in self.series],
            "selection": {role: s.to_dict() for role, s in self.selection.items()},
            "parts": {name: part.to_dict() for name, part in self.parts.items()},
            "measurements": [m.to_dict() for m in self.measurements],
            "flags": [f.to_dict() for f in self.flags],
        }

    def summary_lines(self) -> list[str]:
        """A few lines for a terminal: the main numbers, what did not run, and the warnings."""
        v = self.value

        def number(value, unit, digits=0):
            return "-" if value is None else f"{value:.{digits}f} {unit}"

        unusable = sum(p.severity != "info" for p in self.problems)
        lines = [f"Study {self.study_facts().get('patient_id') or self.source}: {len(self.series)} stack(s) read, "
                 f"{unusable} file(s) with problems"]
        for side in ("lv", "rv"):
            if v(f"{side}_edv") is not None:
                lines.append(f"{side.upper()}: EDV {number(v(f'{side}_edv'), 'mL')}, ESV {number(v(f'{side}_esv'), 'mL')}, "
                             f"SV {number(v(f'{side}_sv'), 'mL')}, EF {number(v(f'{side}_ef'), '%')}")
        if v("lv_mass") is not None:
            indexed = f" ({number(v('lv_mass_index'), 'g/m2')})" if v("lv_mass_index") is not None else ""
            lines.append(f"LV mass {number(v('lv_mass'), 'g')}{indexed}")
        if v("la_volume") is not None:
            lines.append(f"LA max volume {number(v('la_volume'), 'mL')}")
        if v("lge_extent") is not None:
            lines.append(f"LGE {number(v('lge_extent'), '%', 1)} of the LV myocardium ({number(v('lge_volume'), 'mL', 1)}, "
                         f"{self.options.lge_n_sd:g}-SD)")
        for part_name, label in (("lge_presence", "LGE presence"), ("disease", "Disease class")):
            part = self.parts.get(part_name)
            if part is not None and part.status == OK:
                method = part.results.get("method", "model")  # the disease class comes from the phenotypes
                lines.append(f"{label} ({method}): {part.results['class']} "
                             f"(p={part.results['probabilities'][part.results['class']]:.2f})")
        for name, label in (("t1", "T1"), ("t2", "T2")):
            if v(name) is not None:
                lines.append(f"{label} global {number(v(name), 'ms')}")
        for part in self.parts.values():
            if part.status != OK:
                lines.append(f"{part.title}: {part.status} ({part.reason})")
        shown = [f for f in self.flags if f.severity != "info" and f.code != PART_NOT_DONE]  # parts are listed above
        if shown:
            lines.append(f"Flags to check ({len(shown)} of {len(self.flags)}; all are in analysis.json):")
            lines += [f"  [{f.severity}] {f.message}" for f in shown]
        return lines
