"""The scene layer against slicer-core's real MRML: an analysis of the sample study loaded
into a scene (volumes, cine sequences, segmentations, landmarks, table, bull's-eyes,
subject hierarchy), re-loading beside edited results, and the .seg.nrrd / .mrk.json /
.mrb round trips."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from CMRFoundationLib.analysis.report import NO_DATA  # noqa: E402
from CMRFoundationLib.measurements.bullseye import colour_of, fixed_scale  # noqa: E402
from CMRFoundationLib.scene import (  # noqa: E402
    AnalysisFolderError,
    close_scene,
    edited_frames,
    edits,
    load_analysis,
    new_scene,
    read_markups,
    read_scene_bundle,
    read_segmentation,
    save_markups,
    save_scene_bundle,
    save_segmentation,
)
from CMRFoundationLib.scene.bullseye import segment_image  # noqa: E402
from CMRFoundationLib.scene.mrml import TERMINOLOGY_FILE, array_of, ijk_to_ras_of, terminologies_logic  # noqa: E402
from CMRFoundationLib.scene.segmentations import labels_in_reference_geometry, oriented_labelmap  # noqa: E402
from CMRFoundationLib.scene.tables import table_rows  # noqa: E402
from CMRFoundationLib.stack import LPS_TO_RAS  # noqa: E402
from CMRFoundationLib.terminology import slicer_terminology_context, slicer_terminology_entry, structure  # noqa: E402
from CMRFoundationLib.volume_io import read_volume  # noqa: E402


@pytest.fixture(scope="module")
def result(sample_analysis, sample_outputs):
    """(StudyAnalysis, its output folder)."""
    return sample_analysis[0], sample_outputs


@pytest.fixture(scope="module")
def document(result):
    return json.loads((result[1] / "analysis.json").read_text())


@pytest.fixture(scope="module")
def loaded(result):
    """The analysis loaded from its folder, the images read again from the study folder."""
    scene = new_scene()
    yield scene, load_analysis(scene, result[1])
    close_scene(scene)


def label_maps(document):
    """(series key, label map) of every structure map of the analysis."""
    return [(part["series"], m) for part in document["parts"].values() if part["status"] == "ok"
            for m in part["label_maps"] if not m["name"].startswith("aha")]


def stored_labels(folder, key, name):
    return read_volume(folder / "labels" / f"{key}_{name}.nii.gz").pixels.astype(np.uint8)


def tag_of(segment, name):
    value = vtk.mutable("")
    segment.GetTag(name, value)
    return str(value)


# --- contents ----------------------------------------------------------------------------------


def test_every_analysed_series_has_its_images_with_the_stacks_geometry(result, loaded):
    analysis, _ = result
    scene, load = loaded
    analysed_keys = {p.series for p in analysis.parts.values() if p.status == "ok"}
    assert set(load.series) == analysed_keys
    for key, series in load.series.items():
        stack = analysis.stack(key)
        assert np.allclose(ijk_to_ras_of(series.images.volume), LPS_TO_RAS @ stack.ijk_to_lps)
        if stack.n_frames == 1:
            assert not series.images.is_cine
            assert np.array_equal(array_of(series.images.volume.GetImageData()), stack.pixels[:, 0])
            continue
        sequence, browser = series.images.sequence, series.images.browser
        assert sequence.GetNumberOfDataNodes() == stack.n_frames
        assert [float(sequence.GetNthIndexValue(f)) for f in range(stack.n_frames)] == pytest.approx(stack.frame_times, abs=0.01)
        for frame in range(stack.n_frames):
            browser.SetSelectedItemNumber(frame)  # the proxy volume follows the browser
            assert np.array_equal(array_of(series.images.volume.GetImageData()), stack.pixels[:, frame])
            assert np.allclose(ijk_to_ras_of(series.images.volume), LPS_TO_RAS @ stack.ijk_to_lps)


def test_segments_are_named_coloured_and_tagged_with_snomed_terminology(document, loaded):
    scene, load = loaded
    logic = terminologies_logic(scene)
    maps = label_maps(document)
    assert {name for _, m in maps for name in [m["name"]]} == {"seg_sax_cine", "seg_4ch_cine", "seg_lge", "seg_mapping"}
    for key, label_map in maps:
        segmentation = load.series[key].segmentations[label_map["name"]].GetSegmentation()
        names = label_map["label_names"][1:]
        assert [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())] == names
        for name in names:
            segment, entry = segmentation.GetSegment(name), structure(name)
            assert segment.GetName() == entry.display_name
            assert np.allclose(segment.GetColor(), np.array(entry.color) / 255)
            tag = tag_of(segment, "TerminologyEntry")
            assert tag == slicer_terminology_entry(name) and "SCT^" in tag.split("~")[2]
            resolved = slicer.vtkSlicerTerminologyEntry()
            assert logic.DeserializeTerminologyEntry(tag, resolved)  # Slicer finds it in our context
            assert resolved.GetTypeObject().GetCodeValue() == entry.type[1]


def test_segmentations_hold_the_label_maps_on_the_source_volume_grid(result, document, loaded):
    analysis, folder = result
    scene, load = loaded
    for key, label_map in label_maps(document):
        labels = stored_labels(folder, key, label_map["name"])
        series = load.series[key]
        shown = series.segmentations[label_map["name"]]
        geometry = slicer.vtkOrientedImageData()
        slicer.vtkSegmentationConverter.DeserializeImageGeometry(
            shown.GetSegmentation().GetConversionParameter("Reference image geometry"), geometry)
        assert np.allclose(ijk_to_ras_of(geometry), ijk_to_ras_of(series.images.volume))
        assert geometry.GetDimensions() == series.images.volume.GetImageData().GetDimensions()
        assert shown.GetNodeReference(shown.GetReferenceImageGeometryReferenceRole()) is series.images.volume
        if not series.images.is_cine:
            assert np.array_equal(labels_in_reference_geometry(shown), labels[:, 0])
            continue
        for frame in range(labels.shape[1]):  # the segmentation sequence plays with the image sequence
            series.images.browser.SetSelectedItemNumber(frame)
            assert np.array_equal(labels_in_reference_geometry(shown), labels[:, frame])


def test_rv_insertion_points_are_markups_at_their_patient_coordinates(result, document, loaded):
    analysis, _ = result
    scene, load = loaded
    points = document["parts"]["myocardial_segments"]["results"]["insertion_points"]
    key = document["parts"]["myocardial_segments"]["series"]
    stack = analysis.stack(key)
    (markups,) = load.series[key].landmarks
    expected = [(side, p["slice"], p[side]) for p in points for side in ("anterior", "inferior") if p[side]]
    assert markups.GetNumberOfControlPoints() == len(expected) > 0
    for n, (side, slice_index, point) in enumerate(expected):
        assert markups.GetNthControlPointLabel(n) == f"{side.capitalize()} RV insertion s{slice_index + 1}"  # from 1
        lps = np.array(markups.GetNthControlPointPosition(n)) * np.array([-1, -1, 1])
        assert np.allclose(lps, point["lps"], atol=1e-6)
        row_col = np.full((stack.n_slices, 1, 2), np.nan)
        row_col[slice_index, 0] = point["row_col"]  # the point on its image pixel, in its slice's plane
        assert np.allclose(lps, stack.pixel_points_to_lps(row_col)[slice_index, 0], atol=0.01)


def test_measurements_table_equals_the_csv(result, loaded):
    _, folder = result
    scene, load = loaded
    with open(folder / "measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = table_rows(load.table)
    assert len(table) == len(rows) > 20
    columns = ("section", "name", "unit", "series", "segment", "frame", "check")  # frames numbered from 1 in both
    for in_table, in_csv in zip(table, rows):
        assert {k: in_table[k] for k in columns} == {k: in_csv[k] for k in columns}
        assert in_table["value"] == pytest.approx(float(in_csv["value"]), rel=1e-5)
    assert any(row["frame"] for row in table)


def test_bullseyes_show_the_segment_values_in_the_reports_colours(document, loaded):
    scene, load = loaded
    segments = segment_image()
    centre = segments.shape[0] // 2
    # Anterior up, septal left, as in the report: basal anterior (1) top, basal inferior (4) bottom.
    assert segments[2, centre] == 1 and segments[-3, centre] == 4 and segments[centre, 2] in (2, 3)
    assert segments[centre, centre] in (13, 14, 15, 16) and segments[0, 0] == 0
    wall = {m["segment"]: m["value"] for m in document["measurements"] if m["name"] == "wall_thickness"}
    key = document["parts"]["myocardial_segments"]["series"]
    (node,) = [n for n in load.series[key].bullseyes if "wall_thickness" in n.GetName()]
    rgb = array_of(node.GetImageData()).reshape(*segments.shape, 3)
    # The fixed wall-thickness scale (0-20 mm), as in the report: one colour, one thickness, in every study.
    assert fixed_scale("wall_thickness") == (0.0, 20.0)
    for segment, value in wall.items():
        assert tuple(rgb[segments == segment][0]) == colour_of(value, 0.0, 20.0)
    for segment in set(range(1, 17)) - set(wall):
        assert tuple(rgb[segments == segment][0]) == NO_DATA
    assert "colour scale 0 to 20 mm" in node.GetDescription()  # the scale of the colours, not the values' span


def test_everything_sits_under_the_study_in_the_subject_hierarchy(document, loaded):
    scene, load = loaded
    hierarchy = scene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemUID(load.study_item, "DICOM") == document["study"]["study_uid"]
    assert hierarchy.GetItemLevel(hierarchy.GetItemParent(load.study_item)) == "Patient"
    created = [load.table] + [n for s in load.series.values()
                              for n in [s.images.volume, *s.segmentations.values(), *s.landmarks, *s.bullseyes]]
    for node in created:
        item = hierarchy.GetItemByDataNode(node)
        assert item and load.study_item in ancestors(hierarchy, item), node.GetName()
    for key, series in load.series.items():
        for map_name, node in series.segmentations.items():
            assert node.GetName().startswith(key) and map_name in node.GetName()


def ancestors(hierarchy, item) -> list[int]:
    found = []
    while item:
        item = hierarchy.GetItemParent(item)
        found.append(item)
    return found


def test_terminology_file_is_the_librarys_context():
    assert json.loads(TERMINOLOGY_FILE.read_text()) == json.loads(json.dumps(slicer_terminology_context()))


def test_an_incomplete_analysis_is_refused(tmp_path):
    (tmp_path / "analysis.json").write_text(json.dumps({"format": "cmrfm-analysis", "format_version": 1, "complete": False}))
    with pytest.raises(AnalysisFolderError, match="incomplete"):
        load_analysis(new_scene(), tmp_path)


# --- re-loading never overwrites an edit ------------------------------------------------------------


def paint(node, segment_id: str, slice_index: int) -> None:
    """What a Segment Editor stroke does: set part of a segment's labelmap (a whole slice here)."""
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        node.GetSegmentation().GetConversionParameter("Reference image geometry"), geometry)
    i, j, k = geometry.GetDimensions()
    mask = np.zeros((k, j, i), np.uint8)
    mask[slice_index, j // 3: j // 2, i // 3: i // 2] = 1
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        oriented_labelmap(mask, ijk_to_ras_of(geometry)), node, segment_id,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)


