"""What scanners and archives really write, read or refused with a Problem naming the file.

Every case is a real file written to tmp_path (or the shared real-DICOM sample, when
present) and read back by the reader: NIfTI headers with slightly sheared axes, 4D NIfTI
cines with an ACDC Info.cfg, vendor header variants, compressed pixel data, non-image
files beside the images, and the fuzzer's finds (deep folders, huge headers, sparse files).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import time

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from CMRFoundationLib.dicom import index_study, load_stack, read_study, write_mr_series
from CMRFoundationLib.dicom.index import MAX_FOLDER_DEPTH
from CMRFoundationLib.stack import MAX_VOXELS, ImageStack, SeriesInfo, geometry_matrix
from CMRFoundationLib.volume_io import read_any, read_volume, write_volume
from conftest import SHARED_DATA
from test_broken_inputs import dicomdir, save_with_meta, structured_report

AXIAL = geometry_matrix(np.array([-20.0, 10.0, 5.0]), [1, 0, 0], [0, 1, 0], np.array([1.5, 1.5, 8.0]))
HEART_SAMPLE = SHARED_DATA / "dicom_samples" / "MR-MONO2-8-16x-heart.dcm"
# Sparse files, folder descriptors and peak-memory accounting as used here are POSIX.
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX sparse files, dir_fd and getrusage")


def marked(n_slices: int, n_frames: int, rows: int = 8, cols: int = 8) -> np.ndarray:
    """Integer images whose value encodes (slice, frame): 100 * k + 10 * t + a ramp across the row."""
    k, t = np.meshgrid(np.arange(n_slices), np.arange(n_frames), indexing="ij")
    return (100 * k + 10 * t)[:, :, None, None] + np.arange(cols)[None, None, None, :] * np.ones((rows, 1))


def only(problems, path) -> list:
    return [p for p in problems if p.path == str(path)]


# --- NIfTI ------------------------------------------------------------------------------


def patch_nifti(path, **fields) -> None:
    """Overwrite NIfTI-1 header fields in place (in the gzip stream for .nii.gz)."""
    compressed = str(path).endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    layout = {"dims": ("<8h", 40), "qform_code": ("<h", 252), "sform_code": ("<h", 254), "srow": ("<12f", 280)}
    for name, value in fields.items():
        fmt, offset = layout[name]
        struct.pack_into(fmt, data, offset, *np.ravel(value))
    path.write_bytes(gzip.compress(bytes(data)) if compressed else bytes(data))


def sheared_nifti(tmp_path, suffix: str, shear: float):
    """A 24 x 20 x 6 oblique volume whose sform has its column axis tilted by ``shear`` (radians), no qform."""
    rotation = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))[0]
    geometry = geometry_matrix(np.array([10.0, -30.0, 50.0]), rotation[:, 0], rotation[:, 1], np.array([1.4, 1.4, 8.0]))
    pixels = np.random.default_rng(5).normal(size=(6, 1, 20, 24)).astype(np.float32)
    path = tmp_path / f"sheared{suffix}"
    write_volume(ImageStack(pixels, geometry), None, path)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ geometry
    ras[:3, 1] += shear * 1.4 * ras[:3, 0] / np.linalg.norm(ras[:3, 0])  # j axis leans towards i
    patch_nifti(path, qform_code=0, sform_code=1, srow=ras[:3])
    return path, geometry, pixels


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_with_slightly_sheared_axes_is_made_orthonormal_with_a_note(tmp_path, suffix):
    path, geometry, pixels = sheared_nifti(tmp_path, suffix, shear=0.002)  # 0.11 degrees, as rounding leaves
    stack = read_volume(path)
    np.testing.assert_array_equal(stack.pixels, pixels)
    np.testing.assert_allclose(stack.direction.T @ stack.direction, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(stack.ijk_to_lps, geometry, atol=0.01)  # within 0.01 mm per voxel step
    [note] = stack.warnings
    assert "made orthonormal" in note and "tolerance: half a voxel, 0.70 mm" in note
    stacks, problems = read_any(path)
    assert len(stacks) == 1 and problems == []


def test_cli_index_shows_the_note_of_a_corrected_nifti(tmp_path, capsys):
    from CMRFoundationLib.cli import main

    path, _, _ = sheared_nifti(tmp_path, ".nii", shear=0.002)
    assert main(["index", str(path)]) == 0
    assert (
        "warning: NIfTI sform axes up to 0.115 degrees from perpendicular were made orthonormal"
        in capsys.readouterr().out
    )


def test_nifti_with_strongly_sheared_axes_is_refused(tmp_path):
    path, _, _ = sheared_nifti(tmp_path, ".nii", shear=0.1)  # 5.7 degrees: voxels would move by millimetres
    stacks, problems = read_any(path)
    assert stacks == [] and len(problems) == 1
    assert problems[0].path == str(path)
    assert (
        "from perpendicular" in problems[0].reason and "more than half a voxel (0.70 mm): refused" in problems[0].reason
    )


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_refused_not_padded_with_zeros(tmp_path, suffix):
    pixels = np.random.default_rng(0).normal(size=(6, 1, 20, 24)).astype(np.float32)
    path = tmp_path / f"cut{suffix}"
    write_volume(ImageStack(pixels, AXIAL), None, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    stacks, problems = read_any(path)
    assert stacks == [] and [p.path for p in problems] == [str(path)]
    assert "truncated" in problems[0].reason


def write_acdc_patient(folder, n_frames: int, info_cfg: str):
    folder.mkdir(parents=True)
    pixels = marked(3, n_frames).astype(np.float32)
    write_volume(ImageStack(pixels, AXIAL), None, folder / "patient001_4d.nii.gz")
    (folder / "Info.cfg").write_text(info_cfg)
    return folder / "patient001_4d.nii.gz", pixels


def test_acdc_4d_nifti_cine_uses_info_cfg(tmp_path):
    path, pixels = write_acdc_patient(
        tmp_path / "patient001", 5, "ED: 1\nES: 4\nGroup: DCM\nHeight: 184.0\nNbFrame: 5\nWeight: 95.0\n"
    )
    stacks, problems = read_any(path)
    assert problems == [] and len(stacks) == 1
    stack = stacks[0]
    assert stack.pixels.shape == (3, 5, 8, 8)  # slices x frames: the fourth axis is the cine
    np.testing.assert_array_equal(stack.pixels, pixels)
    assert (stack.info.extra["ed_frame"], stack.info.extra["es_frame"]) == (0, 3)  # 0-based
    assert stack.info.patient_size == pytest.approx(1.84) and stack.info.patient_weight == 95.0
    assert "DCM" not in repr(stack.info)  # the diagnosis is the answer, not an input
    assert any("Info.cfg" in w and "ED frame 1, ES frame 4" in w for w in stack.warnings)


def test_acdc_info_cfg_that_does_not_fit_the_cine_is_not_used(tmp_path):
    path, _ = write_acdc_patient(tmp_path / "patient002", 5, "ED: 1\nES: 12\nNbFrame: 30\nHeight: 170\n")
    [stack], problems = read_any(path)
    assert problems == [] and "ed_frame" not in stack.info.extra
    assert stack.info.patient_size == pytest.approx(1.70)
    assert any("NbFrame 30 but the volume has 5 frames" in w for w in stack.warnings)


# --- DICOM header variants --------------------------------------------------------------


def classic_multiframe(path, template, n_frames: int, **header) -> np.ndarray:
    """A classic (not enhanced) MR multi-frame file from one written image, as old scanners wrote cines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(template)
    frames = (np.arange(n_frames)[:, None, None] * 7 + ds.pixel_array[None]).astype(np.uint16)
    ds.NumberOfFrames = n_frames
    ds.PixelData = frames.tobytes()
    for keyword, value in header.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return frames * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.mark.parametrize("timing", ["FrameTime", "FrameTimeVector"])
