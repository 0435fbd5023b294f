"""The reader on a DICOM file we did not write: pydicom's bundled MR_small.dcm.

Shape, pixel values, spacing, orientation and position are checked against pydicom's own
reading of the header (DICOM PS3.3 C.7.6.2: PixelSpacing is (row spacing, column spacing);
ImageOrientationPatient is the row direction, i.e. that of increasing column, then the
column direction). A second copy with anisotropic pixels and a turned, tilted plane makes
a row/column mix-up show, which the original file (square pixels, axial) would hide.
"""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from CMRFoundationLib.volume_io import read_any


@pytest.fixture(scope="module")
def mr_small():
    path = get_testdata_file("MR_small.dcm")
    if path is None:
        pytest.skip("pydicom's test data has no MR_small.dcm")
    return path


def check_against_header(stack, ds):
    rows, cols = int(ds.Rows), int(ds.Columns)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])

    assert stack.pixels.shape == (1, 1, rows, cols)
    assert np.array_equal(stack.pixels[0, 0], ds.pixel_array.astype(np.float32))  # no rescale in this file
    assert stack.spacing[:2] == pytest.approx([col_spacing, row_spacing])
    assert stack.direction[:, 0] == pytest.approx(iop[:3] / np.linalg.norm(iop[:3]), abs=1e-4)
    assert stack.direction[:, 1] == pytest.approx(iop[3:] / np.linalg.norm(iop[3:]), abs=1e-4)
    assert stack.origin == pytest.approx(ipp, abs=1e-4)
    assert stack.normal == pytest.approx(np.cross(iop[:3], iop[3:]) / np.linalg.norm(np.cross(iop[:3], iop[3:])), abs=1e-4)
    # Pixel (row r, column c) of the file lies at IPP + c * col_spacing * row_dir + r * row_spacing * col_dir.
    r, c = rows - 5, 3
    expected = ipp + c * col_spacing * iop[:3] + r * row_spacing * iop[3:]
    assert stack.pixel_points_to_lps(np.array([[[r, c]]], float))[0, 0] == pytest.approx(expected, abs=1e-3)
    assert stack.info.slice_thickness == pytest.approx(float(ds.SliceThickness))
    assert stack.info.series_number == int(ds.SeriesNumber)
    assert stack.info.modality == ds.Modality


def test_mr_small_reads_as_its_header_says(mr_small, tmp_path):
    shutil.copy(mr_small, tmp_path / "MR_small.dcm")
    ds = pydicom.dcmread(mr_small)
    for source in (tmp_path, tmp_path / "MR_small.dcm"):
        stacks, problems = read_any(source)
        assert len(stacks) == 1 and not [p for p in problems if p.severity != "info"], problems
        check_against_header(stacks[0], ds)


def test_mr_small_with_an_oblique_plane_and_rectangular_pixels(mr_small, tmp_path):
    ds = pydicom.dcmread(mr_small)
    a = np.radians(30)
    row_dir = np.array([np.cos(a), np.sin(a), 0.0])  # turned 30 deg in the axial plane ...
    col_dir = np.array([-np.sin(a) * np.cos(0.4), np.cos(a) * np.cos(0.4), np.sin(0.4)])  # ... and tilted
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = ["0.5", "0.3125"]  # rows 0.5 mm apart, columns 0.3125 mm apart
    ds.save_as(tmp_path / "oblique.dcm")

    stacks, problems = read_any(tmp_path)
    assert len(stacks) == 1, problems
    check_against_header(stacks[0], pydicom.dcmread(tmp_path / "oblique.dcm"))
