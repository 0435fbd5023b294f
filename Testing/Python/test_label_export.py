"""Corrected segmentations exported as training labels: read back by the Training loader,
label order of the task, de-identified."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from CMRFoundationLib.label_folder import read_label_folder  # noqa: E402
from CMRFoundationLib.scene import close_scene, export_training_labels, load_analysis, new_scene, pseudonym  # noqa: E402
from CMRFoundationLib.scene.mrml import ijk_to_ras_of  # noqa: E402
from CMRFoundationLib.scene.segmentations import labels_in_reference_geometry, oriented_labelmap  # noqa: E402
from cmrtrain.data.label_folders import label_folder_samples  # noqa: E402


@pytest.fixture(scope="module")
def result(sample_analysis, sample_outputs):
    return sample_analysis[0], sample_outputs


@pytest.fixture()
def scene_and_load(result):
    analysis, folder = result
    scene = new_scene()
    yield scene, load_analysis(scene, folder, {r.key: r.stack for r in analysis.series})
    close_scene(scene)


def key_of(analysis, part):
    return analysis.parts[part].series


def paint(node, segment_id, slice_index):
    """A correction: a block of one slice set to the segment (what a Segment Editor stroke does)."""
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        node.GetSegmentation().GetConversionParameter("Reference image geometry"), geometry)
    i, j, k = geometry.GetDimensions()
    mask = np.zeros((k, j, i), np.uint8)
    mask[slice_index, : j // 4, : i // 4] = 1
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        oriented_labelmap(mask, ijk_to_ras_of(geometry)), node, segment_id,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)


def test_corrected_lge_segmentation_reads_back_with_the_training_loader(result, scene_and_load, tmp_path):
    analysis, _ = result
    scene, load = scene_and_load
    key = key_of(analysis, "lge_extent")
    node = load.series[key].segmentations["seg_lge"]
    paint(node, "lv_myocardium", 6)
    # The task has no "enhanced myocardium": it is myocardium in seg_lge's labels.
    expected = labels_in_reference_geometry(node, ["lv_blood_pool", "lv_myocardium", "enhanced_myocardium"], [1, 2, 2])
    (case_id,) = export_training_labels(scene, node, tmp_path / "seg_lge")

    folder = read_label_folder(tmp_path / "seg_lge")
    assert folder.task == "seg_lge" and folder.labels == ("background", "lv_blood_pool", "lv_myocardium")
    (case,) = folder.cases
    assert case.id == case_id and case.source == "slicer-correction"
    assert case.extra["segments"]["Enhanced myocardium (LGE)"] == "lv_myocardium"
    stack, label = folder.load_case(case)
    assert np.array_equal(label, expected)
    assert np.array_equal(stack.pixels[:, 0], analysis.stack(key).pixels[:, 0])
    assert np.allclose(stack.ijk_to_lps, analysis.stack(key).ijk_to_lps, atol=1e-4)

    samples = label_folder_samples("seg_lge", tmp_path / "seg_lge")
    labelled = [k for k in range(len(expected)) if expected[k].any()]
    assert len(samples) == len(labelled)
    for sample, k in zip(samples, labelled):
        assert np.array_equal(sample.target, expected[k])
        assert np.array_equal(sample.image[0], analysis.stack(key).pixels[k, 0])


def test_a_cine_exports_its_edited_frames_only(result, scene_and_load, tmp_path):
    analysis, _ = result
    scene, load = scene_and_load
    key = key_of(analysis, "function")
    proxy = load.series[key].segmentations["seg_sax_cine"]
    with pytest.raises(ValueError, match="no frame was edited"):
        export_training_labels(scene, proxy, tmp_path / "sax")
    load.series[key].images.browser.SetSelectedItemNumber(3)
    paint(proxy, "rv_blood_pool", 7)
    expected = labels_in_reference_geometry(proxy)
    (case_id,) = export_training_labels(scene, proxy, tmp_path / "sax")
    (case,) = read_label_folder(tmp_path / "sax").cases
    assert case.extra["stack_frame"] == 3  # dataset.json counts from 0, as analysis.json
    assert case_id.endswith("-f04")  # the name a person reads counts from 1, as the report and the SEG files
    stack, label = read_label_folder(tmp_path / "sax").load_case(case)
    assert np.array_equal(label, expected)
    assert np.array_equal(stack.pixels[:, 0], analysis.stack(key).pixels[:, 3])


def test_export_is_de_identified(result, scene_and_load, tmp_path):
    analysis, _ = result
    scene, load = scene_and_load
    info = analysis.stack(key_of(analysis, "lge_extent")).info
    node = load.series[key_of(analysis, "lge_extent")].segmentations["seg_lge"]
    export_training_labels(scene, node, tmp_path / "out", frames=[0])
    secrets = [s for s in (info.patient_name, info.patient_id, info.patient_birth_date, info.study_date,
                           info.study_uid, info.series_uid) if s]
    assert len(secrets) >= 5  # the sample study has them all: the test means something
    secrets += [info.patient_name.replace("^", " "), f"{info.study_date[:4]}-{info.study_date[4:6]}-{info.study_date[6:]}"]
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) == 3
    for path in files:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        header = data[:352]  # NIfTI-1 header incl. description, aux file and intent name
        for secret in secrets:
            assert secret.encode() not in data, (path.name, secret)
            assert secret.encode() not in header
    (case,) = json.loads((tmp_path / "out" / "dataset.json").read_text())["cases"]
    assert case["study_uid"] == pseudonym(info.study_uid) != info.study_uid
    assert case["series_uid"] == pseudonym(info.series_uid)


def test_a_segment_the_task_does_not_have_is_refused(result, scene_and_load, tmp_path):
    analysis, _ = result
    scene, load = scene_and_load
    node = load.series[key_of(analysis, "t1_map")].segmentations["seg_mapping"]
    node.GetSegmentation().AddEmptySegment("aorta", "Aorta")
    with pytest.raises(ValueError, match="'Aorta' is not a structure of task seg_mapping"):
        export_training_labels(scene, node, tmp_path / "maps", frames=[0])
    assert not (tmp_path / "maps").exists()