def test_classic_multiframe_cine_with_geometry_loads_as_one_slice(tmp_path, timing):
    write_mr_series(tmp_path / "src", marked(1, 1), AXIAL, SeriesInfo(), uid_seed="mf")
    header = (
        {"FrameTime": "40", "FrameIncrementPointer": 0x00181063}
        if timing == "FrameTime"
        else {"FrameTimeVector": ["0", "40", "40", "40", "40", "40"], "FrameIncrementPointer": 0x00181065}
    )
    expected = classic_multiframe(tmp_path / "study" / "cine.dcm", tmp_path / "src" / "IM00001.dcm", 6, **header)
    stacks, problems = read_study(tmp_path / "study")
    assert problems == [] and len(stacks) == 1
    stack = stacks[0]
    assert stack.pixels.shape == (1, 6, 8, 8)
    np.testing.assert_allclose(stack.pixels[0], expected, rtol=1e-6)
    np.testing.assert_allclose(stack.frame_times, [0, 40, 80, 120, 160, 200])
    np.testing.assert_allclose(stack.ijk_to_lps[:3, :2], AXIAL[:3, :2])


def test_classic_multiframe_without_geometry_names_what_is_missing(tmp_path):
    write_mr_series(tmp_path / "src", marked(1, 1), AXIAL, SeriesInfo(), uid_seed="nogeo")
    path = tmp_path / "study" / "heart.dcm"
    classic_multiframe(path, tmp_path / "src" / "IM00001.dcm", 4, PixelSpacing=None, ImagePositionPatient=None)
    stacks, problems = read_any(path)
    assert stacks == [] and len(problems) == 1
    assert problems[0].path == str(path) and problems[0].severity == "error"
    assert "multi-frame image (4 frames) without ImagePositionPatient, PixelSpacing" in problems[0].reason


