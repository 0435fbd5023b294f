"""DICOM SEG and SR results of the sample study: real files written, read back with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import LegacyConvertedEnhancedMRImageStorage

from CMRFoundationLib.dicom import (
    Measurement,
    read_dicom_seg,
    read_measurement_sr,
    write_dicom_seg,
    write_dicom_seg_cine,
    write_measurement_sr,
)
from CMRFoundationLib.synthetic.study import load_label_map
from CMRFoundationLib.tasks import TASKS
from CMRFoundationLib.terminology import PRIVATE_SCHEME, coded_concepts

SAX_NAMES = TASKS["seg_sax_cine"].labels  # background, lv_blood_pool, lv_myocardium, rv_blood_pool
# Phantom label -> seg_sax_cine label: infarct (8) and MVO (9) are LV myocardium.
PHANTOM_TO_SAX = np.array([0, 1, 2, 3, 0, 0, 0, 0, 2, 2], np.uint8)


def series_truth(truth, **where) -> dict:
    return next(s for s in truth["series"] if all(s[key] == value for key, value in where.items()))


def stack_and_labels(sample_study, sample_truth, sample_stacks, **where):
    """The stack of a series and its truth labels in seg_sax_cine order."""
    series = series_truth(sample_truth, **where)
    stack = next(s for s in sample_stacks[0] if s.info.series_uid == series["series_uid"])
    labels, _ = load_label_map(sample_study, series["stacks"][0]["label_file"])
    return stack, PHANTOM_TO_SAX[labels]


@pytest.fixture(scope="module")
def sax(sample_study, sample_truth, sample_stacks):
    return stack_and_labels(sample_study, sample_truth, sample_stacks, view="sax", image_type="cine")


@pytest.fixture(scope="module")
def sax_cine_seg(sax, tmp_path_factory):
    stack, labels = sax
    return write_dicom_seg_cine(stack, labels, SAX_NAMES, tmp_path_factory.mktemp("seg") / "sax")


def headers_by_uid(stack) -> dict:
    return {
        uid: pydicom.dcmread(path, stop_before_pixels=True)
        for row_uids, row in zip(stack.sop_instance_uids, stack.sources, strict=True)
        for uid, (path, _) in zip(row_uids, row, strict=True)
    }


# --- SEG ------------------------------------------------------------------------------------


def test_cine_seg_round_trips_exactly(sax, sax_cine_seg):
    stack, labels = sax
    assert len(sax_cine_seg) == stack.n_frames  # every frame of the truth has labels
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    back = read_dicom_seg(sax_cine_seg[0].parent, stack, SAX_NAMES)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)

    # One file holds one cardiac frame; the others stay empty.
    one = read_dicom_seg(sax_cine_seg[2], stack, SAX_NAMES)
    np.testing.assert_array_equal(one[:, 2], labels[:, 2])
    assert not one[:, [0, 1, 3, 4, 5]].any()


def test_reader_skips_seg_files_saved_inside_a_study(sax, sax_cine_seg, tmp_path):
    """A SEG saved next to its images (as PACS exports do) is named as info, not read as a stack."""
    import shutil

    from CMRFoundationLib.dicom import index_study

    stack, _ = sax
    folder = tmp_path / "study"
    folder.mkdir()
    for row in stack.sources[:2]:
        for path, _ in row:
            shutil.copy(path, folder)
    shutil.copy(sax_cine_seg[0], folder / "seg.dcm")
    index = index_study(folder)
    assert len(index.stacks) == 1 and index.stacks[0].info.series_uid == stack.info.series_uid
    seg_problems = [p for p in index.problems if p.path.endswith("seg.dcm")]
    assert len(seg_problems) == 1 and seg_problems[0].severity == "info" and "Segmentation" in seg_problems[0].reason


def test_seg_references_its_source_images_and_study(sax, sax_cine_seg):
    stack, labels = sax
    frame = 2
    seg = pydicom.dcmread(sax_cine_seg[frame])
    source = pydicom.dcmread(stack.sources[0][frame][0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == stack.info.study_uid == source.StudyInstanceUID
    assert (seg.PatientID, seg.PatientName) == (source.PatientID, source.PatientName)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != stack.info.series_uid

    frame_uids = {row[frame] for row in stack.sop_instance_uids}
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == stack.info.series_uid
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == frame_uids

    # Each SEG frame points at the image of its own slice in this cardiac frame.
    referenced = {
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    labelled_slices = {k for k in range(stack.n_slices) if labels[k, frame].any()}
    assert referenced == {stack.sop_instance_uids[k][frame] for k in labelled_slices}
    # All SEG series instances share one series.
    assert len({pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in sax_cine_seg}) == 1


def test_seg_segments_are_coded_and_placed_like_the_source_images(sax, sax_cine_seg):
    stack, _ = sax
    seg = pydicom.dcmread(sax_cine_seg[0])
    assert seg.SegmentationType == "BINARY"
    for segment, name in zip(seg.SegmentSequence, SAX_NAMES[1:], strict=True):
        codes = coded_concepts(name)
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        type_ = segment.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == (codes.category.scheme_designator, codes.category.value)
        assert (type_.CodingSchemeDesignator, type_.CodeValue, type_.CodeMeaning) == (
            codes.type.scheme_designator,
            codes.type.value,
            codes.type.meaning,
        )
        assert segment.TrackingID == name
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "CMRFoundation"

    headers = headers_by_uid(stack)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = headers[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose([float(v) for v in orientation], [float(v) for v in source.ImageOrientationPatient], atol=1e-9)
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in position], [float(v) for v in source.ImagePositionPatient], atol=1e-9)


def test_absent_label_gives_no_segment(sax, tmp_path):
    stack, labels = sax
    without_lv_blood = np.where(labels == 1, 0, labels)
    path = write_dicom_seg(stack, without_lv_blood, SAX_NAMES, tmp_path / "no_lv_blood.dcm", frame=0)
    seg = pydicom.dcmread(path)
    assert [(s.SegmentNumber, s.TrackingID) for s in seg.SegmentSequence] == [(1, "lv_myocardium"), (2, "rv_blood_pool")]
    # Segment numbers shifted, yet every segment comes back as its own label.
    back = read_dicom_seg(path, stack, SAX_NAMES)
    np.testing.assert_array_equal(back[:, 0], without_lv_blood[:, 0])


def test_wrong_shape_or_missing_frame_is_refused(sax, tmp_path):
    stack, labels = sax
    with pytest.raises(ValueError, match=r"does not fit series 6 'cine_retro_sax'"):
        write_dicom_seg(stack, labels[:, :, :-1], SAX_NAMES, tmp_path / "bad.dcm", frame=0)
    with pytest.raises(ValueError, match="6 cardiac frames: pass frame="):
        write_dicom_seg(stack, labels, SAX_NAMES, tmp_path / "bad.dcm")
    assert not (tmp_path / "bad.dcm").exists()


def test_bad_seg_input_is_refused_naming_the_file(sax, sax_cine_seg, tmp_path):
    stack, labels = sax
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    with pytest.raises(ValueError, match=r"notes\.txt is not a readable DICOM file"):
        read_dicom_seg(text, stack, SAX_NAMES)
    image = stack.sources[0][0][0]
    with pytest.raises(ValueError, match=rf"{image} is not a DICOM Segmentation"):
        read_dicom_seg(image, stack, SAX_NAMES)
    with pytest.raises(ValueError, match=r"no DICOM Segmentation in"):
        read_dicom_seg(Path(image).parent, stack, SAX_NAMES)  # a folder of images only
    stranger = pydicom.dcmread(sax_cine_seg[0])
    reference = stranger.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    reference.ReferencedSOPInstanceUID = "1.2.3.4"
    stranger.save_as(tmp_path / "stranger.dcm")
    with pytest.raises(ValueError, match=r"stranger\.dcm: SEG frame segments image 1\.2\.3\.4 \(frame None\), which is not in series 6"):
        read_dicom_seg(tmp_path / "stranger.dcm", stack, SAX_NAMES)
    del stranger.SegmentSequence  # a SEG without its segments: highdicom's error, naming the file
    stranger.save_as(tmp_path / "no_segments.dcm")
    with pytest.raises(ValueError, match=r"no_segments\.dcm: not a readable DICOM Segmentation"):
        read_dicom_seg(tmp_path / "no_segments.dcm", stack, SAX_NAMES)
    # In a folder, files that are not SEG (notes, images) are passed over.
    folder = tmp_path / "with_notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "seg.dcm").write_bytes(sax_cine_seg[1].read_bytes())
    np.testing.assert_array_equal(read_dicom_seg(folder, stack, SAX_NAMES)[:, 1], labels[:, 1])
    with pytest.raises(ValueError, match=r"seg\.dcm: segment 1 .* is none of the labels"):
        read_dicom_seg(folder, stack, ["background", "la_blood_pool"])


def test_enhanced_multiframe_source(sample_study, sample_truth, sample_stacks, tmp_path):
    stack, labels = stack_and_labels(sample_study, sample_truth, sample_stacks, enhanced_multiframe=True)
    assert stack.n_frames > 1 and len({path for row in stack.sources for path, _ in row}) == 1
    paths = write_dicom_seg_cine(stack, labels, SAX_NAMES, tmp_path)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path, stack, SAX_NAMES), labels)

    frame = 3
    seg = pydicom.dcmread(paths[frame])
    for item in seg.PerFrameFunctionalGroupsSequence:
        reference = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedSOPClassUID == LegacyConvertedEnhancedMRImageStorage
        assert reference.ReferencedSOPInstanceUID == stack.sop_instance_uids[0][frame]
        assert int(reference.ReferencedFrameNumber) == stack.sources[0][frame][1] + 1


# --- SR -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(sample_truth, sample_stacks, sax, tmp_path_factory):
    stacks = sample_stacks[0]
    sax_stack, _ = sax
    lge = next(s for s in stacks if s.info.series_uid == series_truth(sample_truth, image_type="lge")["series_uid"])
    sax_uid, lge_uid = sax_stack.info.series_uid, lge.info.series_uid
    measurements = [
        Measurement("lv_edv", 152.5, "ml", source_series_uid=sax_uid, method="summation of discs"),
        Measurement("lv_esv", 61.25, "ml", source_series_uid=sax_uid),
        Measurement("lv_sv", 91.25, "ml", source_series_uid=sax_uid),
        Measurement("lv_ef", 59.84, "%", source_series_uid=sax_uid),
        Measurement("lv_mass", 120.3, "g", source_series_uid=sax_uid),
        Measurement("lv_edv_index", 80.1, "ml/m2", source_series_uid=sax_uid),
        Measurement("rv_sv", 88.0, "ml", source_series_uid=sax_uid),
        Measurement("wall_thickness", 9.5, "mm", segment="AHA 7 mid anterior", source_series_uid=sax_uid),
        Measurement("wall_thickness", 6.25, "mm", segment=14, source_series_uid=sax_uid),
        Measurement("lge_extent", 12.5, "%", finding_site="infarct", source_series_uid=lge_uid),
        Measurement("bsa", 1.91, "m2"),
    ]
    path = write_measurement_sr(measurements, [sax_stack, lge], tmp_path_factory.mktemp("sr") / "report.dcm")
    return measurements, path, sax_stack, lge


def test_sr_round_trips_values_units_sites_and_segments(report):
    measurements, path, _, _ = report
    back = {(m["name"], m["segment"]): m for m in read_measurement_sr(path)}
    assert len(back) == len(measurements)
    expected_sites = {"lv_mass": "lv_myocardium", "wall_thickness": "lv_myocardium", "rv_sv": "rv_blood_pool",
                      "lge_extent": "enhanced_myocardium", "bsa": None}
    for m in measurements:
        segment = {"AHA 7 mid anterior": "AHA 7 mid anterior", 14: "AHA 14 apical septal", None: None}[m.segment]
        got = back[(m.name, segment)]
        assert got["value"] == pytest.approx(m.value, rel=1e-12)
        assert got["unit"] == m.unit
        assert got["finding_site"] == expected_sites.get(m.name, "lv_blood_pool")
        assert got["method"] == m.method


def test_sr_files_under_the_study_and_references_the_source_images(report):
    _, path, sax_stack, lge = report
    sr = pydicom.dcmread(path)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == sax_stack.info.study_uid
    assert sr.PatientID == pydicom.dcmread(sax_stack.sources[0][0][0], stop_before_pixels=True).PatientID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"

    (study,) = sr.CurrentRequestedProcedureEvidenceSequence
    evidence = {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence} for s in study.ReferencedSeriesSequence}
    for stack in (sax_stack, lge):
        assert evidence[stack.info.series_uid] == {uid for row in stack.sop_instance_uids for uid in row}

    # The LV blood pool group lists the short-axis images as its source.
    groups = [item for item in content_items(sr) if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007"]
    lv_group = next(g for g in groups if any(finding_site_value(i) == "87878005" for i in g.ContentSequence))
    images = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in lv_group.ContentSequence if i.ValueType == "IMAGE"}
    assert images == {uid for row in sax_stack.sop_instance_uids for uid in row}


def test_sr_codes_ef_with_the_standard_code(report):
    _, path, _, _ = report
    sr = pydicom.dcmread(path)
    numbers = [item for item in content_items(sr) if item.ValueType == "NUM"]
    (ef,) = [n for n in numbers if n.ConceptNameCodeSequence[0].CodeValue == "8811-2"]
    assert ef.ConceptNameCodeSequence[0].CodingSchemeDesignator == "LN"  # LOINC, DICOM CID 3833
    unit = ef.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue) == ("UCUM", "%")
    assert float(ef.MeasuredValueSequence[0].NumericValue) == pytest.approx(59.84)
    # The indexed volume has no standard code: it uses our declared private scheme.
    assert any(n.ConceptNameCodeSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME for n in numbers)
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME


def test_sr_refuses_uncoded_names_wrong_units_and_unknown_series(sax, tmp_path):
    stack, _ = sax
    with pytest.raises(ValueError, match="no code for measurement 'lv_wobble'"):
        write_measurement_sr([Measurement("lv_wobble", 1.0, "mm")], [stack], tmp_path / "a.dcm")
    with pytest.raises(ValueError, match="'lv_ef' is given in '%', not '1'"):
        write_measurement_sr([Measurement("lv_ef", 0.6, "1")], [stack], tmp_path / "c.dcm")
    with pytest.raises(ValueError, match="1.2.3 not among the source stacks"):
        write_measurement_sr([Measurement("lv_edv", 1.0, "ml", source_series_uid="1.2.3")], [stack], tmp_path / "b.dcm")


def content_items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def finding_site_value(item) -> str | None:
    if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "363698007":
        return item.ConceptCodeSequence[0].CodeValue
    return None
