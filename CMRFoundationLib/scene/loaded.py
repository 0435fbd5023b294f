"""The series a user already has in the scene (loaded from Slicer's DICOM database), so that
an analysis of them uses them: their files are analysed, and the results attach to the
user's own volumes instead of adding the series a second time.

Slicer's DICOM loaders give each loaded series' data node a subject hierarchy item whose
"DICOM" UID is the Series Instance UID (DICOMLib's addSeriesInSubjectHierarchy). A series
of an analysis is the user's volume when the volume has the analysed stack's voxel grid
(the same voxel centres, whatever the order of its axes): a single-frame stack a scalar
volume, a cine the proxy volume of a sequence browser with one item per frame.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import vtk

from ..stack import LPS_TO_RAS
from . import edits
from .images import SeriesImages
from .mrml import ijk_to_ras_of, sequences_logic

DICOM_UID = "DICOM"
GRID_TOLERANCE_MM = 0.01


def loaded_series(scene, study_uid: str) -> dict[str, list]:
    """Series Instance UID -> the user's data nodes of it, for the series of the study in the scene
    (results of this extension left out)."""
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.GetItemByUID(DICOM_UID, study_uid) if study_uid else 0
    if not study:
        return {}
    found: dict[str, list] = {}
    for item in _descendants(hierarchy, study):
        series_uid, node = hierarchy.GetItemUID(item, DICOM_UID), hierarchy.GetItemDataNode(item)
        if series_uid and node is not None and not node.GetAttribute(edits.KIND):
            found.setdefault(series_uid, []).append(node)
    return found


def user_images(scene, record: dict) -> SeriesImages | None:
    """The user's images of the analysed stack ``record`` (an analysis.json "series" entry), or None."""
    if not record.get("ijk_to_lps"):
        return None  # an analysis written before the grid was recorded
    slices, frames, rows, columns = record["shape"]
    grid = (LPS_TO_RAS @ np.asarray(record["ijk_to_lps"], dtype=float), (columns, rows, slices))
    hierarchy = scene.GetSubjectHierarchyNode()
    for item in _descendants(hierarchy, hierarchy.GetSceneItemID()):
        if hierarchy.GetItemUID(item, DICOM_UID) != record["series_uid"]:
            continue
        node = hierarchy.GetItemDataNode(item)
        if node is None or node.GetAttribute(edits.KIND):
            continue
        images = _images_of(scene, node)
        if images is not None and _frames(images) == frames and same_grid(*grid, *_grid_of(images.volume)):
            return images
    return None


def same_grid(ijk_to_ras_a, dims_a, ijk_to_ras_b, dims_b, tolerance: float = GRID_TOLERANCE_MM) -> bool:
    """True when two voxel grids have the same voxel centres, whatever the order and direction of their axes."""
    if sorted(dims_a) != sorted(dims_b):
        return False
    corners_b = _corners(ijk_to_ras_b, dims_b)
    if not all(np.min(np.linalg.norm(corners_b - corner, axis=1)) < tolerance for corner in _corners(ijk_to_ras_a, dims_a)):
        return False
    steps_b = [(ijk_to_ras_b[:3, n], dims_b[n]) for n in range(3)]
    for n in range(3):
        if dims_a[n] == 1:
            continue  # one voxel along this axis: its step places no voxel
        step = ijk_to_ras_a[:3, n]
        if not any(size == dims_a[n] and min(np.linalg.norm(step - other), np.linalg.norm(step + other)) < tolerance
                   for other, size in steps_b):
            return False
    return True


def _corners(ijk_to_ras, dims) -> np.ndarray:
    indices = np.array([[*corner, 1.0] for corner in product(*[(0, d - 1) for d in dims])])
    return (np.asarray(ijk_to_ras) @ indices.T).T[:, :3]


def _grid_of(volume):
    image = volume.GetImageData()
    return ijk_to_ras_of(volume), image.GetDimensions() if image is not None else (0, 0, 0)


def _images_of(scene, node) -> SeriesImages | None:
    """The series as this scene layer holds its images: a scalar volume, or a browsed cine's proxy,
    sequence and browser; ``node`` may be any of those."""
    logic = sequences_logic(scene)
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        browser, sequence = node, node.GetMasterSequenceNode()
    elif node.IsA("vtkMRMLSequenceNode"):
        browser, sequence = logic.GetFirstBrowserNodeForSequenceNode(node), node
    elif node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode"):
        browser = logic.GetFirstBrowserNodeForProxyNode(node)
        if browser is None:
            return SeriesImages(node)
        sequence = browser.GetSequenceNode(node)
    else:
        return None
    if browser is None or sequence is None:
        return None
    proxy = browser.GetProxyNode(sequence)
    if proxy is None or not proxy.IsA("vtkMRMLScalarVolumeNode"):
        return None
    return SeriesImages(proxy, sequence, browser)


def _frames(images: SeriesImages) -> int:
    return images.sequence.GetNumberOfDataNodes() if images.is_cine else 1


def _descendants(hierarchy, item) -> list[int]:
    children = vtk.vtkIdList()
    hierarchy.GetItemChildren(item, children, True)
    return [children.GetId(n) for n in range(children.GetNumberOfIds())]
