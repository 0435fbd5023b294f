"""NIfTI / NRRD / MetaImage round trips with oblique geometry, and read_any's dispatch."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import SimpleITK as sitk

from CMRFoundationLib.dicom import write_mr_series
from CMRFoundationLib.stack import ImageStack, SeriesInfo, geometry_matrix
from CMRFoundationLib.volume_io import read_any, read_volume, write_volume


def oblique(handedness: int = 1) -> np.ndarray:
    """A rotated, anisotropic, offset grid; handedness -1 flips the slice axis."""
    rotation = np.linalg.qr(np.random.default_rng(11).normal(size=(3, 3)))[0]
    matrix = geometry_matrix(np.array([12.5, -40.0, 77.0]), rotation[:, 0], rotation[:, 1], np.array([0.9, 1.3, 6.5]))
    matrix[:3, 2] *= handedness
    return matrix


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha"])
@pytest.mark.parametrize("n_frames", [1, 4])
@pytest.mark.parametrize("handedness", [1, -1])
def test_round_trip(tmp_path, suffix, n_frames, handedness):
    pixels = np.random.default_rng(n_frames).normal(size=(5, n_frames, 7, 9)).astype(np.float32)
    stack = ImageStack(pixels, oblique(handedness))
    path = tmp_path / f"volume{suffix}"
    write_volume(stack, None, path)
    read = read_volume(path)
    assert read.pixels.shape == (5, n_frames, 7, 9) and read.pixels.dtype == np.float32
    np.testing.assert_array_equal(read.pixels, pixels)
    np.testing.assert_allclose(read.ijk_to_lps, stack.ijk_to_lps, atol=1e-4)  # NIfTI keeps float32 geometry
    # The same voxel, by index and by position.
    lps = stack.ijk_to_lps_points([8, 6, 4])
    np.testing.assert_allclose(read.lps_to_ijk_points(lps), [[8, 6, 4]], atol=1e-4)


def test_plain_array_3d_and_nifti_ras_convention(tmp_path):
    """NIfTI's sform is RAS: the file must hold the LPS geometry with x and y negated."""
    matrix = geometry_matrix(np.array([-10.0, 20.0, 5.0]), [1, 0, 0], [0, 1, 0], np.array([2.0, 3.0, 4.0]))
    volume = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    write_volume(volume, matrix, tmp_path / "v.nii")
    header = (tmp_path / "v.nii").read_bytes()[:348]
    sform = np.array(struct.unpack("<12f", header[280:328])).reshape(3, 4)  # srow_x, srow_y, srow_z
    np.testing.assert_allclose(sform, (np.diag([-1, -1, 1, 1]) @ matrix)[:3])
    read = read_volume(tmp_path / "v.nii")
    np.testing.assert_array_equal(read.pixels[:, 0], volume)
    np.testing.assert_allclose(read.ijk_to_lps, matrix)


def test_multicomponent_nrrd_becomes_frames(tmp_path):
    """Slicer writes sequences as NRRD with a list axis: components are frames."""
    frames = np.random.default_rng(0).normal(size=(4, 6, 7, 3)).astype(np.float32)  # [z, y, x, c]
    image = sitk.GetImageFromArray(frames, isVector=True)
    image.SetSpacing((1.0, 1.5, 5.0))
    sitk.WriteImage(image, str(tmp_path / "sequence.nrrd"))
    read = read_volume(tmp_path / "sequence.nrrd")
    assert read.pixels.shape == (4, 3, 6, 7)
    np.testing.assert_array_equal(read.pixels[:, 2], frames[..., 2])


def test_2d_image(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 8), np.float32)), str(tmp_path / "plane.mha"))
    read = read_volume(tmp_path / "plane.mha")
    assert read.pixels.shape == (1, 1, 6, 8)
    np.testing.assert_allclose(read.ijk_to_lps, np.eye(4))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.nii: no such file"):
        read_volume(tmp_path / "missing.nii")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: unsupported file type"):
        read_volume(tmp_path / "notes.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="broken.nii.gz: cannot read volume"):
        read_volume(tmp_path / "broken.nii.gz")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="non-perpendicular"):
        write_volume(np.zeros((2, 3, 4)), sheared, tmp_path / "sheared.nrrd")


def test_read_any_dispatches(tmp_path):
    matrix = geometry_matrix(np.zeros(3), [1, 0, 0], [0, 0, -1], np.array([1.0, 1.0, 5.0]))
    study = tmp_path / "study"
    write_mr_series(
        study,
        np.ones((3, 2, 8, 8)),
        matrix,
        SeriesInfo(series_number=1),
        frame_times=[0, 30],
        uid_seed="one",
        file_prefix="A",
    )
    write_mr_series(
        study, np.full((2, 1, 8, 8), 2.0), matrix, SeriesInfo(series_number=2), uid_seed="two", file_prefix="B"
    )
    (study / "notes.txt").write_text("x")

    stacks, problems = read_any(study)
    assert sorted(s.info.series_number for s in stacks) == [1, 2] and len(problems) == 1

    stacks, problems = read_any(study / "B00002.dcm")
    assert [(s.info.series_number, s.pixels.shape) for s in stacks] == [(2, (2, 1, 8, 8))] and problems == []

    write_volume(stacks[0], None, tmp_path / "b.nrrd")
    stacks, problems = read_any(tmp_path / "b.nrrd")
    assert stacks[0].pixels.shape == (2, 1, 8, 8) and problems == []

    for path, reason in ((study / "notes.txt", "not a DICOM file"), (tmp_path / "nothing.nii", "path does not exist")):
        stacks, problems = read_any(path)
        assert stacks == [] and problems[0].path == str(path) and reason in problems[0].reason
