"""The DICOM study reader and writer, on real files written to tmp_path."""

from __future__ import annotations

import json
import os

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from CMRFoundationLib.dicom import StackLoadError, index_study, load_stack, read_study, summarize, write_mr_series
from CMRFoundationLib.stack import NOMINAL_LV_AXIS_LPS, SeriesInfo, geometry_matrix


def oblique_geometry(normal, origin=(-40.0, 25.0, 60.0), spacing=(1.4, 1.6, 8.0)) -> np.ndarray:
    """A grid whose slices are perpendicular to ``normal`` (rows and columns in-plane)."""
    normal = np.asarray(normal, dtype=float) / np.linalg.norm(normal)
    row_dir = np.cross(normal, [0.0, 0.0, 1.0] if abs(normal[2]) < 0.9 else [1.0, 0.0, 0.0])
    row_dir /= np.linalg.norm(row_dir)
    col_dir = np.cross(normal, row_dir)
    return geometry_matrix(np.array(origin), row_dir, col_dir, np.array(spacing))


def rewrite(path: str, new_path: str | None = None, **changes) -> None:
    """Change header attributes of a written file (and optionally move it)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(new_path or path, enforce_file_format=True)
    if new_path and new_path != path:
        os.remove(path)


def marked_pixels(n_slices: int, n_frames: int, rows: int = 12, cols: int = 10) -> np.ndarray:
    """Integer images whose value encodes (slice, frame): 100 * k + t everywhere."""
    k, t = np.meshgrid(np.arange(n_slices), np.arange(n_frames), indexing="ij")
    return np.broadcast_to((100 * k + t)[:, :, None, None], (n_slices, n_frames, rows, cols)).astype(float)


def test_cine_order_survives_shuffled_names_and_instance_numbers(tmp_path):
    # The writer's k axis points against the normal, so the reader must reverse the slices.
    geometry = oblique_geometry(NOMINAL_LV_AXIS_LPS)
    geometry[:3, 2] *= -1
    pixels = marked_pixels(4, 6)
    times = np.array([0.0, 45.0, 90.0, 135.0, 180.0, 225.0])
    write_mr_series(
        tmp_path,
        pixels,
        geometry,
        SeriesInfo(series_description="cine SAX", heart_rate=60),
        frame_times=times,
        uid_seed="cine",
    )

    rng = np.random.default_rng(7)
    files = sorted(os.listdir(tmp_path))
    for path, name, number in zip(files, rng.permutation(len(files)), rng.permutation(len(files)) + 1, strict=True):
        rewrite(str(tmp_path / path), str(tmp_path / f"x{name:03d}"), InstanceNumber=int(number))

    index = index_study(tmp_path)
    assert index.problems == [] and len(index.stacks) == 1
    stack = load_stack(index.stacks[0])
    assert stack.pixels.shape == (4, 6, 12, 10)
    expected = marked_pixels(4, 6)[::-1]
    np.testing.assert_array_equal(stack.pixels, expected)
    np.testing.assert_allclose(stack.frame_times, times)
    assert np.all(np.diff(stack.slice_positions) > 0)
    np.testing.assert_allclose(np.diff(stack.slice_positions), 8.0)
    np.testing.assert_allclose(stack.normal, NOMINAL_LV_AXIS_LPS, atol=1e-6)
    assert index.stacks[0].is_cine and index.stacks[0].orientation == "SAX-like"
    assert stack.info.heart_rate == 60


def test_frames_without_trigger_times_are_ordered_by_inversion_time(tmp_path):
    geometry = oblique_geometry(NOMINAL_LV_AXIS_LPS)
    info = SeriesInfo(
        series_uid=pydicom.uid.generate_uid(),
        study_uid=pydicom.uid.generate_uid(),
        frame_of_reference_uid=pydicom.uid.generate_uid(),
    )
    inversion_times = [350.0, 100.0, 1100.0, 180.0]
    for t, ti in enumerate(inversion_times):
        info.inversion_time = ti
        write_mr_series(tmp_path, np.full((2, 1, 8, 8), ti), geometry, info, uid_seed=f"ti{t}", file_prefix=f"TI{t}_")
    index = index_study(tmp_path)
    assert index.stacks[0].shape == (2, 4, 8, 8)
    stack = load_stack(index.stacks[0])
    np.testing.assert_array_equal(stack.pixels[0, :, 0, 0], sorted(inversion_times))
    assert stack.info.extra["inversion_times"] == sorted(inversion_times)
    assert stack.frame_times is None


def test_mixed_orientations_sizes_types_and_offsets_split_into_stacks(tmp_path):
    """One SeriesInstanceUID holding five different stacks, as localizers and flow series do."""
    info = SeriesInfo(
        series_uid=pydicom.uid.generate_uid(),
        study_uid=pydicom.uid.generate_uid(),
        frame_of_reference_uid=pydicom.uid.generate_uid(),
        series_description="mixed",
    )
    axial = geometry_matrix(np.zeros(3), [1, 0, 0], [0, 1, 0], np.array([1.5, 1.5, 6.0]))
    sagittal = geometry_matrix(np.zeros(3), [0, 1, 0], [0, 0, -1], np.array([1.5, 1.5, 6.0]))
    shifted = axial.copy()
    shifted[:3, 3] = [30.0, 0.0, 0.0]  # same planes, 20 pixels to the side: not the same grid
    parts = [
        (axial, (3, 1, 16, 16), ("ORIGINAL", "PRIMARY", "M", "ND")),
        (sagittal, (1, 1, 16, 16), ("ORIGINAL", "PRIMARY", "M", "ND")),
        (axial, (2, 1, 12, 20), ("ORIGINAL", "PRIMARY", "M", "ND")),
        (axial, (3, 1, 16, 16), ("ORIGINAL", "PRIMARY", "P", "ND")),
        (shifted, (3, 1, 16, 16), ("ORIGINAL", "PRIMARY", "M", "ND")),
    ]
    for n, (geometry, shape, image_type) in enumerate(parts):
        info.image_type = image_type
        write_mr_series(tmp_path, np.full(shape, n), geometry, info, uid_seed=f"part{n}", file_prefix=f"P{n}_")

    index = index_study(tmp_path)
    assert index.problems == []
    found = sorted((e.shape, e.orientation, e.info.image_type[2], round(e.ijk_to_lps[0, 3])) for e in index.stacks)
    assert found == sorted(
        [
            ((3, 1, 16, 16), "axial", "M", 0),
            ((1, 1, 16, 16), "sagittal", "M", 0),
            ((2, 1, 12, 20), "axial", "M", 0),
            ((3, 1, 16, 16), "axial", "P", 0),
            ((3, 1, 16, 16), "axial", "M", 30),
        ]
    )
    for entry in index.stacks:  # every stack holds exactly the images of one part
        assert len(np.unique(load_stack(entry).pixels)) == 1


def test_enhanced_multiframe_equals_classic(tmp_path):
    geometry = oblique_geometry([0.3, -0.8, -0.5])
    pixels = np.random.default_rng(3).normal(300.0, 80.0, (3, 4, 14, 11))
    times = [10.0, 60.0, 110.0, 160.0]
    info = SeriesInfo(
        series_description="cine LAX",
        echo_time=1.3,
        repetition_time=3.1,
        flip_angle=55.0,
        heart_rate=75,
        patient_size=1.72,
        patient_weight=70.0,
    )
    write_mr_series(tmp_path / "classic", pixels, geometry, info, frame_times=times, uid_seed="same")
    write_mr_series(tmp_path / "enhanced", pixels, geometry, info, frame_times=times, uid_seed="same", enhanced=True)
    assert len(os.listdir(tmp_path / "enhanced")) == 1

    classic, enhanced = (index_study(tmp_path / name) for name in ("classic", "enhanced"))
    assert classic.problems == enhanced.problems == []
    c, e = classic.stacks[0], enhanced.stacks[0]
    assert e.shape == c.shape == (3, 4, 14, 11)
    np.testing.assert_allclose(e.ijk_to_lps, c.ijk_to_lps, atol=1e-9)
    np.testing.assert_allclose(e.slice_positions, c.slice_positions)
    np.testing.assert_allclose(e.frame_times, times)
    assert sorted(ref[1] for row in e.frame_refs for ref in row) == list(range(12))
    assert e.orientation == c.orientation
    for field in (
        "echo_time",
        "repetition_time",
        "flip_angle",
        "heart_rate",
        "patient_size",
        "patient_weight",
        "series_description",
        "study_uid",
    ):
        assert getattr(e.info, field) == getattr(c.info, field), field
    np.testing.assert_array_equal(load_stack(e).pixels, load_stack(c).pixels)


def test_scanner_style_enhanced_mr_with_shuffled_frames(tmp_path):
    """Enhanced MR as scanners write it: timing in CardiacSynchronizationSequence, frames in any order."""
    geometry = oblique_geometry(NOMINAL_LV_AXIS_LPS)
    pixels = marked_pixels(3, 5)
    times = [0.0, 40.0, 80.0, 120.0, 160.0]
    write_mr_series(tmp_path, pixels, geometry, SeriesInfo(), frame_times=times, uid_seed="scanner", enhanced=True)
    path = tmp_path / "IM00001.dcm"
    ds = pydicom.dcmread(path)
    order = np.random.default_rng(5).permutation(15)
    groups = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    for group in groups:
        trigger = group.UnassignedPerFrameConvertedAttributesSequence[0].TriggerTime
        del group.UnassignedPerFrameConvertedAttributesSequence  # no InstanceNumber to fall back on
        sync = pydicom.Dataset()
        sync.NominalCardiacTriggerDelayTime = trigger
        group.CardiacSynchronizationSequence = [sync]
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = ds.pixel_array[order].tobytes()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.EnhancedMRImageStorage
    ds.save_as(path, enforce_file_format=True)

    entry = index_study(tmp_path).stacks[0]
    assert entry.shape == (3, 5, 12, 10)
    np.testing.assert_allclose(entry.frame_times, times)
    np.testing.assert_array_equal(load_stack(entry).pixels, pixels)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    geometry = oblique_geometry([0, 0, 1])
    phase = np.random.default_rng(1).uniform(-np.pi, np.pi, (2, 1, 9, 9))  # non-integer, negative
    t1_map = np.random.default_rng(2).integers(-50, 2500, (2, 1, 9, 9)).astype(float)  # integer ms
    write_mr_series(tmp_path / "phase", phase, geometry, SeriesInfo(), uid_seed="phase")
    write_mr_series(tmp_path / "t1", t1_map, geometry, SeriesInfo(), uid_seed="t1")

    ds = pydicom.dcmread(tmp_path / "phase" / sorted(os.listdir(tmp_path / "phase"))[0])
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert slope < 1e-3 and intercept < 0
    loaded = load_stack(index_study(tmp_path / "phase").stacks[0]).pixels
    np.testing.assert_allclose(loaded[0, 0], ds.pixel_array * slope + intercept, rtol=1e-6)
    assert np.abs(loaded - phase).max() <= slope / 2 + 1e-6

    ds = pydicom.dcmread(tmp_path / "t1" / sorted(os.listdir(tmp_path / "t1"))[0])
    assert float(ds.RescaleSlope) == 1.0
    np.testing.assert_array_equal(load_stack(index_study(tmp_path / "t1").stacks[0]).pixels, t1_map)


def test_known_lps_point_maps_to_the_marked_voxel(tmp_path):
    geometry = oblique_geometry([0.5, 0.4, -0.77], spacing=(1.25, 1.75, 7.0))
    pixels = np.zeros((5, 2, 20, 24))
    k, t, j, i = 3, 1, 13, 17
    pixels[k, t, j, i] = 999.0
    write_mr_series(tmp_path, pixels, geometry, SeriesInfo(), frame_times=[0.0, 50.0], uid_seed="mark")

    # The voxel's LPS position by the DICOM standard's formula, from the marked file's own tags.
    marked = next(p for p in tmp_path.iterdir() if pydicom.dcmread(p).pixel_array.max() > 0)
    ds = pydicom.dcmread(marked)
    row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3]), np.array(ds.ImageOrientationPatient[3:])
    lps = (
        np.array(ds.ImagePositionPatient)
        + i * float(ds.PixelSpacing[1]) * row_dir
        + j * float(ds.PixelSpacing[0]) * col_dir
    )

    stack = load_stack(index_study(tmp_path).stacks[0])
    ijk = stack.lps_to_ijk_points(lps)[0]
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-6)
    ci, cj, ck = np.round(ijk).astype(int)
    assert (ci, cj) == (i, j)
    assert stack.pixels[ck, t, cj, ci] == 999.0
    assert np.count_nonzero(stack.pixels) == 1


def test_writer_round_trips_tags_and_uids(tmp_path):
    info = SeriesInfo(
        series_number=7,
        series_description="SAX cine",
        protocol_name="cine_retro",
        sequence_name="*tfi2d1_12",
        image_type=("ORIGINAL", "PRIMARY", "M", "RETRO"),
        scanning_sequence=("GR",),
        sequence_variant=("SS", "SP"),
        echo_time=1.21,
        repetition_time=2.9,
        flip_angle=52.0,
        slice_thickness=6.0,
        heart_rate=64,
        study_date="20240131",
        study_time="101500",
        study_description="CMR",
        patient_id="CMR-001",
        patient_name="Doe^Jane",
        patient_birth_date="19700101",
        patient_sex="F",
        patient_age="054Y",
        patient_size=1.65,
        patient_weight=61.5,
        manufacturer="ACME",
        field_strength=1.5,
    )
    geometry = oblique_geometry(NOMINAL_LV_AXIS_LPS)
    times = [0.0, 31.25, 62.5]
    uids = write_mr_series(
        tmp_path / "a", np.ones((2, 3, 8, 8)), geometry, info, frame_times=times, uid_seed="seed", window=(300, 800)
    )
    again = write_mr_series(tmp_path / "b", np.ones((2, 3, 8, 8)), geometry, info, frame_times=times, uid_seed="seed")
    other = write_mr_series(tmp_path / "c", np.ones((2, 3, 8, 8)), geometry, info, frame_times=times, uid_seed="other")
    assert uids == again and uids[0][0] != other[0][0]
    assert len({uid for row in uids for uid in row}) == 6
    many = write_mr_series(tmp_path / "d", np.ones((12, 11, 2, 2)), geometry, info, uid_seed="seed")
    assert len({uid for row in many for uid in row}) == 132  # (k=1, t=10) and (k=11, t=0) must differ

    ds = pydicom.dcmread(tmp_path / "a" / "IM00002.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.SOPInstanceUID == uids[0][1]
    assert (ds.InstanceNumber, float(ds.TriggerTime), ds.CardiacNumberOfImages) == (2, 31.25, 3)
    assert (ds.HeartRate, ds.NominalInterval) == (64, 938)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (300.0, 800.0)
    assert (float(ds.SliceThickness), float(ds.SpacingBetweenSlices)) == (6.0, 8.0)
    assert list(ds.ImageType) == list(info.image_type) and list(ds.SequenceVariant) == ["SS", "SP"]
    assert (ds.PatientName, ds.PatientSex, float(ds.PatientWeight)) == ("Doe^Jane", "F", 61.5)

    entry = index_study(tmp_path / "a").stacks[0]
    read = entry.info
    for field in (
        "series_number",
        "series_description",
        "protocol_name",
        "sequence_name",
        "image_type",
        "scanning_sequence",
        "sequence_variant",
        "echo_time",
        "repetition_time",
        "flip_angle",
        "slice_thickness",
        "heart_rate",
        "study_date",
        "study_time",
        "study_description",
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "patient_sex",
        "patient_age",
        "patient_size",
        "patient_weight",
        "manufacturer",
        "field_strength",
    ):
        assert getattr(read, field) == getattr(info, field), field
    assert read.modality == "MR" and read.study_uid and read.frame_of_reference_uid
    assert entry.sop_instance_uids == uids
    np.testing.assert_allclose(entry.ijk_to_lps, geometry, atol=1e-9)


def test_indexing_reads_headers_only(tmp_path):
    """Corrupt pixel bytes don't disturb indexing; loading then names the file."""
    write_mr_series(tmp_path, np.ones((3, 1, 16, 16)), oblique_geometry([0, 0, 1]), SeriesInfo(), uid_seed="corrupt")
    broken = str(tmp_path / "IM00002.dcm")
    ds = pydicom.dcmread(broken)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8 these are not JPEG bytes \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(broken, enforce_file_format=True)

    index = index_study(tmp_path)
    assert index.problems == [] and index.stacks[0].shape == (3, 1, 16, 16)
    with pytest.raises(StackLoadError) as error:
        load_stack(index.stacks[0])
    assert error.value.problem.path == broken and "cannot decode pixel data" in error.value.problem.reason
    stacks, problems = read_study(tmp_path)
    assert stacks == [] and [p.path for p in problems] == [broken]


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="byte counting needs Linux /proc")
def test_indexing_reads_a_fraction_of_the_bytes(tmp_path):
    write_mr_series(tmp_path, np.ones((4, 2, 256, 256)), oblique_geometry([0, 0, 1]), SeriesInfo(), uid_seed="bytes")
    total = sum(p.stat().st_size for p in tmp_path.iterdir())

    def bytes_read() -> int:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("rchar"))

    before = bytes_read()
    index_study(tmp_path)
    assert bytes_read() - before < total / 10  # ~4 KB of 128 KB per file


