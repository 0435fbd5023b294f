"""Every change a user makes to a result survives a re-run (scene/edits.py), against slicer-core's MRML.

A result segmentation and a landmarks node are made and tagged as load_analysis makes
them; each scenario changes them as the Segment Editor or the Markups module would, then
``retire_previous`` (what a re-load does first) must keep the changed node, with the
change, and remove an unchanged one. The re-load of a whole analysis is in test_scene.py.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from CMRFoundationLib.scene import edits, new_scene  # noqa: E402
from CMRFoundationLib.scene.landmarks import add_insertion_points  # noqa: E402
from CMRFoundationLib.scene.mrml import ijk_to_ras_of  # noqa: E402
from CMRFoundationLib.scene.segmentations import (  # noqa: E402
    fill_segmentation,
    labels_in_reference_geometry,
    oriented_labelmap,
)

STUDY = "1.2.826.0.1.3680043.8.498.1"
NAMES = ["background", "lv_blood_pool", "lv_myocardium", "rv_blood_pool"]
LOGIC = slicer.vtkSlicerSegmentationsModuleLogic


def result_segmentation(scene):
    labels = np.zeros((3, 24, 24), np.uint8)
    labels[:, 6:12, 6:12] = 1
    labels[:, 4:14, 12:14] = 2
    labels[:, 14:20, 8:16] = 3
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "S010 LGE - seg_lge")
    fill_segmentation(node, labels, NAMES, np.diag([1.5, 1.5, 8.0, 1.0]))
    edits.tag(node, edits.SEGMENTATION, STUDY, series="1.2.3", series_key="S010", task="seg_lge")
    return node


def result_landmarks(scene):
    points = [{"slice": s, "anterior": {"lps": [10.0 + s, 20.0, 8.0 * s], "confidence": 0.9},
               "inferior": {"lps": [-10.0, 25.0 - s, 8.0 * s], "confidence": 0.8}} for s in range(3)]
    node = add_insertion_points(scene, points, "S006 - RV insertion points")
    edits.tag(node, edits.LANDMARKS, STUDY, series="1.2.4", series_key="S006", task="myocardial_segments")
    return node


def paint(node, segment_id, mask, mode=LOGIC.MODE_MERGE_MAX):
    """A Segment Editor stroke: ``mask`` [k, j, i] on the reference grid into the segment."""
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        node.GetSegmentation().GetConversionParameter("Reference image geometry"), geometry)
    LOGIC.SetBinaryLabelmapToSegment(oriented_labelmap(mask.astype(np.uint8), ijk_to_ras_of(geometry)),
                                     node, segment_id, mode)


def voxels(node, segment_id):
    return labels_in_reference_geometry(node, [segment_id])


def segment(node, segment_id):
    return node.GetSegmentation().GetSegment(segment_id)


def grown(node):
    mask = voxels(node, "lv_blood_pool")
    mask[1, 12:14, 6:12] = 1
    paint(node, "lv_blood_pool", mask)


def eroded(node):
    mask = voxels(node, "rv_blood_pool")
    mask[:, 14:16] = 0
    paint(node, "rv_blood_pool", mask, LOGIC.MODE_REPLACE)


def painted_over_a_later_segment(node):
    """Overlap allowed: the blood pool takes myocardium voxels and the myocardium keeps them,
    so one label map with the later segment on top would not change."""
    paint(node, "lv_blood_pool", voxels(node, "lv_myocardium"))
    assert voxels(node, "lv_myocardium").sum() > 0 and (voxels(node, "lv_blood_pool") & voxels(node, "lv_myocardium")).any()


def new_terminology(node):
    entry = segment(node, "rv_blood_pool").GetTag(segment(node, "rv_blood_pool").GetTerminologyEntryTagName(), vtk.mutable(""))
    assert entry
    segment(node, "rv_blood_pool").SetTag(segment(node, "rv_blood_pool").GetTerminologyEntryTagName(),
                                          "Segmentation category and type - 3D Slicer General Anatomy list"
                                          "~SCT^85756007^Tissue~SCT^85756007^Tissue~^^~Anatomic codes~^^~^^")


def added_segment(node):
    mask = np.zeros_like(voxels(node, "lv_blood_pool"))
    mask[2, 1:3, 1:3] = 1
    node.GetSegmentation().AddEmptySegment("scar", "Scar")
    paint(node, "scar", mask)


SEGMENTATION_EDITS = {
    "paint": grown,
    "erase": eroded,
    "paint where two segments overlap": painted_over_a_later_segment,
    "rename a segment": lambda node: segment(node, "lv_myocardium").SetName("Myocardium (checked)"),
    "recolour a segment": lambda node: segment(node, "lv_myocardium").SetColor(0.1, 0.9, 0.1),
    "change a segment's terminology": new_terminology,
    "mark a segment completed": lambda node: LOGIC.SetSegmentStatus(segment(node, "lv_blood_pool"), LOGIC.Completed),
    "remove a segment": lambda node: node.GetSegmentation().RemoveSegment("rv_blood_pool"),
    "add a segment": added_segment,
}
LANDMARK_EDITS = {
    "move a point": lambda node: node.SetNthControlPointPosition(2, 11.0, -20.0, 16.5),
    "rename a point": lambda node: node.SetNthControlPointLabel(0, "Anterior RV insertion (moved)"),
    "describe a point": lambda node: node.SetNthControlPointDescription(1, "checked"),
    "add a point": lambda node: node.AddControlPoint(vtk.vtkVector3d(1.0, 2.0, 3.0), "extra"),
    "remove a point": lambda node: node.RemoveNthControlPoint(3),
}


@pytest.mark.parametrize("make, edit", [(result_segmentation, e) for e in SEGMENTATION_EDITS.values()]
                         + [(result_landmarks, e) for e in LANDMARK_EDITS.values()],
                         ids=[*SEGMENTATION_EDITS, *LANDMARK_EDITS])
def test_a_changed_result_is_kept_with_its_change_on_a_rerun(make, edit):
    scene = new_scene()
    changed, untouched = make(scene), make(scene)
    name = changed.GetName()
    edit(changed)
    after_edit = edits.frame_fingerprints(changed)

    kept, removed = edits.retire_previous(scene, STUDY)  # what load_analysis does before loading again

    assert kept == [changed] and removed == [untouched.GetName()]
    assert scene.GetNodeByID(changed.GetID()) is changed and changed.GetName() == name + edits.EDITED_SUFFIX
    assert edits.frame_fingerprints(changed) == after_edit  # the change itself is untouched
    assert untouched.GetScene() is None


@pytest.mark.parametrize("make", [result_segmentation, result_landmarks])
def test_setting_what_is_already_there_is_no_edit(make):
    node = make(new_scene())
    if node.IsA("vtkMRMLSegmentationNode"):
        segment(node, "lv_myocardium").SetName(segment(node, "lv_myocardium").GetName())
        paint(node, "lv_blood_pool", voxels(node, "lv_blood_pool"))
    else:
        node.SetNthControlPointLabel(0, node.GetNthControlPointLabel(0))
    assert edits.edited_frames(node) == []