@pytest.mark.skipif(not HEART_SAMPLE.exists(), reason="the shared real-DICOM sample is not on this machine")
def test_real_philips_multiframe_without_geometry_is_reported_not_loaded():
    stacks, problems = read_any(HEART_SAMPLE)
    assert stacks == []  # never a volume without geometry
    assert [(p.path, p.severity) for p in problems] == [(str(HEART_SAMPLE), "error")]
    reason = problems[0].reason
    assert "16 frames" in reason and "ImagePositionPatient, ImageOrientationPatient, PixelSpacing" in reason


def test_field_strength_written_in_gauss_is_read_as_tesla(tmp_path):
    write_mr_series(tmp_path / "g", np.ones((2, 1, 8, 8)), AXIAL, SeriesInfo(field_strength=15000), uid_seed="gauss")
    write_mr_series(tmp_path / "t", np.ones((2, 1, 8, 8)), AXIAL, SeriesInfo(field_strength=3), uid_seed="tesla")
    write_mr_series(tmp_path / "x", np.ones((2, 1, 8, 8)), AXIAL, SeriesInfo(field_strength=50), uid_seed="neither")
    [gauss], _ = read_study(tmp_path / "g")
    [tesla], _ = read_study(tmp_path / "t")
    [neither], _ = read_study(tmp_path / "x")
    assert gauss.info.field_strength == pytest.approx(1.5)
    assert "MagneticFieldStrength 15000 read as gauss: 1.5 T" in gauss.warnings
    assert tesla.info.field_strength == 3.0 and tesla.warnings == []
    assert neither.info.field_strength is None  # 50 T or 0.005 T: no MR scanner
    assert "MagneticFieldStrength 50 is neither tesla nor gauss; ignored" in neither.warnings