def test_reloading_keeps_edited_segmentations_and_replaces_the_others(result, document):
    analysis, folder = result
    stacks = {r.key: r.stack for r in analysis.series}
    scene = new_scene()
    first = load_analysis(scene, folder, stacks)
    lge_key = document["parts"]["lge_extent"]["series"]
    sax_key = document["parts"]["function"]["series"]
    lge = first.series[lge_key].segmentations["seg_lge"]
    cine = first.series[sax_key].segmentations["seg_sax_cine"]
    t1 = first.series[document["parts"]["t1_map"]["series"]].segmentations["seg_mapping"]
    paint(lge, "lv_blood_pool", 5)
    first.series[sax_key].images.browser.SetSelectedItemNumber(2)
    paint(cine, "rv_blood_pool", 4)  # on the proxy: the browser saves it into frame 2 of the sequence
    edited_lge = labels_in_reference_geometry(lge)
    cine_sequence = edits.sequence_of_proxy(scene, cine)
    four_key = document["parts"]["atria"]["series"]
    first.series[four_key].images.browser.SetSelectedItemNumber(0)
    four = first.series[four_key].segmentations["seg_4ch_cine"]
    four.GetSegmentation().GetSegment("la_blood_pool").SetName("LA (checked)")  # a rename on the shown frame
    four_sequence = edits.sequence_of_proxy(scene, four)
    assert edited_frames(cine_sequence) == [2] and edited_frames(lge) == [0] and edited_frames(t1) == []
    assert edited_frames(four_sequence) == [0]
    t1_id = t1.GetID()

    second = load_analysis(scene, folder, stacks)
    kept = {n.GetName() for n in second.kept_edited}
    assert kept == {lge.GetName(), cine_sequence.GetName(), four_sequence.GetName()}
    assert four_sequence.GetNthDataNode(0).GetSegmentation().GetSegment("la_blood_pool").GetName() == "LA (checked)"
    assert all(name.endswith(" (edited)") for name in kept) and cine.GetName().endswith(" (edited)")
    assert scene.GetNodeByID(t1_id) is None  # the unedited result was replaced
    assert np.array_equal(labels_in_reference_geometry(lge), edited_lge)  # the edit is untouched
    new_lge = second.series[lge_key].segmentations["seg_lge"]
    assert new_lge is not lge and np.array_equal(labels_in_reference_geometry(new_lge),
                                                 stored_labels(folder, lge_key, "seg_lge")[:, 0])
    assert second.series[sax_key].images.volume is first.series[sax_key].images.volume  # images reused
    browser = second.series[sax_key].images.browser
    assert browser.IsSynchronizedSequenceNode(cine_sequence.GetID())  # the edited cine still plays along
    browser.SetSelectedItemNumber(2)
    new_cine = second.series[sax_key].segmentations["seg_sax_cine"]
    assert np.array_equal(labels_in_reference_geometry(new_cine), stored_labels(folder, sax_key, "seg_sax_cine")[:, 2])
    assert not np.array_equal(labels_in_reference_geometry(cine), labels_in_reference_geometry(new_cine))

    third = load_analysis(scene, folder, stacks)  # edited results stay as they are, whatever happens next
    assert third.kept_edited == [] and scene.GetNodeByID(lge.GetID()) is lge
    assert lge.GetName().count("(edited)") == 1


