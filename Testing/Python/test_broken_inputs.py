"""A study folder full of broken files: each is reported by name, the good series still load."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from CMRFoundationLib.dicom import index_study, read_study, summarize, write_mr_series
from CMRFoundationLib.stack import SeriesInfo, geometry_matrix

AXIAL = geometry_matrix(np.zeros(3), [1, 0, 0], [0, 1, 0], np.array([1.5, 1.5, 8.0]))


def save_with_meta(ds: Dataset, path, sop_class: str, sop_uid: str) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def structured_report(path) -> None:
    """A valid DICOM object without pixel data."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    save_with_meta(ds, path, ds.SOPClassUID, ds.SOPInstanceUID)


def dicomdir(path) -> None:
    """A media directory: its SOP class lives in the file meta only, as in real DICOMDIRs."""
    ds = Dataset()
    ds.FileSetID = "STUDY"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = []
    save_with_meta(ds, path, "1.2.840.10008.1.3.10", generate_uid())


def variant(source, target, drop: str | None = None) -> None:
    """A copy of ``source`` with a fresh SOP Instance UID, optionally without one attribute."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if drop:
        del ds[drop]
    ds.save_as(target, enforce_file_format=True)


@pytest.fixture()
def broken_study(tmp_path):
    """Two good series, plus one bad file of every kind; returns (folder, {kind: path})."""
    study = tmp_path / "study"
    good = study / "cine"
    write_mr_series(
        good,
        np.arange(3 * 2 * 64).reshape(3, 2, 8, 8),
        AXIAL,
        SeriesInfo(series_number=1),
        frame_times=[0, 50],
        uid_seed="good",
    )
    # A series with one slice missing a frame: 4 slices x 3 frames, minus one file.
    uneven = study / "uneven"
    write_mr_series(
        uneven, np.ones((4, 3, 8, 8)), AXIAL, SeriesInfo(series_number=2), frame_times=[0, 40, 80], uid_seed="uneven"
    )
    os.remove(uneven / "IM00005.dcm")  # slice 1, frame 1

    junk = study / "junk"
    junk.mkdir()
    template = good / "IM00001.dcm"
    data = template.read_bytes()
    bad = {
        "text": junk / "readme.txt",
        "png": junk / "scan.png",
        "random": junk / "blob",
        "zero": junk / "empty",
        "truncated_header": junk / "cut_header",
        "truncated_pixels": junk / "cut_pixels",
        "no_pixels": junk / "report",
        "no_position": junk / "no_position",
        "no_spacing": junk / "no_spacing",
        "duplicate": junk / "copy_of_first",
        "dicomdir": study / "DICOMDIR",
        "dropped_slice": uneven / "IM00004.dcm",
    }
    bad["text"].write_text("Patient notes: nothing to see here.\n")
    bad["png"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    bad["random"].write_bytes(np.random.default_rng(0).integers(16, 256, 3000, dtype=np.uint8).tobytes())
    bad["zero"].write_bytes(b"")
    variant(template, bad["truncated_header"])
    bad["truncated_header"].write_bytes(bad["truncated_header"].read_bytes()[:700])
    variant(template, bad["truncated_pixels"])
    bad["truncated_pixels"].write_bytes(bad["truncated_pixels"].read_bytes()[:-50])
    structured_report(bad["no_pixels"])
    variant(template, bad["no_position"], drop="ImagePositionPatient")
    variant(template, bad["no_spacing"], drop="PixelSpacing")
    shutil.copy(template, bad["duplicate"])
    dicomdir(bad["dicomdir"])
    (study / ".hidden_dicom").write_bytes(data)  # hidden files are not looked at
    return study, {kind: str(path) for kind, path in bad.items()}


def test_every_broken_file_is_named_with_a_reason(broken_study):
    study, bad = broken_study
    index = index_study(study)
    problems = {p.path: p for p in index.problems}
    expected = {
        "text": ("not a DICOM file (a .txt file); skipped", "info"),  # documents beside images are expected
        "png": ("not a DICOM file (a PNG image); skipped", "info"),
        "random": ("not a DICOM file", "error"),
        "zero": ("empty file (0 bytes)", "error"),
        "truncated_header": ("truncated", "error"),
        "truncated_pixels": ("truncated file: pixel data needs 128 bytes but only 78", "error"),
        "no_pixels": ("no pixel data (Enhanced SR Storage)", "info"),
        "no_position": ("missing ImagePositionPatient", "error"),
        "no_spacing": ("missing PixelSpacing", "error"),
        "duplicate": ("duplicate SOPInstanceUID", "warning"),
        "dicomdir": ("DICOMDIR", "info"),
        "dropped_slice": ("has 2 frame(s), the rest of its stack 3; slice dropped", "warning"),
    }
    for kind, (reason, severity) in expected.items():
        problem = problems.get(bad[kind])
        assert problem is not None, f"{kind}: no problem reported for {bad[kind]}"
        assert reason in problem.reason and problem.severity == severity, f"{kind}: {problem}"
        assert str(problem).startswith(bad[kind] + ": ")
    assert len(index.problems) == len(expected)
    assert "cannot be placed in space" in problems[bad["no_position"]].reason
    assert "IM00001.dcm" in problems[bad["duplicate"]].reason  # names the file that was kept
    assert index.n_files == 6 + 11 + 10 + 1  # cine, uneven series, junk, DICOMDIR; not the hidden file
    assert index.n_dicom_files == 6 + 11 + 6 + 1
    assert "error (6)" in summarize(index)


def test_good_series_in_the_same_folder_still_load(broken_study):
    study, _ = broken_study
    stacks, problems = read_study(study)
    assert len(problems) == 12
    by_number = {stack.info.series_number: stack for stack in stacks}
    assert sorted(by_number) == [1, 2]
    np.testing.assert_array_equal(by_number[1].pixels, np.arange(3 * 2 * 64).reshape(3, 2, 8, 8))
    assert by_number[2].pixels.shape == (3, 3, 8, 8)  # the slice with two frames was dropped
    np.testing.assert_allclose(by_number[2].slice_positions, [0.0, 16.0, 24.0])
    assert any("irregular slice spacing" in w for w in by_number[2].warnings)


def test_empty_folder_and_missing_path(tmp_path):
    index = index_study(tmp_path)
    assert index.stacks == [] and [(p.path, p.reason) for p in index.problems] == [
        (str(tmp_path), "empty folder: no files found")
    ]
    missing = tmp_path / "does" / "not" / "exist"
    index = index_study(missing)
    assert index.stacks == [] and [(p.path, p.reason) for p in index.problems] == [
        (str(missing), "path does not exist")
    ]
    stacks, problems = read_study(missing)
    assert stacks == [] and problems[0].path == str(missing)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_unreadable_file(tmp_path):
    write_mr_series(tmp_path, np.ones((2, 1, 8, 8)), AXIAL, SeriesInfo(), uid_seed="perm")
    locked = tmp_path / "IM00002.dcm"
    locked.chmod(0)
    try:
        index = index_study(tmp_path)
    finally:
        locked.chmod(0o644)
    assert [(p.path, p.reason) for p in index.problems] == [(str(locked), "cannot read file: Permission denied")]
    assert index.stacks[0].shape == (1, 1, 8, 8)