def test_cine_without_trigger_times_is_timed_over_the_rr_interval(tmp_path):
    pixels = marked(2, 4)
    write_mr_series(
        tmp_path, pixels, AXIAL, SeriesInfo(heart_rate=60), frame_times=[0, 200, 400, 600], uid_seed="notrig"
    )
    rng = np.random.default_rng(3)
    for name, new in zip(sorted(os.listdir(tmp_path)), rng.permutation(8)):
        ds = pydicom.dcmread(tmp_path / name)
        del ds.TriggerTime  # as some exports leave it out; CardiacNumberOfImages and NominalInterval stay
        ds.save_as(tmp_path / f"x{new}", enforce_file_format=True)
        os.remove(tmp_path / name)
    [stack], problems = read_study(tmp_path)
    assert problems == []
    np.testing.assert_allclose(stack.pixels, pixels)  # phases in instance-number order
    np.testing.assert_allclose(stack.frame_times, [0, 250, 500, 750])  # NominalInterval 1000 ms / 4 phases
    assert any("no trigger times in the headers" in w for w in stack.warnings)


def test_enhanced_mr_with_per_frame_rescale_and_vendor_private_tags(tmp_path):
    """Philips-style enhanced MR: a rescale per frame, private scale tags beside it, a Siemens-like
    private blob; the standard per-frame rescale is what gives the physical values."""
    pixels = np.random.default_rng(8).normal(300.0, 60.0, (2, 3, 8, 8))
    write_mr_series(tmp_path, pixels, AXIAL, SeriesInfo(), frame_times=[0, 40, 80], uid_seed="ph", enhanced=True)
    [path] = list(tmp_path.iterdir())
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    slope = float(shared.RescaleSlope)
    for number, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item = Dataset()
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = str(slope * (1 + number)), "5", "US"
        group.PixelValueTransformationSequence = [item]
    philips = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    philips.add_new(0x0E, "FL", 1234.5)  # Philips' own "scale slope", for its floating-point values
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", bytes(range(256)) * 3)
    ds.save_as(path, enforce_file_format=True)

    entry = index_study(tmp_path).stacks[0]
    stack = load_stack(entry)
    stored = pydicom.dcmread(path).pixel_array
    for k, t in np.ndindex(2, 3):
        _, frame = entry.frame_refs[k][t]
        np.testing.assert_allclose(stack.pixels[k, t], stored[frame] * slope * (1 + frame) + 5, rtol=1e-5)
    assert not np.allclose(stack.pixels, pixels, atol=1)  # the per-frame values, not the shared ones


# --- compressed pixel data ---------------------------------------------------------------


def j2k_lossless(ds: Dataset) -> None:
    """JPEG 2000 lossless, encoded with Pillow's OpenJPEG."""
    buffer = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buffer, format="JPEG2000", irreversible=False, no_jp2=True)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_decode_to_the_same_values(tmp_path, syntax):
    if not get_decoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} decoder installed")
    pixels = np.random.default_rng(1).normal(400.0, 90.0, (3, 2, 16, 12))
    write_mr_series(tmp_path / "plain", pixels, AXIAL, SeriesInfo(), frame_times=[0, 50], uid_seed="c")
    shutil.copytree(tmp_path / "plain", tmp_path / "packed")
    for path in (tmp_path / "packed").iterdir():
        ds = pydicom.dcmread(path)
        if syntax == JPEG2000Lossless:
            j2k_lossless(ds)
        else:
            ds.compress(syntax)  # RLE by pydicom itself, JPEG-LS by pyjpegls
        ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(next((tmp_path / "packed").iterdir())).file_meta.TransferSyntaxUID == syntax
    [plain], _ = read_study(tmp_path / "plain")
    [packed], problems = read_study(tmp_path / "packed")
    assert problems == []
    np.testing.assert_array_equal(packed.pixels, plain.pixels)


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, HTJ2KLossless])
def test_compressed_series_without_a_decoder_names_file_syntax_and_what_to_install(tmp_path, syntax):
    if get_decoder(syntax).is_available:
        pytest.skip(f"a {syntax.name} decoder is installed here")
    write_mr_series(tmp_path, np.ones((1, 1, 8, 8)), AXIAL, SeriesInfo(), uid_seed="nodec")
    path = tmp_path / "IM00001.dcm"
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8 compressed frame \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    stacks, problems = read_study(tmp_path)
    assert stacks == [] and [p.path for p in problems] == [str(path)]
    reason = problems[0].reason
    assert f"{syntax.name} ({syntax})" in reason and "no decoder for it is installed; install one of:" in reason
    assert "pylibjpeg" in reason


