"""Loading an analysis (the output folder of `cmrfm analyze`) into a MRML scene."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import slicer

from ..analysis.outputs import ANALYSIS_FILE, LABELS_DIR
from ..analysis.results import FORMAT, FORMAT_VERSION, OK
from ..files import read_json
from ..measurements.bullseye import fixed_scale
from ..stack import LPS_TO_RAS, ImageStack, numbered
from ..volume_io import read_volume
from . import edits, hierarchy
from .bullseye import add_bullseye, segment_value_sets
from .images import SeriesImages, add_series_images, new_sequence
from .landmarks import add_insertion_points, insertion_point_sets
from .loaded import user_images
from .mrml import ijk_to_ras_of, prepare_scene, sequences_logic, terminologies_logic
from .segmentations import fill_segmentation, is_structure_map
from .sources import stacks_for
from .tables import add_measurements_table


class AnalysisFolderError(ValueError):
    """The folder holds no complete analysis this version can read."""


@dataclass
class LoadedSeries:
    key: str
    images: SeriesImages
    folder: int  # the subject hierarchy folder of the series' results
    users: bool = False  # the images are the user's own (loaded before, e.g. from the DICOM database)
    segmentations: dict[str, object] = field(default_factory=dict)  # label map name -> node the views show
    landmarks: list = field(default_factory=list)
    bullseyes: list = field(default_factory=list)


@dataclass
class LoadedAnalysis:
    """What load_analysis created (and kept): nodes by series, the table, the study's subject hierarchy item."""

    study_item: int
    series: dict[str, LoadedSeries]
    table: object
    kept_edited: list = field(default_factory=list)  # results the user edited, kept beside the new ones
    removed: list[str] = field(default_factory=list)  # names of unedited previous results replaced


def read_analysis(analysis_dir: str | os.PathLike) -> dict:
    """analysis.json of a complete analysis folder, checked for format and version."""
    path = Path(analysis_dir) / ANALYSIS_FILE
    document = read_json(path, "analysis", AnalysisFolderError)
    if document.get("format") != FORMAT or document.get("format_version", 0) > FORMAT_VERSION:
        raise AnalysisFolderError(f"{path}: not a {FORMAT} file this version reads")
    if not document.get("complete"):
        raise AnalysisFolderError(f"{path}: the analysis is incomplete (interrupted while writing?)")
    return document


def load_analysis(scene, analysis_dir: str | os.PathLike,
                  study: str | os.PathLike | Mapping[str, ImageStack] | None = None) -> LoadedAnalysis:
    """Show an analysis in ``scene`` (in Slicer, ``slicer.mrmlScene``).

    ``study``: where the images are - the study folder or file, or key -> ImageStack (e.g.
    from the StudyAnalysis in memory); default: the source folder recorded in analysis.json.
    Per analysed series: its images (a cine as a browsed sequence), a segmentation per label
    map of structures (a cine's as a segmentation sequence in the same browser), RV insertion
    points as markups, AHA bull's-eyes; a measurements table; all under the study in the
    subject hierarchy. A series the user already has in the scene with the analysed voxel
    grid (loaded from Slicer's DICOM database: scene/loaded.py) is never added again: its
    results attach to the user's volume (and browser), and ``study`` is not read for it.
    Loading again into the same scene reuses the images, keeps results the user edited
    (renamed " (edited)") and replaces the others.
    """
    prepare_scene(scene)
    terminologies_logic(scene)  # so that Slicer resolves our segments' terminology tags
    folder = Path(analysis_dir)
    document = read_analysis(folder)
    study_uid = document["study"].get("study_uid") or str(folder.resolve())
    parts = [p for p in document["parts"].values() if p["status"] == OK and p["series"]]
    keys = sorted({p["series"] for p in parts})
    records = {r["key"]: r for r in document["series"] if r["key"] in keys}
    kept, removed = edits.retire_previous(scene, study_uid)
    reusable = _images_in_scene(scene, study_uid)
    users = {k: images for k in keys if records[k]["series_uid"] not in reusable
             and (images := user_images(scene, records[k])) is not None}
    needed = [records[k] for k in keys if records[k]["series_uid"] not in reusable and k not in users]
    stacks = stacks_for(needed, study if study is not None else document["source"]) if needed else {}

    patient_name = next((s.info.patient_name for s in stacks.values() if s.info.patient_name), "")
    study_item = hierarchy.study_item(scene, document["study"], patient_name)
    loaded = {}
    for key in keys:
        record = records[key]
        name = f"{key} {record.get('description') or ''}".strip()
        series_folder = hierarchy.folder_item(scene, study_item, name)
        if key in users:  # the user's volume stays where the user has it
            loaded[key] = LoadedSeries(key, users[key], series_folder, users=True)
            continue
        images = reusable.get(record["series_uid"]) or _add_images(scene, stacks[key], name, study_uid, record)
        for node in (images.volume, images.sequence, images.browser):
            if node is not None:
                hierarchy.place(scene, node, series_folder)
        loaded[key] = LoadedSeries(key, images, series_folder)
    for part in parts:
        series = loaded[part["series"]]
        for label_map in part["label_maps"]:
            if is_structure_map(label_map["label_names"]) and label_map["name"] not in series.segmentations:
                node = _add_segmentation(scene, folder, series, records[series.key], label_map, study_uid)
                hierarchy.place(scene, node, series.folder)
                series.segmentations[label_map["name"]] = node
    for part_name, key, frame, points in insertion_point_sets(document):
        when = "" if frame is None else f", frame {numbered(frame)}"
        node = add_insertion_points(scene, points, f"{loaded[key].images.volume.GetName()} - RV insertion points ({part_name}{when})")
        edits.tag(node, edits.LANDMARKS, study_uid, series=records[key]["series_uid"], series_key=key, task=part_name)
        hierarchy.place(scene, node, loaded[key].folder)
        loaded[key].landmarks.append(node)
    for (key, quantity, unit), values in segment_value_sets(document["measurements"]).items():
        scale = fixed_scale(quantity, (document.get("study") or {}).get("field_strength_t"))
        node = add_bullseye(scene, values, unit, f"{key} bull's-eye {quantity} ({unit})", scale)
        edits.tag(node, edits.BULLSEYE, study_uid, series=records[key]["series_uid"], series_key=key, task=quantity)
        hierarchy.place(scene, node, loaded[key].folder)
        loaded[key].bullseyes.append(node)
    table = _add_table(scene, document, study_uid, study_item)
    return LoadedAnalysis(study_item, loaded, table, kept, removed)


