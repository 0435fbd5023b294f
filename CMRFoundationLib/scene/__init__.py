"""The scene layer: analyses in a MRML scene, without Qt (tested against slicer-core's real MRML).

This is the only part of CMRFoundationLib that imports ``slicer``; in Slicer it works on
``slicer.mrmlScene``, in plain Python (``pip install slicer-core``) on ``new_scene()``.

    scene = new_scene()                                   # or slicer.mrmlScene
    loaded = load_analysis(scene, "out", "study/DICOM")   # the folder of `cmrfm analyze`
    export_training_labels(scene, loaded.series["S006"].segmentations["seg_sax_cine"], "labels/seg_sax_cine")
    save_scene_bundle(scene, "study.mrb")

Modules: mrml (scene set-up, numpy/VTK), images (volumes, cine sequences), segmentations
(label maps <-> segments), landmarks, tables, bullseye, hierarchy (subject hierarchy),
edits (result tags, edit detection), sources (the stacks of an analysis), loaded (the
user's own loaded series, which results attach to), load (load_analysis), export
(training labels), files (.seg.nrrd, .mrk.json, .mrb), batch.
"""

from .edits import edited_frames
from .export import export_training_labels, pseudonym
from .files import (
    read_markups,
    read_scene_bundle,
    read_segmentation,
    save_markups,
    save_scene_bundle,
    save_segmentation,
)
from .load import AnalysisFolderError, LoadedAnalysis, LoadedSeries, load_analysis, read_analysis
from .mrml import TERMINOLOGY_FILE, close_scene, new_scene, prepare_scene
from .sources import SeriesNotFound

__all__ = [
    "TERMINOLOGY_FILE",
    "AnalysisFolderError",
    "LoadedAnalysis",
    "LoadedSeries",
    "SeriesNotFound",
    "close_scene",
    "edited_frames",
    "export_training_labels",
    "load_analysis",
    "new_scene",
    "prepare_scene",
    "pseudonym",
    "read_analysis",
    "read_markups",
    "read_scene_bundle",
    "read_segmentation",
    "save_markups",
    "save_scene_bundle",
    "save_segmentation",
]
