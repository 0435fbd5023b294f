"""An analysis of series the user already loaded attaches to the user's own volumes
(scene/loaded.py, load_analysis), against slicer-core's real MRML.

The scene is first given what Slicer's DICOM module leaves after loading the study: a
patient and a study item (the study's UID), and per series a data node whose subject
hierarchy item carries the Series Instance UID (DICOMLib's addSeriesInSubjectHierarchy):
a scalar volume, or for a cine a volume sequence with a browser (the proxy volume's
item). One series is loaded with its slices in the other order, as a loader may sort them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from CMRFoundationLib.scene import edits, load_analysis, new_scene  # noqa: E402
from CMRFoundationLib.scene.images import new_sequence  # noqa: E402
from CMRFoundationLib.scene.loaded import loaded_series, same_grid  # noqa: E402
from CMRFoundationLib.scene.mrml import image_data, sequences_logic, vtk_matrix  # noqa: E402
from CMRFoundationLib.scene.segmentations import labels_in_reference_geometry  # noqa: E402
from CMRFoundationLib.volume_io import read_volume  # noqa: E402


@pytest.fixture(scope="module")
def analysed(sample_analysis, sample_outputs):
    """(analysis.json, its folder, key -> stack of every series with results)."""
    document = json.loads((sample_outputs / "analysis.json").read_text())
    keys = {p["series"] for p in document["parts"].values() if p["status"] == "ok" and p["series"]}
    return document, sample_outputs, {key: sample_analysis[0].stack(key) for key in keys}


def reversed_slices(ijk_to_ras, slices):
    """The IJK-to-RAS of the same volume with its slices stored in the other order."""
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = slices - 1
    return ijk_to_ras @ flip


def volume(pixels, ijk_to_ras, node):
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras))
    node.SetAndObserveImageData(image_data(pixels.astype(np.float32)))
    return node


def load_like_the_dicom_module(scene, document, stacks, reverse: str) -> dict[str, object]:
    """The user's series in the scene as Slicer's DICOM module loads them; key -> the node the views show."""
    hierarchy = scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Doe^Jane")
    study = hierarchy.CreateStudyItem(patient, "CMR study")
    hierarchy.SetItemUID(study, "DICOM", document["study"]["study_uid"])
    shown = {}
    for key, stack in stacks.items():
        pixels, ijk_to_ras = stack.pixels, stack.ijk_to_ras
        if key == reverse:
            pixels, ijk_to_ras = pixels[::-1], reversed_slices(ijk_to_ras, stack.n_slices)
        name = f"{stack.info.series_number}: {stack.info.series_description}"
        if stack.n_frames == 1:
            node = volume(pixels[:, 0], ijk_to_ras, scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name))
        else:
            sequence = new_sequence(scene, name, "time", "ms")
            for frame in range(stack.n_frames):
                sequence.SetDataNodeAtValue(volume(pixels[:, frame], ijk_to_ras, slicer.vtkMRMLScalarVolumeNode()),
                                            f"{stack.frame_times[frame]:.2f}")
            browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", name)
            browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
            sequences_logic(scene).UpdateProxyNodesFromSequences(browser)
            node = browser.GetProxyNode(sequence)
        node.CreateDefaultDisplayNodes()
        item = hierarchy.CreateItem(study, node)
        hierarchy.SetItemUID(item, "DICOM", stack.info.series_uid)
        shown[key] = node
    return shown


def image_nodes(scene) -> set[str]:
    """IDs of the image volumes and browsers in the scene (bull's-eyes, RGB volumes, left out)."""
    nodes = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
    return {n.GetID() for n in nodes if (n.IsA("vtkMRMLScalarVolumeNode") and not n.IsA("vtkMRMLVectorVolumeNode"))
            or n.IsA("vtkMRMLSequenceBrowserNode")}


def test_results_attach_to_the_users_volumes_and_no_series_is_added_again(analysed, tmp_path):
    document, folder, stacks = analysed
    reverse = document["parts"]["lge_extent"]["series"]
    scene = new_scene()
    users = load_like_the_dicom_module(scene, document, stacks, reverse)
    before = image_nodes(scene)
    assert set(loaded_series(scene, document["study"]["study_uid"])) == {s.info.series_uid for s in stacks.values()}

    # A study folder that does not exist: the images must come from the scene, not be read again.
    first = load_analysis(scene, folder, tmp_path / "not-read")

    assert image_nodes(scene) == before
    assert not edits.results_of_study(scene, document["study"]["study_uid"], edits.IMAGES)
    for key, series in first.series.items():
        assert series.users and series.images.volume is users[key]
        for map_name, shown in series.segmentations.items():
            assert shown.GetNodeReference(shown.GetReferenceImageGeometryReferenceRole()) is users[key]
            labels = read_volume(folder / "labels" / f"{key}_{map_name}.nii.gz").pixels.astype(np.uint8)
            if key == reverse:
                labels = labels[::-1]  # on the user's grid, slices in the user's order
            for frame in range(labels.shape[1]):
                if series.images.is_cine:
                    series.images.browser.SetSelectedItemNumber(frame)  # the user's browser plays the results
                assert np.array_equal(labels_in_reference_geometry(shown), labels[:, frame]), (key, map_name, frame)
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemByUID("DICOM", document["study"]["study_uid"]) == first.study_item  # the user's study

    second = load_analysis(scene, folder, tmp_path / "not-read")  # a re-run: still the user's volumes
    assert image_nodes(scene) == before
    assert all(series.images.volume is users[key] for key, series in second.series.items())
    assert first.table.GetScene() is None and second.removed  # the first results were replaced


def test_a_series_loaded_on_another_grid_gets_the_analysed_images(analysed, sample_study):
    """A loaded volume that is not the analysed stack (here: resampled) is not taken for it."""
    document, folder, stacks = analysed
    scene = new_scene()
    users = load_like_the_dicom_module(scene, document, stacks, reverse="")
    lge = document["parts"]["lge_extent"]["series"]
    matrix = vtk_matrix(stacks[lge].ijk_to_ras @ np.diag([2.0, 2.0, 1.0, 1.0]))
    users[lge].SetIJKToRASMatrix(matrix)
    loaded = load_analysis(scene, folder, sample_study / "DICOM")
    assert not loaded.series[lge].users and loaded.series[lge].images.volume is not users[lge]
    assert all(loaded.series[key].users for key in stacks if key != lge)


def test_same_grid_ignores_axis_order_and_direction_only():
    grid = np.array([[0.0, 0.0, 1.5, -20.0], [1.2, 0.0, 0.0, 5.0], [0.0, 8.0, 0.0, 30.0], [0, 0, 0, 1]])
    dims = (10, 6, 4)
    assert same_grid(grid, dims, reversed_slices(grid, 4), dims)
    permuted = grid[:, [1, 0, 2, 3]]
    assert same_grid(grid, dims, permuted, (6, 10, 4))
    assert not same_grid(grid, dims, grid, (10, 6, 5))
    shifted = grid.copy()
    shifted[0, 3] += 0.5
    assert not same_grid(grid, dims, shifted, dims)
    assert not same_grid(grid, dims, grid @ np.diag([1.0, 1.0, 0.5, 1.0]), (10, 6, 8))
