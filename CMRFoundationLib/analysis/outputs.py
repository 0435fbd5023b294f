"""The files of an analysis, in one output folder::

    OUT/analysis.json                          the versioned JSON (results.py), plus "complete" and
                                               "outputs" (the files written, and those not written and why)
    OUT/measurements.csv                       section, name, value, unit, series, segment, frame (from 1), check
    OUT/labels/S006_seg_sax_cine.nii.gz        label maps on the series' own grid (4D for a cine)
    OUT/labels/S006_aha_segments_ed.nii.gz     AHA segment numbers 1..16 (at ED for the cine)
    OUT/dicom/S006_seg_sax_cine/SEG_frame001.dcm   DICOM SEG, one series per analysed series (frame 1: the first)
    OUT/dicom/SR_measurements.dcm              DICOM SR (TID 1500) of the measurements (implausible values left out)
    OUT/report.html                            the report for a reader, one self-contained page (report/)

DICOM SEG of a cine holds its end-diastolic and end-systolic frames only (one SEG
instance each, in one SEG series): those are the frames the report's volumes come from,
and a 25-frame cine would be 25 SEG instances that viewers show poorly. The whole cine's
labels are in the 4D NIfTI. The LGE SEG and label map mark the enhanced myocardium as a
structure of its own (label 3), the rest of the myocardium stays label 2.

The folder is ours only if it is new, empty or holds a previous analysis (analysis.json
of format "cmrfm-analysis"); anything else is refused, never overwritten. Re-running
into a previous analysis replaces its analysis.json, measurements.csv, labels/ and
dicom/ and report.html; other files are left alone.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from pathlib import Path

from pydicom.uid import generate_uid

from ..dicom.seg import write_dicom_seg
from ..dicom.sr import Measurement, write_measurement_sr
from ..files import folder_bytes, write_json
from ..stack import numbered
from ..volume_io import write_volume
from .report import REPORT_FILE, write_html_report
from .results import FORMAT, FORMAT_VERSION, OK, StudyAnalysis

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
CSV_FILE = "measurements.csv"
LABELS_DIR = "labels"
DICOM_DIR = "dicom"
SR_FILE = "SR_measurements.dcm"
CSV_COLUMNS = ("section", "name", "value", "unit", "series", "segment", "frame", "check")


class OutputFolderError(Exception):
    """The output folder holds something else than a previous analysis; nothing was written."""


def check_output_folder(out_dir: str | os.PathLike) -> None:
    """Raise OutputFolderError unless ``out_dir`` is new, empty, or a previous analysis output."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()) or is_analysis_folder(out):
        return
    raise OutputFolderError(f"{out} is not empty and holds no previous CMRFoundation analysis; "
                            "choose a new or empty output folder (nothing was written)")


