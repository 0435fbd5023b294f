"""Batch analysis of a folder of studies into saved Slicer results (Resources/Scripts/batch_analyze.py).

    OUT/<study>/analysis.json, measurements.csv, report.html, labels/, dicom/   write_outputs
    OUT/<study>/scene.mrb                        the Slicer scene of the analysis
    OUT/<study>/slicer/<series>_<map>[_frameNNN].seg.nrrd  segmentations (a cine: its DICOM SEG frames, ED and ES,
                                                            numbered from 1 like the SEG files)
    OUT/<study>/slicer/<series>_<part>.mrk.json  landmarks
    OUT/<study>/batch-complete.json              written last: the study is done
    OUT/summary.csv                              one row per study: status, key measurements (implausible ones
                                                 apart, in "implausible"), error

Every subfolder of the studies folder is a study. A study is written into
``OUT/.partial-<study>`` and renamed to ``OUT/<study>`` once complete, so an interrupted
run leaves no half study under its final name; a re-run skips studies that are done,
removes partial folders and redoes those. A failing study is recorded in the summary (and
retried by the next run); it never stops the batch. An output location that cannot take
the results does: OUT not writable, or its disk full (checked before each study, and after
a failed one), which every next study would fail on too; ``run_batch`` then raises
OutputLocationError, the studies done are kept. One batch at a time per OUT folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..analysis import AnalysisOptions, analyze_study, estimated_output_bytes, write_outputs
from ..analysis.parts import MEASUREMENTS
from ..files import OutputLocationError, atomic_write, check_output_location, output_error_message
from ..stack import numbered
from ..weights import check_folder_approved
from . import edits
from .files import save_markups, save_scene_bundle, save_segmentation
from .load import load_analysis
from .mrml import close_scene, new_scene

log = logging.getLogger(__name__)

MARKER = "batch-complete.json"
SUMMARY = "summary.csv"
PARTIAL_PREFIX = ".partial-"
# The measurement columns of summary.csv, as the parts declare them (MeasurementSpec.summary_column).
KEY_MEASUREMENTS = tuple(sorted((n for n, s in MEASUREMENTS.items() if s.summary_column), key=lambda n: MEASUREMENTS[n].summary_column))
# "implausible": key values outside their plausible range, left out of their columns (name=value).
SUMMARY_COLUMNS = ("study", "status", "analysed_in_this_run", *KEY_MEASUREMENTS, "implausible", "error")


@dataclass
class StudyOutcome:
    study: str
    status: str  # "done" or "failed"
    analysed_now: bool
    measurements: dict[str, float]
    error: str = ""
    implausible: dict[str, float] = field(default_factory=dict)


def run_batch(studies_dir: str | os.PathLike, out_dir: str | os.PathLike, options: AnalysisOptions | None = None,
              scene_factory: Callable[[], object] | None = None,
              progress: Callable[[str], None] = print) -> list[StudyOutcome]:
    """Analyse every study (subfolder) of ``studies_dir`` not yet done in ``out_dir``; the outcome of each.

    ``scene_factory`` gives an empty scene per study (in Slicer: ``slicer.mrmlScene``,
    which is cleared after each study); default a new slicer-core scene.
    """
    studies = sorted(p for p in Path(studies_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    out = Path(out_dir)
    check_output_location(out)
    options = options or AnalysisOptions()
    check_folder_approved(options.weights_dir)  # WeightsError: a tampered folder is refused, not half used
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(PARTIAL_PREFIX + "*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()  # interrupted: done again below
    outcomes = []
    for number, study in enumerate(studies, 1):
        final = out / study.name
        if (final / MARKER).is_file():
            progress(f"[{number}/{len(studies)}] {study.name}: done before, skipped")
            values, implausible = _key_measurements(final)
            outcomes.append(StudyOutcome(study.name, "done", False, values, implausible=implausible))
        else:
            progress(f"[{number}/{len(studies)}] {study.name}: analysing")
            try:
                outcomes.append(_run_study(study, final, options, scene_factory or new_scene))
            except OutputLocationError as error:
                outcomes.append(StudyOutcome(study.name, "failed", True, {}, str(error)))
                _write_summary(outcomes, out / SUMMARY, stopping=True)
                raise OutputLocationError(f"{error}; the batch stopped at {study.name} ({number} of {len(studies)}): "
                                          "the studies done are kept, run it again to continue") from None
            progress(f"[{number}/{len(studies)}] {study.name}: {outcomes[-1].status} {outcomes[-1].error}".rstrip())
        _write_summary(outcomes, out / SUMMARY)
    return outcomes


def _run_study(study: Path, final: Path, options: AnalysisOptions, scene_factory) -> StudyOutcome:
    """The outcome of one study; OutputLocationError when the output location, not the study, failed."""
    partial = final.with_name(PARTIAL_PREFIX + final.name)
    try:
        check_output_location(final.parent, estimated_output_bytes(study, scene=True))  # before the work
        analysis = analyze_study(study, options)
        write_outputs(analysis, partial)
        scene = scene_factory()
        try:
            loaded = load_analysis(scene, partial, {r.key: r.stack for r in analysis.series})
            _save_slicer_files(scene, loaded, partial)
        finally:
            close_scene(scene)
        (partial / MARKER).write_text(json.dumps({"study": study.name, "source": str(study.resolve()),
                                                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        if final.exists():
            shutil.rmtree(final)  # an earlier run's incomplete result (no marker)
        os.replace(partial, final)
        values, implausible = _key_measurements(final)
        return StudyOutcome(study.name, "done", True, values, implausible=implausible)
    except Exception as error:  # one study must never stop the batch; its reason goes into the summary
        log.debug("study %s failed:\n%s", study, traceback.format_exc())
        shutil.rmtree(partial, ignore_errors=True)
        # A full or unwritable output disk (VTK and ITK only say that a write failed): not the study's fault.
        location = str(error) if isinstance(error, OutputLocationError) else output_error_message(final.parent, error)
        if location is not None:
            raise OutputLocationError(location) from None
        return StudyOutcome(study.name, "failed", True, {}, f"{type(error).__name__}: {error}")


def _save_slicer_files(scene, loaded, folder: Path) -> None:
    slicer_dir = folder / "slicer"
    for series in loaded.series.values():
        for map_name, node in series.segmentations.items():
            sequence = edits.sequence_of_proxy(scene, node)
            if sequence is None:
                save_segmentation(node, slicer_dir / f"{series.key}_{map_name}.seg.nrrd")
                continue
            for frame in _seg_frames(folder, series.key, map_name) or [0]:  # a cine's sequence has every frame
                save_segmentation(sequence.GetNthDataNode(frame),
                                  slicer_dir / f"{series.key}_{map_name}_frame{numbered(frame).zfill(3)}.seg.nrrd")
        for node in series.landmarks:
            save_markups(node, slicer_dir / f"{series.key}_{node.GetAttribute(edits.TASK)}.mrk.json")
    save_scene_bundle(scene, folder / "scene.mrb")


def _seg_frames(folder: Path, key: str, map_name: str) -> list[int]:
    """The frames write_outputs put into DICOM SEG for this label map (a cine's ED and ES)."""
    document = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    for part in document["parts"].values():
        for label_map in part["label_maps"] if part["series"] == key else ():
            if label_map["name"] == map_name:
                return label_map.get("seg_frames") or []
    return []


def _key_measurements(folder: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The study-level (not per-segment) values of KEY_MEASUREMENTS from analysis.json:
    (plausible values, implausible values). A cohort's averages must not take in
    a number the analysis itself flagged, so those are kept apart."""
    document = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    values, implausible = {}, {}
    for m in document["measurements"]:
        if m["name"] in KEY_MEASUREMENTS and m.get("segment") is None and m["name"] not in {*values, *implausible}:
            (implausible if m.get("check") else values)[m["name"]] = m["value"]
    return values, implausible


def _write_summary(outcomes: list[StudyOutcome], path: Path, stopping: bool = False) -> None:
    """Write summary.csv; a failure is the output location's (OutputLocationError), and is
    passed over when the batch is stopping for that reason already."""
    def write(temp: Path) -> None:
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(SUMMARY_COLUMNS)
            for o in outcomes:
                values = [f"{o.measurements[name]:.6g}" if name in o.measurements else "" for name in KEY_MEASUREMENTS]
                implausible = "; ".join(f"{name}={value:.6g}" for name, value in o.implausible.items())
                writer.writerow([o.study, o.status, "yes" if o.analysed_now else "no", *values, implausible, o.error])

    try:
        atomic_write(path, write)
    except OSError as error:
        if not stopping:
            raise OutputLocationError(output_error_message(path.parent, error) or f"{path}: {error}") from None
