"""Write a [slices, frames, rows, cols] block of physical values as an MR DICOM series.

Classic MR Image Storage (one file per image) or, with ``enhanced=True``, one Legacy
Converted Enhanced MR file built from the same classic datasets by highdicom, so both
routes carry identical header facts. Pixels are stored as uint16 with a rescale
slope/intercept chosen so every value round-trips within slope/2 (exactly for
integer-valued images such as T1 maps in ms).
"""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from ..stack import SeriesInfo

_UINT16_MAX = 65535


def write_mr_series(
    out_dir: str | os.PathLike,
    pixels: np.ndarray,
    ijk_to_lps: np.ndarray,
    info: SeriesInfo,
    *,
    frame_times: np.ndarray | list[float] | None = None,
    dynamic_times: np.ndarray | list[float] | None = None,
    enhanced: bool = False,
    uid_seed: str | None = None,
    window: tuple[float, float] | None = None,
    file_prefix: str = "IM",
) -> list[list[str]]:
    """Write ``pixels`` [slices, frames, rows, cols] into ``out_dir``; return SOP Instance UIDs [slices][frames].

    ``frame_times`` (ms, one per frame) makes the series a cine: TriggerTime per frame,
    CardiacNumberOfImages, and NominalInterval/HeartRate from ``info.heart_rate``.
    ``dynamic_times`` (ms from the first frame, one per frame) makes it a dynamic series
    instead (e.g. first-pass perfusion: the same cardiac phase repeated over many
    heartbeats): AcquisitionTime and TemporalPositionIdentifier per frame, and no
    CardiacNumberOfImages, as its frames are not phases of one cycle; ``frame_times`` then
    holds the trigger delay of each frame (usually one value repeated).
    With ``uid_seed`` every UID is deterministic; ``info.study_uid``, ``series_uid`` and
    ``frame_of_reference_uid`` are used when set (set them to put several series in one
    study). ``window`` is (center, width) in physical units, default from the data.
    With ``enhanced=True`` all images share the one multi-frame file's SOP Instance UID.
    """
    values = np.asarray(pixels, dtype=np.float64)
    if values.ndim != 4:
        raise ValueError(f"pixels must be [slices, frames, rows, cols], got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("pixels must be finite (no NaN or infinity)")
    n_slices, n_frames, rows, cols = values.shape
    if frame_times is not None and len(frame_times) != n_frames:
        raise ValueError(f"{len(frame_times)} frame times for {n_frames} frames")
    if dynamic_times is not None and len(dynamic_times) != n_frames:
        raise ValueError(f"{len(dynamic_times)} dynamic times for {n_frames} frames")
    affine = np.asarray(ijk_to_lps, dtype=float)

    def uid(*parts: object) -> str:
        # pydicom concatenates entropy sources, so join with a separator: ("1", "11") != ("11", "1").
        return (
            generate_uid(entropy_srcs=["/".join(map(str, [uid_seed, *parts]))])
            if uid_seed is not None
            else generate_uid()
        )

    study_uid = info.study_uid or uid("study")
    series_uid = info.series_uid or uid("series", study_uid, info.series_number, info.series_description)
    for_uid = info.frame_of_reference_uid or uid("frame-of-reference", study_uid)

    slope, intercept = _rescale_for(values)
    stored = np.clip(np.round((values - intercept) / slope), 0, _UINT16_MAX).astype(np.uint16)
    if window is None:
        low, high = np.percentile(values, [0.5, 99.5])
        window = ((low + high) / 2, max(high - low, 1.0))

    series = _series_dataset(info, study_uid, series_uid, for_uid, affine, rows, cols, slope, intercept, window)
    if dynamic_times is not None:
        series.NumberOfTemporalPositions = n_frames
    elif frame_times is not None:
        series.CardiacNumberOfImages = n_frames
    if frame_times is not None:
        if info.heart_rate:
            series.HeartRate = round(info.heart_rate)
            series.NominalInterval = round(60000 / info.heart_rate)

    os.makedirs(out_dir, exist_ok=True)
    datasets: list[Dataset] = []
    uids: list[list[str]] = []
    for k in range(n_slices):
        uids.append([])
        for t in range(n_frames):
            number = k * n_frames + t + 1
            ds = _image_dataset(series, affine, k, number, uid("image", series_uid, k, t), stored[k, t])
            if frame_times is not None:
                ds.TriggerTime = _ds(frame_times[t])
            if dynamic_times is not None:
                ds.TemporalPositionIdentifier = t + 1
                ds.AcquisitionTime = _time_after(series.StudyTime, dynamic_times[t])
            if enhanced:
                datasets.append(ds)
            else:
                pydicom.dcmwrite(os.path.join(out_dir, f"{file_prefix}{number:05d}.dcm"), ds, enforce_file_format=True)
            uids[-1].append(ds.SOPInstanceUID)

    if enhanced:
        # highdicom is a heavier import; only the enhanced route needs it.
        from highdicom.legacy import LegacyConvertedEnhancedMRImage

        sop_uid = uid("enhanced", series_uid)
        multiframe = LegacyConvertedEnhancedMRImage(
            datasets,
            series_instance_uid=series_uid,
            series_number=series.SeriesNumber,
            sop_instance_uid=sop_uid,
            instance_number=1,
        )
        multiframe.SeriesDescription = info.series_description  # highdicom appends "(enhanced conversion)"
        # highdicom stamps the conversion with the current time; use the series' own date
        # and time instead so that the same input always gives the same file.
        multiframe.InstanceCreationDate = series.StudyDate
        multiframe.InstanceCreationTime = series.StudyTime
        for item in multiframe.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = series.StudyDate + series.StudyTime
        # Likewise its random Dimension Organization UID.
        dimension_uid = uid("dimension-organization", series_uid)
        for item in [*multiframe.get("DimensionOrganizationSequence", []), *multiframe.get("DimensionIndexSequence", [])]:
            item.DimensionOrganizationUID = dimension_uid
        multiframe.save_as(os.path.join(out_dir, f"{file_prefix}00001.dcm"))
        uids = [[sop_uid] * n_frames for _ in range(n_slices)]
    return uids


def _rescale_for(values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) mapping uint16 to ``values``, both exactly representable as DS."""
    low, high = float(values.min()), float(values.max())
    if np.array_equal(values, np.round(values)) and high - low <= _UINT16_MAX:
        # Integer images (labels, maps in ms) keep slope 1 and lose nothing.
        return 1.0, (0.0 if low >= 0 and high <= _UINT16_MAX else low)
    # One spare level absorbs the rounding of slope/intercept to 16-character DS strings.
    slope = float(format_number_as_ds((high - low) / (_UINT16_MAX - 1))) if high > low else 1.0
    return slope, float(format_number_as_ds(low))


def _time_after(start: str, ms: float) -> str:
    """A DICOM time (TM, HHMMSS.FFFFFF) ``ms`` after ``start`` (HHMMSS)."""
    micro = (int(start[:2]) * 3600 + int(start[2:4]) * 60 + int(start[4:6])) * 10**6 + round(ms * 1000)
    seconds, fraction = divmod(micro, 10**6)
    return f"{seconds // 3600 % 24:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{fraction:06d}"


def _ds(value: float) -> str:
    """A decimal string that fits DICOM's 16-character DS limit."""
    return format_number_as_ds(float(value))


def _series_dataset(
    info: SeriesInfo,
    study_uid: str,
    series_uid: str,
    for_uid: str,
    affine: np.ndarray,
    rows: int,
    cols: int,
    slope: float,
    intercept: float,
    window: tuple[float, float],
) -> Dataset:
    """Every attribute shared by all images of the series."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    now = datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    # Patient
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.patient_birth_date
    ds.PatientSex = info.patient_sex
    if info.patient_age:
        ds.PatientAge = info.patient_age
    if info.patient_size is not None:
        ds.PatientSize = _ds(info.patient_size)
    if info.patient_weight is not None:
        ds.PatientWeight = _ds(info.patient_weight)
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = info.study_date or now.strftime("%Y%m%d")
    ds.StudyTime = info.study_time or now.strftime("%H%M%S")
    ds.StudyDescription = info.study_description
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    # General Series
    ds.Modality = info.modality or "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = info.series_number if info.series_number is not None else 1
    ds.SeriesDescription = info.series_description
    ds.ProtocolName = info.protocol_name
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEART"
    # Frame of Reference, Equipment
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = info.manufacturer
    # General Image
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.ImageType = list(info.image_type or ("ORIGINAL", "PRIMARY", "M", "ND"))
    # Image Plane (position and slice location are per image)
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # (between rows, between columns)
    ds.SliceThickness = _ds(info.slice_thickness or spacing[2])
    ds.SpacingBetweenSlices = _ds(spacing[2])
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleType = "US"  # unspecified physical unit
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])
    # MR Image
    ds.ScanningSequence = list(info.scanning_sequence or ("GR",))
    ds.SequenceVariant = list(info.sequence_variant or ("NONE",))
    ds.SequenceName = info.sequence_name
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = _ds(info.echo_time) if info.echo_time is not None else ""
    ds.EchoTrainLength = ""
    if info.repetition_time is not None:
        ds.RepetitionTime = _ds(info.repetition_time)
    if info.inversion_time is not None:
        ds.InversionTime = _ds(info.inversion_time)
    if info.flip_angle is not None:
        ds.FlipAngle = _ds(info.flip_angle)
    if info.field_strength is not None:
        ds.MagneticFieldStrength = _ds(info.field_strength)
    return ds


def _image_dataset(
    series: Dataset, affine: np.ndarray, k: int, number: int, sop_uid: str, stored: np.ndarray
) -> Dataset:
    """One image of the series: the shared attributes plus its own position, UIDs and pixels."""
    ds = Dataset()
    ds.update(series)
    position = affine @ np.array([0.0, 0.0, k, 1.0])
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [_ds(v) for v in position[:3]]
    ds.SliceLocation = _ds(position[:3] @ normal / np.linalg.norm(normal))
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
