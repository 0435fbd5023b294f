"""Label maps as segmentation nodes, and back.

A label map of the analysis becomes one segmentation node with one segment per structure
(segment ID = our structure name, e.g. "lv_myocardium"), named, coloured and tagged with
its SNOMED CT terminology entry (terminology.py), all segments sharing one labelmap whose
geometry is the series' own grid (the reference geometry, so the segmentation and the
source volume line up voxel for voxel).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import slicer
import vtk

from ..terminology import slicer_terminology_entry, structure, structure_for_codes
from .mrml import array_of, image_data, vtk_matrix

LABELMAP = "Binary labelmap"  # vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
STRUCTURE_TAG = "CMRFoundation.Structure"  # segment tag: our structure name


def is_structure_map(label_names) -> bool:
    """True if every label (but background) is a structure of terminology.py (e.g. not AHA segment numbers)."""
    try:
        [structure(name) for name in label_names[1:]]
    except KeyError:
        return False
    return len(label_names) > 1


def fill_segmentation(node, labels: np.ndarray, label_names, ijk_to_ras: np.ndarray):
    """Put the label map ``labels`` [k, j, i] (value = index in ``label_names``; 0 background) into ``node``."""
    labelmap = oriented_labelmap(labels.astype(np.uint8), ijk_to_ras)
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(LABELMAP)
    segmentation.SetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
                                        slicer.vtkSegmentationConverter.SerializeImageGeometry(labelmap))
    for value, name in enumerate(label_names[1:], 1):
        entry = structure(name)
        segment = slicer.vtkSegment()
        segment.SetName(entry.display_name)
        segment.SetColor(*(c / 255 for c in entry.color))
        segment.SetLabelValue(value)
        segment.AddRepresentation(LABELMAP, labelmap)  # shared by every segment, told apart by label value
        segment.SetTag(segment.GetTerminologyEntryTagName(), slicer_terminology_entry(entry.name))
        segment.SetTag(STRUCTURE_TAG, entry.name)
        segmentation.AddSegment(segment, entry.name)
    return node


def oriented_labelmap(labels: np.ndarray, ijk_to_ras: np.ndarray):
    image = image_data(labels, slicer.vtkOrientedImageData())
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras))
    return image


def labels_in_reference_geometry(node, segment_ids=None, values=None) -> np.ndarray:
    """The segments as one label map [k, j, i] on the reference grid.

    ``segment_ids`` default to all segments in order, ``values`` to 1, 2, ...; where
    segments overlap, the later one wins.
    """
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids if segment_ids is not None else segment_ids_of(node):
        ids.InsertNextValue(segment_id)
    label_values = None
    if values is not None:
        label_values = vtk.vtkIntArray()
        for value in values:
            label_values.InsertNextValue(int(value))
    merged = slicer.vtkOrientedImageData()
    node.GenerateMergedLabelmapForAllSegments(merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, None, ids,
                                              label_values)
    return array_of(merged)


def segment_ids_of(node) -> list[str]:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]


def structure_of(segment) -> str | None:
    """Our structure name of a segment: from our tag, else from its terminology (a segment the user added)."""
    value = vtk.mutable("")
    if segment.GetTag(STRUCTURE_TAG, value) and str(value):
        return str(value)
    if segment.GetTag(segment.GetTerminologyEntryTagName(), value):
        fields = str(value).split("~")
        if len(fields) > 2 and fields[2].count("^") == 2:
            scheme, code, _ = fields[2].split("^")
            return structure_for_codes(scheme, code)
    return None


def fingerprint(node) -> str:
    """SHA-256 of everything a user can change in a segmentation: per segment, in order, its ID,
    name, colour, terminology, structure and status tags, and its own voxels on the reference grid.
    Each segment's voxels on their own, not one merged label map: there, painting a segment
    where a later one overlaps it would change nothing."""
    digest = hashlib.sha256()
    segmentation = node.GetSegmentation()
    for segment_id in segment_ids_of(node):
        segment = segmentation.GetSegment(segment_id)
        tags = [_tag(segment, name) for name in (segment.GetTerminologyEntryTagName(), STRUCTURE_TAG,
                                                 slicer.vtkSlicerSegmentationsModuleLogic.GetStatusTagName())]
        # Colours to 3 decimals: files store them with 6 digits, and k/255 never rounds on a boundary.
        described = [segment_id, segment.GetName(), [round(c, 3) for c in segment.GetColor()], tags]
        digest.update(json.dumps(described).encode())
        voxels = labels_in_reference_geometry(node, [segment_id])
        digest.update(str(voxels.shape).encode())
        digest.update(voxels.astype(np.uint8).tobytes())
    return digest.hexdigest()


def _tag(segment, name: str) -> str | None:
    value = vtk.mutable("")
    return str(value) if segment.GetTag(name, value) else None