# --- non-image files beside the images --------------------------------------------------


def test_non_image_files_beside_the_images_are_skipped_as_info(tmp_path):
    study = tmp_path / "export"
    pixels = marked(2, 1)
    write_mr_series(study / "DICOM" / "S1", pixels, AXIAL, SeriesInfo(), uid_seed="export")
    others = {
        "text": study / "README.TXT",
        "pdf": study / "report.pdf",
        "thumbs": study / "DICOM" / "Thumbs.db",
        "viewer": study / "VIEWER.EXE",
        "dicomdir": study / "DICOMDIR",
        "sr": study / "DICOM" / "S2" / "SR0001",
        "gsps": study / "DICOM" / "S3" / "PS0001",
        "pdf_in_dicom": study / "DICOM" / "S4" / "DOC0001",
    }
    (study / "DICOM" / "S2").mkdir()
    (study / "DICOM" / "S3").mkdir()
    (study / "DICOM" / "S4").mkdir()
    others["text"].write_text("Burn date 2024-01-31. Open VIEWER.EXE to view the images.\n")
    others["pdf"].write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n")
    others["thumbs"].write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500))
    others["viewer"].write_bytes(b"MZ\x90\x00" + bytes(200))
    dicomdir(others["dicomdir"])
    structured_report(others["sr"])
    for key, sop_class in (("gsps", "1.2.840.10008.5.1.4.1.1.11.1"), ("pdf_in_dicom", "1.2.840.10008.5.1.4.1.1.104.1")):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.SeriesInstanceUID, ds.Modality = generate_uid(), "PR" if key == "gsps" else "DOC"
        if key == "pdf_in_dicom":
            ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
            ds.EncapsulatedDocument = others["pdf"].read_bytes() + b"\n"
        save_with_meta(ds, others[key], sop_class, ds.SOPInstanceUID)
    (study / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))

    stacks, problems = read_study(study)
    assert len(stacks) == 1
    np.testing.assert_array_equal(stacks[0].pixels, pixels)
    assert sorted(p.path for p in problems) == sorted(map(str, others.values()))  # .DS_Store: hidden, not looked at
    assert {p.severity for p in problems} == {"info"}, [str(p) for p in problems]


# --- the fuzzer's finds: bounded time and memory ---------------------------------------


class Bounded:
    """Asserts that the block took under ``seconds`` and raised the process's peak memory by under ``mib``."""

    def __init__(self, seconds: float = 20.0, mib: float = 300.0) -> None:
        self.seconds, self.mib = seconds, mib

    def __enter__(self):
        import resource  # POSIX only

        self.start, self.peak = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        import resource

        if exc[0] is None:
            assert time.monotonic() - self.start < self.seconds
            grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.peak
            assert grown_kib < self.mib * 1024, f"peak memory grew by {grown_kib / 1024:.0f} MiB"


@posix_only
def test_deeply_nested_folders_are_walked_without_recursion_and_capped(tmp_path):
    study = tmp_path / "study"
    write_mr_series(study, marked(2, 1), AXIAL, SeriesInfo(), uid_seed="deep")
    descriptors = [os.open(study, os.O_RDONLY)]
    try:
        for _ in range(2000):  # made relative to an open folder: the full path is longer than PATH_MAX
            os.mkdir("d", dir_fd=descriptors[-1])
            descriptors.append(os.open("d", os.O_RDONLY, dir_fd=descriptors[-1]))
        with Bounded():
            stacks, problems = read_study(study)
    finally:
        for parent in reversed(descriptors[:-1]):
            os.close(descriptors.pop())
            os.rmdir("d", dir_fd=parent)
        os.close(descriptors.pop())
    assert len(stacks) == 1 and stacks[0].pixels.shape == (2, 1, 8, 8)
    [problem] = problems
    assert problem.path == str(study) + "/d" * (MAX_FOLDER_DEPTH + 1) and problem.severity == "warning"
    assert f"more than {MAX_FOLDER_DEPTH} folder levels below" in problem.reason


