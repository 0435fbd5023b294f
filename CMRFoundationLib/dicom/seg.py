"""DICOM Segmentation (SEG) objects of a stack's label map, and reading them back.

Segments: one BINARY segment per label present (label index k is ``label_names[k]``,
0 is background), coded from terminology.py, with our structure name as the segment's
Tracking ID. The SEG copies the patient and study of its source images, so it files
under the study, and each SEG frame references the exact source image it segments.

Cine: one SEG object holds one cardiac frame. highdicom refuses two SEG frames at one
plane position, and SEG viewers load a SEG as one 3D segmentation, so
``write_dicom_seg`` writes cardiac frame ``frame`` of the stack, and
``write_dicom_seg_cine`` writes each labelled frame as its own SEG instance of one SEG
series. ``read_dicom_seg`` accepts a SEG file or a folder of them; highdicom reads the
masks by their source references (image, or frame of an enhanced file), so a whole cine
comes back in one call.

Enhanced multi-frame sources keep all images in one file, which highdicom can only
match to SEG frames by position (ambiguous for a cine). We therefore hand highdicom one
single-frame view of the file per slice (posing as a classic MR image) and then write
the true SOP class and frame number of every source reference ourselves.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MRImageStorage, SegmentationStorage

from .. import __version__
from ..stack import ImageStack
from ..terminology import ALIASES, STRUCTURES, coded_concepts, declare_private_scheme, structure, structure_for_codes
from .index import FrameAttributes

# Attributes of an enhanced file that describe all its frames; a one-frame view drops them.
_MULTIFRAME_ONLY = {
    "PixelData",
    "NumberOfFrames",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "DimensionOrganizationSequence",
    "DimensionIndexSequence",
}
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices")


def write_dicom_seg(
    stack: ImageStack,
    labels: np.ndarray,
    label_names: Sequence[str],
    out_path: str | os.PathLike,
    *,
    frame: int | None = None,
    series_description: str = "CMRFoundation segmentation",
    series_number: int | None = None,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    algorithm_name: str = "CMRFoundation",
    algorithm_version: str = __version__,
) -> Path:
    """Write cardiac frame ``frame`` of ``labels`` [slices, frames, rows, cols] as a DICOM SEG.

    ``frame`` may be left out for a stack with one frame. ``series_number`` defaults to
    1000 + the source series number; pass ``series_instance_uid`` to add the object to an
    existing SEG series.
    """
    import highdicom as hd  # a heavier import; only SEG writing needs it
    from pydicom.sr.codedict import codes

    labels = _checked_labels(stack, labels, label_names)
    frame = _checked_frame(stack, frame)
    frame_labels = labels[:, frame]
    present = [k for k in range(1, len(label_names)) if np.any(frame_labels == k)]
    if not present:
        raise ValueError(f"frame {frame + 1} of {_series_name(stack)} has no labels; nothing to write")  # counted from 1, as in the file names

    # BINARY segments are numbered 1..n, so absent labels are skipped in the numbering.
    segment_of_label = np.zeros(len(label_names), np.uint8)
    segment_of_label[present] = np.arange(1, len(present) + 1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    descriptions = [_segment_description(hd, number, label_names[k], algorithm) for number, k in enumerate(present, 1)]

    headers: dict[str, Dataset] = {}
    sources = [_source_image(headers, *stack.sources[k][frame]) for k in range(stack.n_slices)]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_of_label[frame_labels],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number if series_number is not None else 1000 + (stack.info.series_number or 0),
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer="CMRFoundation",
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        device_serial_number="0",
        content_description=f"{algorithm_name} segmentation of cardiac frame {frame + 1}",
    )
    seg.SeriesDescription = series_description
    _reference_source_frames(seg, stack, frame, sources, headers)
    declare_private_scheme(seg)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_path)
    return out_path


def write_dicom_seg_cine(
    stack: ImageStack,
    labels: np.ndarray,
    label_names: Sequence[str],
    out_dir: str | os.PathLike,
    **options,
) -> list[Path]:
    """One SEG instance per labelled cardiac frame, all in one new SEG series in ``out_dir``.

    Frames without labels are skipped; ``options`` are those of write_dicom_seg.
    """
    import highdicom as hd

    labels = _checked_labels(stack, labels, label_names)
    series_uid = options.pop("series_instance_uid", None) or hd.UID()
    paths = []
    for frame in range(stack.n_frames):
        if np.any(labels[:, frame]):
            path = Path(out_dir) / f"SEG_frame{frame + 1:03d}.dcm"
            paths.append(
                write_dicom_seg(
                    stack, labels, label_names, path, frame=frame, series_instance_uid=series_uid, instance_number=frame + 1, **options
                )
            )
    return paths


def read_dicom_seg(path: str | os.PathLike, stack: ImageStack, label_names: Sequence[str] | None = None) -> np.ndarray:
    """Labels [slices, frames, rows, cols] (uint8) of the SEG file, or folder of SEG files, at ``path``.

    With ``label_names`` (index 0 = background) every segment gets the index of its
    structure in that list; without, it keeps its segment number. A segment's structure
    is its Tracking ID when that is one of our names, else found from its coded type.
    Frames the SEG does not cover stay 0. The masks are read by highdicom, by source image
    (single-frame) or source frame (enhanced multi-frame); a file that is not a SEG of
    this stack's images is refused with a ValueError naming it.
    """
    import highdicom as hd  # a heavier import; only SEG reading and writing need it

    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    where = _image_positions_in_stack(stack)
    labels = np.zeros(stack.pixels.shape, np.uint8)
    n_read = 0
    for file in files:
        try:
            ds = pydicom.dcmread(file)
        except (InvalidDicomError, OSError) as error:
            if path.is_dir():
                continue
            raise ValueError(f"{file} is not a readable DICOM file ({error})") from None
        if ds.get("SOPClassUID") != SegmentationStorage:
            if path.is_dir():
                continue
            raise ValueError(f"{file} is not a DICOM Segmentation")
        n_read += 1
        if (ds.Rows, ds.Columns) != stack.pixels.shape[2:]:
            raise ValueError(f"{file}: SEG frames are {ds.Rows}x{ds.Columns}, the images of {_series_name(stack)} are "
                             f"{stack.pixels.shape[2]}x{stack.pixels.shape[3]}")
        with _malformed_seg(file):
            seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        _read_one_seg(seg, where, stack, label_names, file, labels)
    if n_read == 0:
        raise ValueError(f"no DICOM Segmentation in {path}")
    return labels


def _read_one_seg(seg, where: dict, stack: ImageStack, label_names: Sequence[str] | None, file: Path,
                  labels: np.ndarray) -> None:
    """Write the segments of one SEG into ``labels`` at the stack images its frames segment."""
    numbers = list(seg.segment_numbers)
    values = np.array([_label_value(seg.get_segment_description(n), label_names, file) for n in numbers], np.uint8)
    # The images this SEG segments, by source: a single-frame instance (frame None) or frames of an enhanced file.
    sources = {_source_key(item, where, stack, file) for item in seg.PerFrameFunctionalGroupsSequence}
    singles = sorted(uid for uid, frame in sources if frame is None)
    by_file: dict[str, list[int]] = {}
    for uid, frame in sorted((k for k in sources if k[1] is not None), key=lambda k: (k[0], k[1])):
        by_file.setdefault(uid, []).append(frame)
    reads = [([(uid, None) for uid in singles], lambda: seg.get_pixels_by_source_instance(singles, numbers))] if singles else []
    for uid, frames in by_file.items():
        reads.append(([(uid, f) for f in frames],
                      lambda uid=uid, frames=frames: seg.get_pixels_by_source_frame(uid, [f + 1 for f in frames], numbers)))
    for keys, read in reads:
        with _malformed_seg(file):
            masks = read()  # [images, rows, cols, segments] in the order of ``numbers``
        for key, mask in zip(keys, masks, strict=True):
            k, t = where[key]
            for value, segment in zip(values, np.moveaxis(mask, -1, 0), strict=True):
                labels[k, t][segment > 0] = value


# --- writing helpers ---------------------------------------------------------------------


def _series_name(stack: ImageStack) -> str:
    info = stack.info
    return f"series {info.series_number} '{info.series_description}' ({info.series_uid or 'no UID'})"


def _checked_labels(stack: ImageStack, labels: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != stack.pixels.shape:
        raise ValueError(
            f"label map of shape {labels.shape} does not fit {_series_name(stack)}, "
            f"whose images are {stack.pixels.shape} [slices, frames, rows, cols]"
        )
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label map must hold integer labels, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(label_names)):
        raise ValueError(f"label values must lie in 0..{len(label_names) - 1} (one per label name), got {labels.min()}..{labels.max()}")
    for name in label_names[1:]:
        structure(name)  # unknown names fail here, before any work
    if stack.sources is None or stack.sop_instance_uids is None:
        raise ValueError(f"{_series_name(stack)} was not read from DICOM files; a SEG needs its source images")
    return labels


def _checked_frame(stack: ImageStack, frame: int | None) -> int:
    if frame is None:
        if stack.n_frames > 1:
            raise ValueError(
                f"{_series_name(stack)} has {stack.n_frames} cardiac frames: pass frame= (0..{stack.n_frames - 1}), "
                "or use write_dicom_seg_cine for all of them"
            )
        return 0
    if not 0 <= frame < stack.n_frames:
        raise ValueError(f"frame {frame} is outside 0..{stack.n_frames - 1} of {_series_name(stack)}")
    return frame


def _segment_description(hd, number: int, name: str, algorithm) -> Dataset:
    entry = structure(name)
    codes = coded_concepts(name)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=entry.display_name,
        segmented_property_category=codes.category,
        segmented_property_type=codes.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_id=entry.name,
        tracking_uid=hd.UID(),
        display_color=hd.color.CIELabColor.from_rgb(*entry.color),
    )


def _source_image(headers: dict[str, Dataset], path: str, frame_index: int | None) -> Dataset:
    """The header of a single-frame image, or a classic-MR-like view of one frame of an enhanced file."""
    if path not in headers:
        headers[path] = pydicom.dcmread(path, stop_before_pixels=True)
    header = headers[path]
    if frame_index is None:
        return header
    view = Dataset()
    for element in header:
        if element.keyword not in _MULTIFRAME_ONLY:
            view.add(copy.copy(element))  # a copy: setting a value below must not change the header
    view.SOPClassUID = MRImageStorage  # highdicom treats an enhanced SOP class as multi-frame
    attributes = FrameAttributes(header, frame_index)
    for keyword in _GEOMETRY:
        value = attributes.get(keyword)
        if value is not None:
            setattr(view, keyword, value)
    return view


def _reference_source_frames(seg: Dataset, stack: ImageStack, frame: int, sources: list[Dataset], headers: dict[str, Dataset]) -> None:
    """Point every SEG frame, and the SEG's lists of source images, at the true source images and frames."""
    # (SOP class, SOP instance, 1-based frame number or None) of the image of each slice
    images = []
    for k in range(stack.n_slices):
        path, frame_index = stack.sources[k][frame]
        images.append((headers[path].SOPClassUID, stack.sop_instance_uids[k][frame], None if frame_index is None else frame_index + 1))

    positions = np.array([[float(v) for v in s.ImagePositionPatient] for s in sources])
    for item in seg.PerFrameFunctionalGroupsSequence:
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        k = int(np.argmin(np.linalg.norm(positions - position, axis=1)))  # highdicom copied the position from slice k
        derivation = item.DerivationImageSequence[0]
        reference = derivation.SourceImageSequence[0]  # keeps highdicom's purpose-of-reference code
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID, number = images[k]
        if number is not None:
            reference.ReferencedFrameNumber = number
        derivation.SourceImageSequence = [reference]

    frames_of: dict[tuple[str, str], list[int]] = {}  # frames used of each source instance
    for class_uid, instance_uid, number in images:
        frames_of.setdefault((class_uid, instance_uid), []).extend([] if number is None else [number])
    seg.SourceImageSequence = [_image_reference(class_uid, uid, used) for (class_uid, uid), used in frames_of.items()]
    series = Dataset()
    series.SeriesInstanceUID = sources[0].SeriesInstanceUID
    series.ReferencedInstanceSequence = [_image_reference(class_uid, uid, []) for class_uid, uid in frames_of]
    seg.ReferencedSeriesSequence = [series]


