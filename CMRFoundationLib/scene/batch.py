"""Batch analysis of a folder of studies into saved Slicer results (Resources/Scripts/batch_analyze.py).

The cohort run of the library (CMRFoundationLib.cohort.run_serial: one process, one study
after another), with the Slicer files added to each study folder before it is final:

    OUT/<study>/analysis.json, measurements.csv, report.html, labels/, dicom/   write_outputs
    OUT/<study>/scene.mrb                        the Slicer scene of the analysis
    OUT/<study>/slicer/<series>_<map>[_frameNNN].seg.nrrd  segmentations (a cine: its DICOM SEG frames, ED and ES,
                                                            numbered from 1 like the SEG files)
    OUT/<study>/slicer/<series>_<part>.mrk.json  landmarks
    OUT/<study>/batch-complete.json              written last: the study is done
    OUT/cohort.csv (and .parquet with pyarrow)   one row per study (CMRFoundationLib.cohort.table)

As with ``cmrfm batch``: each study folder appears complete or not at all, a re-run skips
finished studies (those without Slicer files, or analysed with other weights or another
version, are done again), a failing study is retried, then recorded as failed in the
table, and never stops the batch. An output location that cannot take the results does (OUT
not writable, its disk full): ``run_batch`` raises OutputLocationError, the studies done are
kept. Refused weights stop it before the first study (CohortError). One batch at a time per
OUT folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..analysis import AnalysisOptions
from ..cohort import find_studies, run_serial
from ..stack import numbered
from . import edits
from .files import save_markups, save_scene_bundle, save_segmentation
from .load import load_analysis
from .mrml import close_scene, new_scene

OUTPUTS = "analysis+slicer"  # what a finished study folder holds, for the cohort's skip check


def run_batch(studies_dir: str | os.PathLike, out_dir: str | os.PathLike, options: AnalysisOptions | None = None,
              scene_factory: Callable[[], object] | None = None, progress: Callable[[str], None] = print,
              retries: int = 2) -> list[dict]:
    """Analyse every study (subfolder) of ``studies_dir`` not yet done in ``out_dir``; the
    cohort table's rows (status "done" or "failed", measurements, failure_reason).

    ``scene_factory`` gives an empty scene per study (in Slicer: ``slicer.mrmlScene``,
    which is cleared after each study); default a new slicer-core scene.
    """
    factory = scene_factory or new_scene

    def slicer_files(analysis, folder: Path) -> None:
        scene = factory()
        try:
            loaded = load_analysis(scene, folder, {r.key: r.stack for r in analysis.series})
            _save_slicer_files(scene, loaded, folder)
        finally:
            close_scene(scene)

    result = run_serial(find_studies(studies_dir), out_dir, options, extra=slicer_files, outputs=OUTPUTS,
                        retries=retries, log=progress)
    return result.rows


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