@posix_only
@pytest.mark.parametrize(
    "case", ["rows_columns_65535", "huge_enhanced_frames", "enhanced_frame_count_mismatch", "compressed_65535"]
)
def test_headers_implying_more_pixels_than_the_file_holds(tmp_path, case):
    enhanced = case.startswith("enhanced") or case.startswith("huge")
    write_mr_series(tmp_path, np.ones((2, 2, 8, 8)), AXIAL, SeriesInfo(), uid_seed=case, enhanced=enhanced)
    path = sorted(tmp_path.iterdir())[0]
    ds = pydicom.dcmread(path)
    if case == "rows_columns_65535":
        ds.Rows = ds.Columns = 65535
    elif case == "compressed_65535":  # compressed: no length to check, so the size cap must hold
        ds.compress(RLELossless)
        ds.Rows = ds.Columns = 65535
    elif case == "huge_enhanced_frames":
        ds.NumberOfFrames = 2**31 - 1
    else:
        ds.NumberOfFrames = 3  # the file holds and describes 4
    ds.save_as(path, enforce_file_format=True)
    with Bounded():
        index = index_study(tmp_path)
        stacks, problems = read_study(tmp_path)
    expected = {
        "rows_columns_65535": "pixel data holds 128 bytes, but 65535 rows x 65535 columns x 1 frame(s) x 16 bits need",
        "huge_enhanced_frames": "pixel data holds 512 bytes, but 8 rows x 8 columns x 2147483647 frame(s) x 16 bits",
        "compressed_65535": f"65535 rows x 65535 columns x 1 frame(s) = 4294836225 voxels, over the reader's limit of {MAX_VOXELS}",
        "enhanced_frame_count_mismatch": "NumberOfFrames is 3 but PerFrameFunctionalGroupsSequence describes 4",
    }[case]
    assert [p.path for p in only(index.problems, path)] == [str(path)]  # found from the header, before decoding
    assert expected in only(problems, path)[0].reason
    assert len(stacks) == (0 if enhanced else 1)  # the other images of the series still load


def test_stack_over_the_voxel_limit_is_not_allocated(tmp_path, monkeypatch):
    """Each file is under the limit, the stack of all of them is not: refused before allocating."""
    import CMRFoundationLib.dicom.load as load

    write_mr_series(tmp_path, np.ones((3, 2, 8, 8)), AXIAL, SeriesInfo(), frame_times=[0, 40], uid_seed="cap")
    monkeypatch.setattr(load, "MAX_VOXELS", 3 * 2 * 8 * 8 - 1)  # a small limit stands for 2**29
    stacks, problems = read_study(tmp_path)
    assert stacks == [] and len(problems) == 1
    assert (
        problems[0].path == str(tmp_path / "IM00001.dcm")
        and f"over the limit of {3 * 2 * 8 * 8 - 1} voxels" in problems[0].reason
    )


def sparse(path, header: bytes, size: int) -> None:
    path.write_bytes(header)
    os.truncate(path, size)  # a hole: 2 GiB long, next to nothing on disk
    assert path.stat().st_size == size and path.stat().st_blocks * 512 < 1 << 20


@posix_only
def test_sparse_2gib_dicom_with_a_valid_header_is_refused_quickly(tmp_path):
    write_mr_series(tmp_path, np.ones((1, 1, 2, 2)), AXIAL, SeriesInfo(), uid_seed="sparse")
    path = tmp_path / "IM00001.dcm"
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 32768  # 32768 x 32768 x 16 bits: exactly 2 GiB of pixel data
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data[-20:-12] == b"\xe0\x7f\x10\x00OW\x00\x00"  # the pixel data element ends the file
    header = data[:-12] + struct.pack("<L", 2**31)  # its length now says 2 GiB, which the hole provides
    sparse(path, header, len(header) + 2**31)
    with Bounded(seconds=10):
        stacks, problems = read_any(path)
    assert stacks == [] and [p.path for p in problems] == [str(path)]
    assert f"32768 rows x 32768 columns x 1 frame(s) = {2**30} voxels, over the reader's limit" in problems[0].reason


