"""A study's measurements as a DICOM Comprehensive 3D SR (TID 1500 Measurement Report).

The analysis pipeline fills ``Measurement`` objects; ``write_measurement_sr`` groups
them by finding site (one TID 1501 measurement group per structure of terminology.py)
and lists the images they came from, both per group and as the document's evidence.

Names and codes: a measurement ``name`` declared by an analysis part with a concept
(``known_measurements()``, read from the parts' MeasurementSpecs in analysis/parts/) gets
its concept and default finding site from there, and must come in the declared unit. The
parts' concepts come from DICOM PS3.16 where it has one (read from pydicom's copy of the standard):
CID 3835 Cardiac Volume Measurements (LOINC ED/ES volumes of both ventricles, DCM Left
Atrial ES Volume, SCT Stroke Volume), CID 3833 Cardiac Ejection Fractions (LOINC EF by
MR), CID 12200 (LOINC Left Ventricle Mass), DCM 122445 Wall Thickness (PS3.16 Annex D),
CID 7469 (DCM T1, T2) and CID 3455 (LOINC BSA). Quantities the standard does not code
(indexed values, LGE extent) use the private coding scheme
``PRIVATE_SCHEME`` documented in terminology.py, never made-up SNOMED CT codes. Any
other name needs an explicit ``concept``.

AHA segments are coded with DICOM CID 3717 Myocardial Wall Segments (SCT) as a finding
site of the measurement itself, inside the group of its structure. Units are UCUM.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from .. import __version__
from ..measurements.aha import AHA_SEGMENT_NAMES
from ..stack import ImageStack
from ..terminology import PRIVATE_SCHEME, coded_concepts, declare_private_scheme, structure, structure_for_codes


def known_measurements() -> dict[str, tuple[Code, str, str | None]]:
    """name -> (concept, UCUM unit, default finding site) of every measurement an analysis
    part declares with an SR concept: the one registry, analysis/parts/."""
    from ..analysis.parts import MEASUREMENTS  # imported here: the analysis imports this module

    return {name: (m.concept, m.unit, m.site) for name, m in MEASUREMENTS.items() if m.concept is not None}


UNIT_MEANINGS = {
    "ml": "milliliter",
    "%": "percent",
    "g": "gram",
    "mm": "millimeter",
    "ms": "millisecond",
    "ml/m2": "milliliter per square meter",
    "g/m2": "gram per square meter",
    "m2": "square meter",
}

# AHA segment number -> DICOM CID 3717 Myocardial Wall Segments (SNOMED CT).
AHA_SEGMENT_CODES = {
    1: Code("264850008", "SCT", "left ventricle basal anterior segment"),
    2: Code("396482007", "SCT", "left ventricle basal anteroseptal segment"),
    3: Code("396646008", "SCT", "left ventricle basal inferoseptal segment"),
    4: Code("264846001", "SCT", "left ventricle basal inferior segment"),
    5: Code("396652009", "SCT", "left ventricle basal inferolateral segment"),
    6: Code("396654005", "SCT", "left ventricle basal anterolateral segment"),
    7: Code("264848000", "SCT", "left ventricle mid anterior segment"),
    8: Code("396647004", "SCT", "left ventricle mid anteroseptal segment"),
    9: Code("396649001", "SCT", "left ventricle mid inferoseptal segment"),
    10: Code("264847005", "SCT", "left ventricle mid inferior segment"),
    11: Code("396655006", "SCT", "left ventricle mid inferolateral segment"),
    12: Code("396656007", "SCT", "left ventricle mid anterolateral segment"),
    13: Code("264844003", "SCT", "left ventricle apical anterior segment"),
    14: Code("264845002", "SCT", "left ventricle apical septal segment"),
    15: Code("264849008", "SCT", "left ventricle apical inferior segment"),
    16: Code("264853005", "SCT", "left ventricle apical lateral segment"),
    17: Code("128564006", "SCT", "Apex of left ventricle"),
}
AHA_NAMES = {**AHA_SEGMENT_NAMES, 17: "apex"}

IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")  # CID 7021
CARDIAC_MRI = Code("241620005", "SCT", "Cardiac MRI")


@dataclass(frozen=True)
class Measurement:
    """One number of the report.

    ``finding_site`` is a structure name of terminology.py (default: the table's);
    ``segment`` an AHA segment, as its number or as "AHA 7 mid anterior" / "mid anterior";
    ``method`` says how the value was derived, in words; ``source_series_uid`` names the
    source stack it was measured on.
    """

    name: str
    value: float
    unit: str
    _: KW_ONLY
    concept: Code | None = None
    finding_site: str | None = None
    segment: int | str | None = None
    method: str | None = None
    source_series_uid: str | None = None


def write_measurement_sr(
    measurements: Sequence[Measurement],
    source_stacks: Sequence[ImageStack],
    out_path: str | os.PathLike,
    *,
    title: Code = IMAGING_MEASUREMENT_REPORT,
    series_description: str = "CMRFoundation measurements",
    series_number: int = 9000,
    algorithm_name: str = "CMRFoundation",
    algorithm_version: str = __version__,
) -> Path:
    """Write ``measurements`` as a TID 1500 Comprehensive 3D SR in the study of ``source_stacks``."""
    import highdicom as hd  # a heavier import; only SR writing needs it
    from pydicom.sr.codedict import codes

    if not measurements:
        raise ValueError("no measurements to write")
    stacks = {stack.info.series_uid: stack for stack in source_stacks}
    headers = _source_headers(source_stacks)
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version)

    groups: dict[str | None, list[Measurement]] = {}
    for measurement in measurements:
        groups.setdefault(_finding_site(measurement), []).append(measurement)

    measurement_groups = [_measurement_group(hd, site, members, stacks, headers, algorithm) for site, members in groups.items()]

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=algorithm_name),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CARDIAC_MRI,
        imaging_measurements=measurement_groups,
        title=title,
    )
    document = hd.sr.Comprehensive3DSR(
        evidence=list(headers.values()),
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="CMRFoundation",
        is_complete=True,
        series_description=series_description,
    )
    declare_private_scheme(document)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    document.save_as(out_path)
    return out_path


def read_measurement_sr(path: str | os.PathLike) -> list[dict]:
    """The measurements of a TID 1500 SR: dicts of name, value, unit, finding_site, segment, method.

    ``name`` is our name where the concept is a known measurement's, else the concept's
    meaning; ``finding_site`` is our structure name where we know the coded site.
    """
    import highdicom as hd

    document = hd.sr.srread(path)
    results = []
    for group in document.content.get_image_measurement_groups():
        site = None
        if group.finding_sites:
            location = group.finding_sites[0].value
            site = structure_for_codes(location.scheme_designator, location.value)
        for measurement in group.get_measurements():
            segment = None
            for finding_site in measurement.finding_sites:
                segment = _segment_label(finding_site.value) or segment
            method = measurement.method
            results.append(
                {
                    "name": _name_of(measurement.name, site),
                    "value": float(measurement.value),
                    "unit": measurement.unit.value,
                    "finding_site": site,
                    "segment": segment,
                    "method": None if method is None else method.meaning,
                }
            )
    return results


def aha_segment_number(segment: int | str) -> int:
    """The AHA segment number of 7, "7", "mid anterior" or "AHA 7 mid anterior"."""
    text = str(segment).strip().lower().removeprefix("aha ")
    number_text, _, name = text.partition(" ")
    if number_text.isdigit() and int(number_text) in AHA_NAMES and name in ("", AHA_NAMES[int(number_text)]):
        return int(number_text)
    for number, known in AHA_NAMES.items():
        if text == known:
            return number
    raise ValueError(f"unknown AHA segment {segment!r}; give 1..17 or a name such as 'AHA 7 mid anterior'")


# --- writing helpers ---------------------------------------------------------------------


def _measurement_group(hd, site: str | None, members: list[Measurement], stacks: dict, headers: dict, algorithm):
    """TID 1501 group of the measurements of one finding site, with the images they came from."""
    series_uids = {m.source_series_uid for m in members if m.source_series_uid is not None}
    unknown = series_uids - stacks.keys()
    if unknown:
        raise ValueError(f"measurement source series {', '.join(sorted(unknown))} not among the source stacks")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=structure(site).display_name if site else "Study"),
        finding_category=coded_concepts(site).category if site else None,
        finding_sites=[hd.sr.FindingSite(coded_concepts(site).type)] if site else None,
        algorithm_id=algorithm,
        measurements=[_sr_measurement(hd, m) for m in members],
        source_images=_group_source_images(hd, [stacks[uid] for uid in sorted(series_uids)], headers) or None,
    )


def _finding_site(measurement: Measurement) -> str | None:
    site, known = measurement.finding_site, known_measurements()
    if site is None and measurement.name in known:
        site = known[measurement.name][2]
    return None if site is None else structure(site).name


def _concept(measurement: Measurement) -> Code:
    if measurement.concept is not None:
        return measurement.concept
    known = known_measurements()
    if measurement.name not in known:
        raise ValueError(
            f"no code for measurement {measurement.name!r}: pass concept=Code(...) or use one of {', '.join(known)}"
        )
    concept, unit, _ = known[measurement.name]
    if measurement.unit != unit:
        raise ValueError(f"measurement {measurement.name!r} is given in {unit!r}, not {measurement.unit!r}")
    return concept


def _sr_measurement(hd, measurement: Measurement):
    if not math.isfinite(measurement.value):
        raise ValueError(f"measurement {measurement.name!r} has no finite value ({measurement.value})")
    unit = hd.sr.CodedConcept(measurement.unit, "UCUM", UNIT_MEANINGS.get(measurement.unit, measurement.unit))
    segment = None
    if measurement.segment is not None:
        segment = [hd.sr.FindingSite(AHA_SEGMENT_CODES[aha_segment_number(measurement.segment)])]
    return hd.sr.Measurement(
        name=_concept(measurement),
        value=float(measurement.value),
        unit=unit,
        finding_sites=segment,
        method=None if measurement.method is None else _method_code(measurement.method),
    )


def _method_code(text: str) -> Code:
    """A private code whose meaning is the method in words (a code value is at most 16 characters)."""
    if len(text) > 64:
        raise ValueError(f"method text must be at most 64 characters (a DICOM code meaning), got {len(text)}: {text!r}")
    return Code("M-" + hashlib.sha1(text.encode()).hexdigest()[:14].upper(), PRIVATE_SCHEME, text)


def _source_headers(stacks: Sequence[ImageStack]) -> dict[str, Dataset]:
    """Header of every source file of the stacks (the SR's evidence), by path."""
    headers: dict[str, Dataset] = {}
    for stack in stacks:
        if stack.sources is None:
            raise ValueError(f"series {stack.info.series_number} '{stack.info.series_description}' was not read from DICOM files")
        for row in stack.sources:
            for path, _ in row:
                if path not in headers:
                    headers[path] = pydicom.dcmread(path, stop_before_pixels=True)
    if not headers:
        raise ValueError("no source images: an SR needs the images its measurements come from")
    return headers


def _group_source_images(hd, stacks: Sequence[ImageStack], headers: dict[str, Dataset]) -> list:
    """One reference per source instance of the stacks, with the frames used of a multi-frame one."""
    frames_of: dict[str, list[int]] = {}
    for stack in stacks:
        for row in stack.sources:
            for path, frame_index in row:
                used = frames_of.setdefault(path, [])
                if frame_index is not None:
                    used.append(frame_index + 1)
    return [
        hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=headers[path].SOPClassUID,
            referenced_sop_instance_uid=headers[path].SOPInstanceUID,
            referenced_frame_numbers=sorted(used) or None,
        )
        for path, used in frames_of.items()
    ]


# --- reading helpers ---------------------------------------------------------------------


def _name_of(concept, site: str | None) -> str:
    """Our name for a measurement concept at a finding site (stroke volume needs the site)."""
    key, known = (concept.scheme_designator, concept.value), known_measurements()
    for name, (code, _, default_site) in known.items():
        if (code.scheme_designator, code.value) == key and default_site == site:
            return name
    for name, (code, _, _) in known.items():
        if (code.scheme_designator, code.value) == key:
            return name
    return concept.meaning


def _segment_label(location) -> str | None:
    for number, code in AHA_SEGMENT_CODES.items():
        if (code.scheme_designator, code.value) == (location.scheme_designator, location.value):
            return _aha_label(number)
    return None


def _aha_label(number: int) -> str:
    return f"AHA {number} {AHA_NAMES[number]}"