def test_study_orientation_refinement_uses_the_short_axis_stack(tmp_path):
    # A study whose long axis is 35 degrees from the population average, and a plane 38
    # degrees from the average on the other side: SAX-like by population, LAX-like here.
    a = NOMINAL_LV_AXIS_LPS
    u = np.cross(a, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    long_axis = np.cos(np.radians(35)) * a + np.sin(np.radians(35)) * u
    plane = np.cos(np.radians(38)) * a - np.sin(np.radians(38)) * u
    info = SeriesInfo(study_uid=pydicom.uid.generate_uid(), frame_of_reference_uid=pydicom.uid.generate_uid())
    info.series_number = 1
    write_mr_series(tmp_path / "sax", np.ones((6, 1, 8, 8)), oblique_geometry(long_axis), info, uid_seed="sax")
    info.series_number = 2
    write_mr_series(tmp_path / "lax", np.ones((1, 1, 8, 8)), oblique_geometry(plane), info, uid_seed="lax")

    assert [e.orientation for e in index_study(tmp_path / "lax").stacks] == ["SAX-like"]
    assert [e.orientation for e in index_study(tmp_path).stacks] == ["SAX-like", "LAX-like"]


def test_irregular_slice_spacing_is_a_warning(tmp_path):
    write_mr_series(tmp_path, marked_pixels(5, 1), oblique_geometry([0, 0, 1]), SeriesInfo(), uid_seed="gap")
    os.remove(tmp_path / "IM00004.dcm")
    index = index_study(tmp_path)
    entry = index.stacks[0]
    assert index.problems == [] and entry.shape[0] == 4
    np.testing.assert_allclose(entry.slice_positions - entry.slice_positions[0], [0, 8, 16, 32])
    assert entry.spacing[2] == pytest.approx(8.0)
    assert any("irregular slice spacing" in w for w in entry.warnings)
    assert load_stack(entry).warnings == entry.warnings


def test_summary_and_json(tmp_path):
    info = SeriesInfo(series_number=5, series_description="cine 4ch")
    write_mr_series(
        tmp_path,
        np.ones((1, 3, 8, 8)),
        oblique_geometry([0.6, -0.2, 0.77]),
        info,
        frame_times=[0, 40, 80],
        uid_seed="sum",
    )
    (tmp_path / "notes.txt").write_text("not an image")
    index = index_study(tmp_path)
    text = summarize(index)
    assert "Series 5: cine 4ch" in text and "1 x 3 x 8 x 8" in text and "cine 0-80 ms" in text
    assert "notes.txt: not a DICOM file" in text
    decoded = json.loads(json.dumps(index.to_dict()))
    assert decoded["stacks"][0]["shape"] == [1, 3, 8, 8] and decoded["n_files"] == 4 and decoded["n_dicom_files"] == 3