@posix_only
def test_sparse_2gib_nifti_with_a_valid_header_is_refused_quickly(tmp_path):
    small = tmp_path / "small.nii"
    write_volume(np.zeros((2, 2, 2), np.int16), AXIAL, small)
    path = tmp_path / "huge.nii"
    header = bytearray(small.read_bytes()[:352])
    struct.pack_into("<8h", header, 40, 3, 1024, 1024, 1024, 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, 4, 16)  # int16: 2 GiB of voxels
    sparse(path, bytes(header), 352 + 2**31)
    with Bounded(seconds=10):
        stacks, problems = read_any(path)
    assert stacks == [] and [p.path for p in problems] == [str(path)]
    assert f"1024 x 1024 x 1024 is {2**30} voxels, over the reader's limit of {MAX_VOXELS}" in problems[0].reason


@posix_only
@pytest.mark.parametrize("case", ["hole_after_the_header", "hole_inside_a_sequence", "element_claiming_2gib"])
def test_sparse_2gib_dicom_whose_header_runs_into_a_hole_is_refused_quickly(tmp_path, case):
    """pydicom reads zeros as endless empty elements, and reads a huge element whole: both are stopped."""
    write_mr_series(tmp_path, np.ones((1, 1, 2, 2)), AXIAL, SeriesInfo(), uid_seed=case)
    path = tmp_path / "IM00001.dcm"
    ds = pydicom.dcmread(path)
    del ds.PixelData
    marker = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # the (undefined-length) item of the sequence below
    if case == "hole_inside_a_sequence":
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, generate_uid()
        ds.ReferencedImageSequence = [item]
        ds["ReferencedImageSequence"].is_undefined_length = True
        item.is_undefined_length_sequence_item = True
    if case == "element_claiming_2gib":
        ds.private_block(0x0029, "VENDOR BLOB", create=True).add_new(0x10, "OB", b"\x01\x02\x03\x04")
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    if case == "hole_after_the_header":  # the header, then 2 GiB of nothing
        sparse(path, data, len(data) + 2**31)
    elif case == "hole_inside_a_sequence":  # cut just inside the sequence's item
        start = data.index(marker) + len(marker)
        sparse(path, data[:start], start + 2**31)
    else:  # the blob's length says 2 GiB; the hole provides them, the pixel data follows
        at = data.index(b"\x29\x00\x10\x10OB\x00\x00") + 8
        with open(path, "wb") as f:
            f.write(data[:at] + struct.pack("<L", 2**31))
            f.seek(2**31, os.SEEK_CUR)
            f.write(data[at + 8 :])
        assert path.stat().st_blocks * 512 < 1 << 20
    with Bounded(seconds=10):
        stacks, problems = read_any(path)
    assert stacks == [] and [p.path for p in problems] == [str(path)]
    expected = "the header goes on past 128 MiB" if case == "element_claiming_2gib" else "only zero bytes from byte"
    assert expected in problems[0].reason


@posix_only
def test_sparse_2gib_zeros_after_the_pixel_data_are_not_parsed(tmp_path):
    """The image is whole; the hole after it (a preallocated, unfinished copy) is never read."""
    pixels = marked(1, 1)
    write_mr_series(tmp_path, pixels, AXIAL, SeriesInfo(), uid_seed="trailing")
    path = tmp_path / "IM00001.dcm"
    sparse(path, path.read_bytes(), path.stat().st_size + 2**31)
    with Bounded(seconds=10):
        stacks, problems = read_any(path)
    assert problems == [] and len(stacks) == 1
    np.testing.assert_array_equal(stacks[0].pixels[0, 0], pixels[0, 0])