def estimated_output_bytes(study: str | os.PathLike | list, scene: bool = False) -> int:
    """A generous size of the outputs of ``study``, for the free-space check before the work: the
    label maps, SEG, SR and report are a fraction of the study (1.5 MB for a 13 MB sample study);
    a Slicer scene (the batch's scene.mrb) holds the images once more."""
    size = sum(map(folder_bytes, study)) if isinstance(study, (list, tuple)) else folder_bytes(study)
    return 16_000_000 + (2 * size if scene else size // 2)


def is_analysis_folder(out_dir: str | os.PathLike) -> bool:
    try:
        return json.loads((Path(out_dir) / ANALYSIS_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_outputs(analysis: StudyAnalysis, out_dir: str | os.PathLike) -> dict:
    """Write every output of ``analysis`` into ``out_dir``; the paths written, by kind.

    Returns {"analysis_json": Path, "measurements_csv": Path, "label_maps": [Path],
    "dicom_seg": [Path], "dicom_sr": Path or None, "report_html": Path or None}. An
    output that cannot be written (e.g. SEG for stacks not read from DICOM) is listed
    with its reason under "outputs" -> "not_written" in analysis.json.
    """
    check_output_folder(out_dir)
    out = Path(out_dir)
    _remove_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    # Mark the folder as ours first, so that an interrupted write can be re-run into it
    # (atomically: on a full disk an empty marker would make the folder look like someone else's).
    write_json(out / ANALYSIS_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False})

    written = {"analysis_json": out / ANALYSIS_FILE, "measurements_csv": out / CSV_FILE,
               "label_maps": [], "dicom_seg": [], "dicom_sr": None, "report_html": None}
    not_written: list[str] = []
    for part in analysis.parts.values():
        if part.status != OK:
            continue
        stack = analysis.stack(part.series)
        for label_map in part.label_maps:
            path = out / LABELS_DIR / f"{part.series}_{label_map.name}.nii.gz"
            if path in written["label_maps"]:
                continue  # two parts on one series share its segmentation (e.g. LGE extent and presence)
            path.parent.mkdir(exist_ok=True)
            write_volume(label_map.labels, stack.ijk_to_lps, path)
            written["label_maps"].append(path)
            if label_map.seg_frames:
                written["dicom_seg"] += _write_seg(stack, part.series, label_map, out / DICOM_DIR, not_written)

    rows = analysis.measurements
    _write_csv(rows, out / CSV_FILE)
    written["dicom_sr"] = _write_sr(analysis, out / DICOM_DIR / SR_FILE, not_written)
    written["report_html"] = _write_report(analysis, out, not_written)

    document = analysis.to_dict()
    document["complete"] = True
    document["outputs"] = {
        "analysis_json": ANALYSIS_FILE,
        "measurements_csv": CSV_FILE,
        "label_maps": [p.relative_to(out).as_posix() for p in written["label_maps"]],
        "dicom_seg": [p.relative_to(out).as_posix() for p in written["dicom_seg"]],
        "dicom_sr": None if written["dicom_sr"] is None else written["dicom_sr"].relative_to(out).as_posix(),
        "report_html": None if written["report_html"] is None else REPORT_FILE,
        "not_written": not_written,
    }
    write_json(out / ANALYSIS_FILE, document)  # atomic: a reader sees the marker or the whole document
    return written


def _remove_previous(out: Path) -> None:
    if not out.is_dir():
        return
    for name in (ANALYSIS_FILE, CSV_FILE, REPORT_FILE):
        (out / name).unlink(missing_ok=True)
    for name in (LABELS_DIR, DICOM_DIR):
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def _write_seg(stack, series_key: str, label_map, dicom_dir: Path, not_written: list[str]) -> list[Path]:
    """One SEG series of the label map's ``seg_frames`` (one instance per frame)."""
    if stack.sources is None:
        not_written.append(f"DICOM SEG of {series_key} {label_map.name}: the series was not read from DICOM")
        return []
    folder = dicom_dir / f"{series_key}_{label_map.name}"
    series_uid = generate_uid()
    paths = []
    for number, frame in enumerate(label_map.seg_frames, 1):
        try:
            paths.append(write_dicom_seg(stack, label_map.labels, label_map.label_names, folder / f"SEG_frame{frame + 1:03d}.dcm",
                                         frame=frame, series_instance_uid=series_uid, instance_number=number,
                                         series_description=f"CMRFoundation {label_map.name}"))
        except Exception as error:  # e.g. nothing labelled in that frame; a SEG must not cost the other outputs
            log.exception("DICOM SEG not written")
            not_written.append(f"DICOM SEG of {series_key} {label_map.name} frame {numbered(frame)}: {error}")
    return paths


def _write_csv(rows, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([row.section, row.name, f"{row.value:.6g}", row.unit, row.series, row.segment_label,
                             "" if row.frame is None else numbered(row.frame), row.check or ""])


def _write_sr(analysis: StudyAnalysis, path: Path, not_written: list[str]) -> Path | None:
    """The measurements whose part declares a DICOM SR code (analysis/parts), referencing their series."""
    from .parts import MEASUREMENTS

    def coded(m) -> bool:
        spec = MEASUREMENTS.get(m.name)
        return spec is not None and spec.concept is not None and spec.unit == m.unit and math.isfinite(m.value)

    rows = [m for m in analysis.measurements if coded(m)]
    implausible = [m for m in rows if m.check]
    if implausible:  # an SR is read by machines that cannot see a warning: leave such values out
        names = ", ".join(sorted({m.name for m in implausible}))
        not_written.append(f"DICOM SR: {len(implausible)} implausible value(s) left out ({names}; see the flags)")
        rows = [m for m in rows if not m.check]
    series = sorted({m.series for m in rows})
    stacks = [analysis.stack(key) for key in series]
    if not rows:
        not_written.append("DICOM SR: no measurement to report")
        return None
    if any(stack.sources is None for stack in stacks):
        not_written.append("DICOM SR: a measured series was not read from DICOM")
        return None
    uid_of = {key: analysis.stack(key).info.series_uid for key in series}
    measurements = [Measurement(m.name, m.value, m.unit, concept=MEASUREMENTS[m.name].concept,
                                finding_site=MEASUREMENTS[m.name].site, segment=m.segment, method=m.method,
                                source_series_uid=uid_of[m.series]) for m in rows]
    try:
        return write_measurement_sr(measurements, stacks, path)
    except Exception as error:  # the SR must not cost the other outputs
        log.exception("DICOM SR not written")
        not_written.append(f"DICOM SR: {error}")
        return None


def _write_report(analysis: StudyAnalysis, out: Path, not_written: list[str]) -> Path | None:
    try:
        return write_html_report(analysis, out)
    except Exception as error:  # the report must not cost the other outputs
        log.exception("HTML report not written")
        (out / REPORT_FILE).unlink(missing_ok=True)  # no half-written page
        not_written.append(f"HTML report: {type(error).__name__}: {error}")
        return None