def _add_images(scene, stack: ImageStack, name: str, study_uid: str, record: dict) -> SeriesImages:
    images = add_series_images(scene, stack, name)
    for node in (images.volume, images.sequence, images.browser):
        if node is not None:
            node.SetAttribute(edits.SERIES, record["series_uid"])
            node.SetAttribute(edits.SERIES_KEY, record["key"])
    # The node that stands for the series: the volume, or the browser that plays a cine.
    edits.tag(images.browser or images.volume, edits.IMAGES, study_uid, series=record["series_uid"], series_key=record["key"])
    return images


def _images_in_scene(scene, study_uid: str) -> dict[str, SeriesImages]:
    """series UID -> the images an earlier load of the study put in the scene."""
    found = {}
    for node in edits.results_of_study(scene, study_uid, edits.IMAGES):
        if node.IsA("vtkMRMLSequenceBrowserNode"):
            sequence = node.GetMasterSequenceNode()
            found[node.GetAttribute(edits.SERIES)] = SeriesImages(node.GetProxyNode(sequence), sequence, node)
        else:
            found[node.GetAttribute(edits.SERIES)] = SeriesImages(node)
    return found


def _add_segmentation(scene, folder: Path, series: LoadedSeries, record: dict, label_map: dict, study_uid: str):
    """The label map as a segmentation node, or for a cine a segmentation sequence in the series' browser."""
    labels = read_volume(folder / LABELS_DIR / f"{series.key}_{label_map['name']}.nii.gz").pixels.astype(np.uint8)
    names = label_map["label_names"]
    volume = series.images.volume
    # The analysed stack's grid; a user's volume may order its axes otherwise, and Slicer maps
    # the labels onto it (the same voxel centres: scene/loaded.py).
    ijk_to_ras = LPS_TO_RAS @ np.asarray(record["ijk_to_lps"]) if record.get("ijk_to_lps") else ijk_to_ras_of(volume)
    name = f"{volume.GetName()} - {label_map['name']}"
    frames = label_map.get("frames") or list(range(labels.shape[1]))
    attributes = {"series": record["series_uid"], "series_key": series.key, "task": label_map["name"], "frames": frames}
    if not series.images.is_cine or labels.shape[1] == 1:
        node = fill_segmentation(scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name), labels[:, 0], names, ijk_to_ras)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        edits.tag(node, edits.SEGMENTATION, study_uid, **attributes)
        return node
    images = series.images
    sequence = new_sequence(scene, f"{name} (sequence)", images.sequence.GetIndexName(), images.sequence.GetIndexUnit())
    for frame in range(images.sequence.GetNumberOfDataNodes()):
        item = fill_segmentation(slicer.vtkMRMLSegmentationNode(), labels[:, frame], names, ijk_to_ras)
        sequence.SetDataNodeAtValue(item, images.sequence.GetNthIndexValue(frame))
    images.browser.AddSynchronizedSequenceNode(sequence.GetID())
    images.browser.SetSaveChanges(sequence, True)  # edits on the shown frame go back into the sequence
    sequences_logic(scene).UpdateProxyNodesFromSequences(images.browser)
    proxy = images.browser.GetProxyNode(sequence)
    proxy.SetName(name)
    proxy.CreateDefaultDisplayNodes()
    proxy.SetReferenceImageGeometryParameterFromVolumeNode(volume)  # the Segment Editor's source volume
    edits.tag(sequence, edits.SEGMENTATION, study_uid, **attributes)
    hierarchy.place(scene, sequence, series.folder)
    return proxy


def _add_table(scene, document: dict, study_uid: str, study_item: int):
    facts = document["study"]
    name = " ".join(filter(None, ["Measurements", facts.get("study_description"), facts.get("study_date")]))
    node = add_measurements_table(scene, document["measurements"], name)
    edits.tag(node, edits.MEASUREMENTS, study_uid)
    hierarchy.place(scene, node, study_item)
    return node