def _image_reference(class_uid: str, instance_uid: str, frame_numbers: list[int]) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = class_uid
    item.ReferencedSOPInstanceUID = instance_uid
    if frame_numbers:
        item.ReferencedFrameNumber = frame_numbers if len(frame_numbers) > 1 else frame_numbers[0]
    return item


# --- reading helpers ---------------------------------------------------------------------


def _image_positions_in_stack(stack: ImageStack) -> dict[tuple[str, int | None], tuple[int, int]]:
    """(SOP Instance UID, 0-based frame in file or None) -> (slice, frame) of every image of the stack."""
    if stack.sources is None or stack.sop_instance_uids is None:
        raise ValueError(f"{_series_name(stack)} was not read from DICOM files; cannot place SEG frames in it")
    return {
        (stack.sop_instance_uids[k][t], stack.sources[k][t][1]): (k, t) for k in range(stack.n_slices) for t in range(stack.n_frames)
    }


@contextmanager
def _malformed_seg(file: Path):
    """highdicom's errors on a SEG it cannot read, as one ValueError naming the file."""
    try:
        yield
    except (AttributeError, KeyError, IndexError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"{file}: not a readable DICOM Segmentation ({type(error).__name__}: {error})") from None


def _source_key(item: Dataset, where: dict, stack: ImageStack, file: Path) -> tuple[str, int | None]:
    """(SOP Instance UID, 0-based frame in file or None) of the stack image a SEG frame segments."""
    try:
        reference = item.DerivationImageSequence[0].SourceImageSequence[0]
    except (AttributeError, IndexError):
        raise ValueError(f"{file}: a SEG frame does not reference its source image") from None
    number = reference.get("ReferencedFrameNumber")
    key = (reference.ReferencedSOPInstanceUID, None if number is None else int(number) - 1)
    if key not in where:
        raise ValueError(f"{file}: SEG frame segments image {key[0]} (frame {number}), which is not in {_series_name(stack)}")
    return key


def _label_value(segment: Dataset, label_names: Sequence[str] | None, file: Path) -> int:
    if label_names is None:
        return int(segment.SegmentNumber)
    name = _structure_of_segment(segment)
    for index, label in enumerate(label_names):
        if index > 0 and name is not None and structure(label).name == name:
            return index
    raise ValueError(f"{file}: segment {segment.SegmentNumber} '{segment.SegmentLabel}' is none of the labels {list(label_names)}")


def _structure_of_segment(segment: Dataset) -> str | None:
    """Our name for a segment: its Tracking ID when that is one of our names, else from its coded type."""
    tracking_id = segment.get("TrackingID")
    if tracking_id in STRUCTURES or tracking_id in ALIASES:
        return structure(tracking_id).name
    code = segment.SegmentedPropertyTypeCodeSequence[0]
    return structure_for_codes(code.CodingSchemeDesignator, code.CodeValue)