# --- files -------------------------------------------------------------------------------------------


def test_seg_nrrd_round_trip_keeps_voxels_names_colours_and_terminology(document, loaded, tmp_path):
    scene, load = loaded
    key = document["parts"]["lge_extent"]["series"]
    node = load.series[key].segmentations["seg_lge"]
    back = read_segmentation(new_scene(), save_segmentation(node, tmp_path / "lge.seg.nrrd"))
    assert np.array_equal(labels_in_reference_geometry(back), labels_in_reference_geometry(node))
    original, restored = node.GetSegmentation(), back.GetSegmentation()
    assert restored.GetNumberOfSegments() == original.GetNumberOfSegments() == 3
    for n in range(original.GetNumberOfSegments()):
        a, b = original.GetNthSegment(n), restored.GetNthSegment(n)
        assert (b.GetName(), tag_of(b, "TerminologyEntry")) == (a.GetName(), tag_of(a, "TerminologyEntry"))
        assert np.allclose(b.GetColor(), a.GetColor(), atol=1e-3)


def test_mrk_json_round_trip_in_lps(document, loaded, tmp_path):
    scene, load = loaded
    key = document["parts"]["myocardial_segments"]["series"]
    (node,) = load.series[key].landmarks
    path = save_markups(node, tmp_path / "rv.mrk.json")
    stored = json.loads(path.read_text())["markups"][0]
    assert stored["coordinateSystem"] == "LPS"
    points = [p[side]["lps"] for p in document["parts"]["myocardial_segments"]["results"]["insertion_points"]
              for side in ("anterior", "inferior") if p[side]]
    assert np.allclose([p["position"] for p in stored["controlPoints"]], points, atol=1e-6)
    back = read_markups(new_scene(), path)
    assert back.GetNumberOfControlPoints() == node.GetNumberOfControlPoints()
    for n in range(node.GetNumberOfControlPoints()):
        assert back.GetNthControlPointLabel(n) == node.GetNthControlPointLabel(n)
        assert np.allclose(back.GetNthControlPointPosition(n), node.GetNthControlPointPosition(n))


def test_scene_bundle_round_trip(document, loaded, result, tmp_path):
    scene, load = loaded
    _, folder = result
    path = save_scene_bundle(scene, tmp_path / "study.mrb")
    back = read_scene_bundle(path)
    tagged = lambda s: sorted(s.GetNthNode(n).GetName() for n in range(s.GetNumberOfNodes())  # noqa: E731
                              if s.GetNthNode(n).GetAttribute(edits.KIND))
    assert tagged(back) == tagged(scene)
    key = document["parts"]["function"]["series"]
    name = load.series[key].segmentations["seg_sax_cine"].GetName()
    sequence = back.GetFirstNodeByName(f"{name} (sequence)")
    labels = stored_labels(folder, key, "seg_sax_cine")
    assert sequence.GetNumberOfDataNodes() == labels.shape[1]
    for frame in range(labels.shape[1]):
        assert np.array_equal(labels_in_reference_geometry(sequence.GetNthDataNode(frame)), labels[:, frame])
    assert edited_frames(sequence) == []  # the fingerprints survive the bundle
