"""The in-memory image stack every reader produces and every task consumes.

Conventions (used everywhere in the project):

* ``pixels`` is float32 with shape ``[slices, frames, rows, cols]``; a static series has
  one frame. Values are physical (rescale slope/intercept already applied).
* Voxel index ``(i, j, k)`` is (column, row, slice), as in DICOM and ITK, so the numpy
  element ``pixels[k, t, j, i]`` sits at ``ijk_to_lps @ [i, j, k, 1]``.
* Patient coordinates are DICOM's LPS in millimetres; Slicer's RAS is available through
  ``ijk_to_ras``.
* Slices and frames are positions from 0 in code and in analysis.json (``ed_frame``,
  ``"slice"``, ``frames``). Wherever a person reads a slice or frame number (the report,
  flags and notes, measurements.csv, file names, the Slicer scene) it counts from 1, as
  DICOM and Slicer's sequence browser count: ``numbered`` turns positions into those numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def numbered(positions) -> str:
    """Slice or frame positions (from 0) as a person counts them (from 1): 0 -> "1", [0, 2] -> "1, 3"."""
    if np.ndim(positions) == 0:
        return str(int(positions) + 1)
    return ", ".join(str(int(position) + 1) for position in positions)

# The most voxels a reader will decode into one file's or one stack's float32 pixels: 2**29
# voxels are 2 GiB. A CMR cine (20 slices x 30 frames x 512 x 512) is 0.16 * 2**30 voxels;
# anything beyond the cap is a corrupt or hostile header, refused before any allocation.
MAX_VOXELS = 2**29


@dataclass
class SeriesInfo:
    """Header facts about the series a stack came from (all optional)."""

    modality: str = "MR"
    study_uid: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    protocol_name: str = ""
    sequence_name: str = ""
    image_type: tuple[str, ...] = ()
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    echo_time: float | None = None  # ms
    repetition_time: float | None = None  # ms
    inversion_time: float | None = None  # ms
    flip_angle: float | None = None  # degrees
    slice_thickness: float | None = None  # mm
    heart_rate: float | None = None  # beats per minute
    study_date: str = ""  # YYYYMMDD
    study_time: str = ""
    study_description: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    patient_size: float | None = None  # metres
    patient_weight: float | None = None  # kg
    frame_of_reference_uid: str = ""
    manufacturer: str = ""
    field_strength: float | None = None  # tesla
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ImageStack:
    """A geometrically consistent block of images: [slices, frames, rows, cols]."""

    pixels: np.ndarray
    ijk_to_lps: np.ndarray
    info: SeriesInfo = field(default_factory=SeriesInfo)
    # Per-frame acquisition times in ms (trigger time for cine), length = frames.
    frame_times: np.ndarray | None = None
    # Position of every slice along the slice normal (mm); may be irregular.
    slice_positions: np.ndarray | None = None
    # Where each (slice, frame) image came from: (path, frame number in file or None).
    sources: list[list[tuple[str, int | None]]] | None = None
    # SOP Instance UID of each (slice, frame) image, for DICOM SEG/SR references.
    sop_instance_uids: list[list[str]] | None = None
    warnings: list[str] = field(default_factory=list)
    # A reader that knows the study's long axis labels the plane better than the normal
    # alone can (see orientation_label); None means "from the normal".
    orientation_in_study: str | None = None

    def __post_init__(self) -> None:
        self.pixels = np.asarray(self.pixels)
        if self.pixels.ndim != 4:
            raise ValueError(f"pixels must be [slices, frames, rows, cols], got shape {self.pixels.shape}")
        self.ijk_to_lps = np.asarray(self.ijk_to_lps, dtype=float)
        if self.ijk_to_lps.shape != (4, 4):
            raise ValueError("ijk_to_lps must be a 4x4 matrix")

    # --- shape -------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return self.pixels.shape[0]

    @property
    def n_frames(self) -> int:
        return self.pixels.shape[1]

    # --- geometry ------------------------------------------------------------------
    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along (i, j, k) = (column spacing, row spacing, slice spacing), mm."""
        return np.linalg.norm(self.ijk_to_lps[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """LPS position of the centre of voxel (0, 0, 0)."""
        return self.ijk_to_lps[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit i, j, k axes in LPS."""
        return self.ijk_to_lps[:3, :3] / self.spacing

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row direction x column direction) in LPS."""
        d = self.direction
        n = np.cross(d[:, 0], d[:, 1])
        return n / np.linalg.norm(n)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.ijk_to_lps

    def ijk_to_lps_points(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.ijk_to_lps[:3, :3].T + self.ijk_to_lps[:3, 3]

    def slice_origins_lps(self) -> np.ndarray:
        """LPS of voxel (0, 0, k) of every slice, [slices, 3], at the slice's true depth.

        ``ijk_to_lps`` spaces the slices evenly (the median gap); ``slice_positions`` knows
        where each slice really is, which matters when a slice is missing.
        """
        nominal = self.ijk_to_lps_points([[0, 0, k] for k in range(self.n_slices)])
        if self.slice_positions is None:
            return nominal
        shift = np.asarray(self.slice_positions, dtype=float) - nominal @ self.normal
        return nominal + shift[:, None] * self.normal

    def pixel_points_to_lps(self, points_rc: np.ndarray) -> np.ndarray:
        """Per-slice pixel points ``[slices, ..., 2]`` (row, col) -> LPS mm ``[slices, ..., 3]``
        at each slice's true depth (NaN stays NaN)."""
        points_rc = np.asarray(points_rc, dtype=float)
        m = self.ijk_to_lps
        origins = self.slice_origins_lps().reshape(self.n_slices, *([1] * (points_rc.ndim - 2)), 3)
        return origins + points_rc[..., 1:2] * m[:3, 0] + points_rc[..., 0:1] * m[:3, 1]

    def lps_to_ijk_points(self, lps: np.ndarray) -> np.ndarray:
        lps = np.atleast_2d(np.asarray(lps, dtype=float))
        inverse = np.linalg.inv(self.ijk_to_lps)
        return lps @ inverse[:3, :3].T + inverse[:3, 3]

    @property
    def orientation(self) -> str:
        return self.orientation_in_study or orientation_label(self.normal)

    def describe(self) -> str:
        s, f, r, c = self.pixels.shape
        sp = self.spacing
        return f"{s} slice(s) x {f} frame(s) x {r}x{c}, {sp[0]:.2f}x{sp[1]:.2f}x{sp[2]:.2f} mm, {self.orientation}"


def geometry_matrix(
    origin: np.ndarray,
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    spacing: np.ndarray,
    normal: np.ndarray | None = None,
) -> np.ndarray:
    """IJK-to-LPS from DICOM-style geometry.

    ``row_direction`` is the unit vector of increasing column index i (first triplet of
    ImageOrientationPatient), ``column_direction`` that of increasing row index j;
    ``spacing`` is (column spacing, row spacing, slice spacing).
    """
    row_direction = np.asarray(row_direction, dtype=float)
    column_direction = np.asarray(column_direction, dtype=float)
    if normal is None:
        normal = np.cross(row_direction, column_direction)
    normal = np.asarray(normal, dtype=float) / np.linalg.norm(normal)
    m = np.eye(4)
    m[:3, 0] = row_direction * spacing[0]
    m[:3, 1] = column_direction * spacing[1]
    m[:3, 2] = normal * spacing[2]
    m[:3, 3] = origin
    return m


# The nominal long axis of the heart (base to apex) in LPS: the apex points to the
# patient's left, anterior and inferior. Real hearts scatter around it by +-25 degrees.
NOMINAL_LV_AXIS_LPS = np.array([0.62, -0.52, -0.58])
NOMINAL_LV_AXIS_LPS /= np.linalg.norm(NOMINAL_LV_AXIS_LPS)


def orientation_label(normal: np.ndarray, long_axis: np.ndarray | None = None) -> str:
    """Name a plane from its normal alone: axial, coronal, sagittal, SAX-like or LAX-like.

    Short-axis planes have their normal along the heart's long axis, long-axis planes
    contain it. Without a study-specific long axis the nominal one is used; a study
    with a short-axis stack can pass that stack's normal for a sharper answer.
    """
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    for name, axis in (("sagittal", 0), ("coronal", 1), ("axial", 2)):
        if abs(n[axis]) > np.cos(np.radians(10)):
            return name
    axis = NOMINAL_LV_AXIS_LPS if long_axis is None else np.asarray(long_axis, dtype=float) / np.linalg.norm(long_axis)
    angle = np.degrees(np.arccos(min(1.0, abs(float(n @ axis)))))
    if angle < 40:
        return "SAX-like"
    if angle > 50:
        return "LAX-like"
    return "oblique"
