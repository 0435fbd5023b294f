"""Index a DICOM study from its headers: which stacks are there, and what is wrong.

``index_study`` walks a folder tree (any file names), or reads a file list (one path a
line, the suffix FILE_LIST_SUFFIX: a DICOM database's files, read where they are), reads every file's header but
none of its pixel bytes, groups images by series and splits each series into
geometrically consistent stacks of [slices, frames]. Classic single-frame images and
enhanced multi-frame images (one frame reference per frame) go through the same path.
Nothing here raises on bad input: every unusable file becomes a ``Problem``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..problems import Problem
from ..stack import MAX_VOXELS, SeriesInfo, geometry_matrix, orientation_label

FrameRef = tuple[str, int | None]  # (file, 0-based frame index in a multi-frame file, None for single-frame)

FILE_LIST_SUFFIX = ".cmrfm-files"
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # DICOM SEG: labels, not an image to analyse
_PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # Pixel Data, Float and Double Float Pixel Data
_SAME_DIRECTION = np.cos(np.radians(1.0))  # orientations within 1 degree belong to one stack
_UNDEFINED_LENGTH = 0xFFFFFFFF
# DICOM media nest patient/study/series/image four to six folders deep; a tree deeper than
# this is a link loop copied as folders or a hostile input, and is not searched further.
MAX_FOLDER_DEPTH = 32
# The most header bytes read before the pixel data. The largest real headers, enhanced files
# with functional groups for thousands of frames, are tens of MiB.
MAX_HEADER_BYTES = 128 << 20
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
# Files that media and exports put beside the images (reports, viewers, thumbnails): skipped
# as "info". Any other non-DICOM file may be a damaged image and stays an "error".
_KNOWN_NOT_DICOM = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"PK\x03\x04": "a ZIP archive",
    b"MZ": "a Windows program",
    b"<?xml": "an XML file",
    b"\xd0\xcf\x11\xe0": "a Windows thumbnail cache or Office document",
}
_DOCUMENT_SUFFIXES = {
    ".txt", ".pdf", ".xml", ".htm", ".html", ".json", ".csv", ".ini", ".cfg", ".inf", ".log", ".md", ".rtf",
    ".doc", ".docx", ".xls", ".xlsx", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".zip", ".exe", ".dll", ".bat",
    ".js", ".css", ".db",
}  # fmt: skip


@dataclass
class StackEntry:
    """One indexed stack: where its images are and how they sit in space; no pixels yet."""

    info: SeriesInfo
    ijk_to_lps: np.ndarray
    shape: tuple[int, int, int, int]  # (slices, frames, rows, cols)
    frame_refs: list[list[FrameRef]]  # [slices][frames]
    sop_instance_uids: list[list[str]]  # [slices][frames]; a multi-frame file's UID repeats
    frame_times: np.ndarray | None  # ms per frame (trigger time), median over slices
    slice_positions: np.ndarray  # mm along the slice normal, ascending
    orientation: str
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> np.ndarray:
        """(column spacing, row spacing, slice spacing) in mm."""
        return np.linalg.norm(self.ijk_to_lps[:3, :3], axis=0)

    @property
    def normal(self) -> np.ndarray:
        return self.ijk_to_lps[:3, 2] / self.spacing[2]

    @property
    def is_cine(self) -> bool:
        return self.shape[1] > 1 and self.frame_times is not None and bool(np.ptp(self.frame_times) > 0)

    def describe(self) -> str:
        s, f, r, c = self.shape
        sp = self.spacing
        text = f"{s} x {f} x {r} x {c} (slices x frames x rows x cols), {sp[0]:.2f} x {sp[1]:.2f} x {sp[2]:.2f} mm, {self.orientation}"
        if self.info.image_type:
            text += ", " + "\\".join(self.info.image_type)
        if self.is_cine:
            text += f", cine {self.frame_times[0]:.0f}-{self.frame_times[-1]:.0f} ms"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info.to_dict(),
            "shape": list(self.shape),
            "spacing": self.spacing.tolist(),
            "ijk_to_lps": self.ijk_to_lps.tolist(),
            "orientation": self.orientation,
            "is_cine": self.is_cine,
            "frame_times": None if self.frame_times is None else self.frame_times.tolist(),
            "slice_positions": self.slice_positions.tolist(),
            "warnings": list(self.warnings),
            "frame_refs": [[list(ref) for ref in row] for row in self.frame_refs],
            "sop_instance_uids": self.sop_instance_uids,
        }


@dataclass
class StudyIndex:
    root: str
    stacks: list[StackEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_files: int = 0
    n_dicom_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "n_files": self.n_files,
            "n_dicom_files": self.n_dicom_files,
            "stacks": [stack.to_dict() for stack in self.stacks],
            "problems": [dataclasses.asdict(problem) for problem in self.problems],
        }


class FrameAttributes:
    """Attribute lookup for one image, wherever the file keeps it.

    Enhanced multi-frame files keep geometry, timing and rescale in functional-group
    macros (per-frame first, then shared), and legacy-converted ones keep the rest in
    the Unassigned*ConvertedAttributes sequences; a classic file keeps everything at the
    top level. Searching those datasets in that order serves both kinds with one code path.
    """

    def __init__(self, ds: Dataset, frame_index: int | None) -> None:
        self.datasets: list[Dataset] = []
        if frame_index is not None:
            per_frame = ds.get("PerFrameFunctionalGroupsSequence")
            if per_frame and frame_index < len(per_frame):
                self.datasets += _macro_items(per_frame[frame_index])
            shared = ds.get("SharedFunctionalGroupsSequence")
            if shared:
                self.datasets += _macro_items(shared[0])
        self.datasets.append(ds)

    def get(self, *keywords: str) -> Any:
        """The first non-empty value of the first keyword present anywhere, else None."""
        for keyword in keywords:
            for ds in self.datasets:
                value = ds.get(keyword)
                if value is not None and value != "" and value != []:
                    return value
        return None


def rescale_of(attributes: FrameAttributes) -> tuple[float, float]:
    """(slope, intercept) turning stored pixel values into physical ones."""
    slope = _float(attributes.get("RescaleSlope"))
    intercept = _float(attributes.get("RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


# --- indexing ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Image:
    """What indexing keeps of one image (a single-frame file or one frame of a multi-frame one)."""

    path: str
    frame_index: int | None
    sop_uid: str
    info: SeriesInfo  # shared by all images of a series
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as in PixelSpacing
    rows: int
    cols: int
    series_notes: list[str]  # header values corrected for the whole series, shared by its images
    image_type: tuple[str, ...]
    trigger_time: float | None
    inversion_time: float | None
    echo_time: float | None
    instance_number: int | None
    temporal_index: int | None
    nominal_slice_spacing: float | None  # SpacingBetweenSlices, else SliceThickness
    cardiac_images: int | None  # CardiacNumberOfImages: the cine phases per slice

    def frame_order(self) -> tuple:
        def last_if_missing(value: float | None) -> tuple[bool, float]:
            return value is None, value or 0.0

        return (
            last_if_missing(self.trigger_time),
            last_if_missing(self.inversion_time),
            last_if_missing(self.echo_time),
            last_if_missing(self.instance_number),
            last_if_missing(self.temporal_index),
            self.frame_index or 0,
            self.path,
        )


class _Skipped(Exception):
    """A file that cannot contribute images, and why."""

    def __init__(self, reason: str, severity: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.severity = severity


def is_file_list(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(FILE_LIST_SUFFIX) and os.path.isfile(path)


def write_file_list(files, path: str | os.PathLike) -> str:
    """Write ``files`` as a study to read where they are (``path`` gets FILE_LIST_SUFFIX); the list's path.
    Raises FileNotFoundError naming a missing file before writing."""
    files = [os.path.abspath(f) for f in files]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(files)} files of the study are missing, e.g. {missing[0]}")
    path = os.fspath(path)
    path = path if path.endswith(FILE_LIST_SUFFIX) else path + FILE_LIST_SUFFIX
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{f}\n" for f in files)
    return path


def index_study(folder: str | os.PathLike, *, recursive: bool = True) -> StudyIndex:
    """Index every DICOM image under ``folder`` (or listed in a file list) into stacks (headers only),
    collecting problems."""
    root = os.fspath(folder)
    index = StudyIndex(root=root)
    if not (os.path.isdir(root) or is_file_list(root)):
        reason = "not a folder" if os.path.exists(root) else "path does not exist"
        index.problems.append(Problem(root, reason))
        return index
    listed = is_file_list(root)
    _index(index, _listed_files(root, index.problems) if listed else _files(root, recursive, index.problems))
    if index.n_files == 0:
        index.problems.append(Problem(root, "empty file list: no files" if listed else "empty folder: no files found"))
    return index


def index_files(paths: Sequence[str | os.PathLike], root: str = "") -> StudyIndex:
    """Index the DICOM images among ``paths`` (one study's files wherever they lie, e.g. as a
    DICOM database lists them); ``root`` names them in messages."""
    index = StudyIndex(root=root)
    existing = []
    for path in map(os.fspath, paths):
        if os.path.isfile(path):
            existing.append(path)
        else:
            index.problems.append(Problem(path, "not a regular file" if os.path.exists(path) else "path does not exist"))
    _index(index, existing)
    return index


def _index(index: StudyIndex, paths: Iterable[str]) -> None:
    images: list[_Image] = []
    first_file_of_sop: dict[str, str] = {}
    series_infos: dict[str, tuple[SeriesInfo, list[str]]] = {}
    for path in paths:
        index.n_files += 1
        try:
            ds, pixel_bytes = _read_header(path)
            index.n_dicom_files += 1
            file_images = _images_of(path, ds, pixel_bytes, series_infos)
        except _Skipped as skipped:
            index.problems.append(Problem(path, skipped.reason, skipped.severity))
            continue
        except Exception as exc:  # a malformed header can fail in any of pydicom's converters
            index.problems.append(Problem(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})"))
            continue
        sop_uid = file_images[0].sop_uid
        if sop_uid in first_file_of_sop:
            reason = f"duplicate SOPInstanceUID {sop_uid} (also in {first_file_of_sop[sop_uid]}); ignored"
            index.problems.append(Problem(path, reason, "warning"))
            continue
        first_file_of_sop[sop_uid] = path
        images += file_images

    by_series: dict[str, list[_Image]] = defaultdict(list)
    for image in images:
        by_series[image.info.series_uid].append(image)
    for series_images in by_series.values():
        for stack_images in _split_into_stacks(series_images):
            index.stacks.append(_build_stack(stack_images, index.problems))
    index.stacks.sort(key=lambda s: (s.info.series_number is None, s.info.series_number or 0))
    _refine_orientations(index.stacks)


def _listed_files(file_list: str, problems: list[Problem]):
    """The files a file list names (one a line), in its order; a missing one is a problem."""
    with open(file_list, encoding="utf-8") as handle:
        for line in handle:
            path = line.rstrip("\r\n")
            if not path:
                continue
            if os.path.isfile(path):
                yield path
            else:
                problems.append(Problem(path, f"listed in {file_list} but not a file"))


def _files(root: str, recursive: bool, problems: list[Problem]):
    """Regular, non-hidden files under ``root`` in a stable order, at most MAX_FOLDER_DEPTH folders down.

    An explicit stack, not recursion: os.walk recurses before Python 3.12 and overflows on a
    tree 1000 folders deep. Links to folders are not followed (as in os.walk), so no loops.
    """
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            problems.append(Problem(folder, f"cannot list folder: {error.strerror}"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if not entry.is_symlink():
                    subfolders.append(entry.path)
            elif entry.is_file():
                yield entry.path
            else:
                problems.append(
                    Problem(entry.path, "not a regular file (broken link, pipe or device); skipped", "warning")
                )
        if not recursive:
            return
        if depth >= MAX_FOLDER_DEPTH:
            reason = f"more than {MAX_FOLDER_DEPTH} folder levels below {root}; not searched"
            problems += [Problem(subfolder, reason, "warning") for subfolder in subfolders]
            continue
        pending += [(subfolder, depth + 1) for subfolder in reversed(subfolders)]


def _read_header(path: str) -> tuple[Dataset, tuple[int, int] | None]:
    """The file's header, without a single pixel byte, and the pixel data's (declared, present) bytes.

    ``stop_before_pixels`` leaves the file positioned at the pixel data element, so
    reading that element's tag and length tells whether pixel data exists and whether
    the file is long enough to hold it. ``defer_size`` was rejected: it still scans
    compressed (undefined-length) pixel data to find its end.
    Raises ``_Skipped`` only for files that are not readable DICOM at all.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise _Skipped("empty file (0 bytes)")
        with _HeaderReader(path) as fp:
            try:
                ds = _dcmread_header(fp)
            except Exception:
                if fp.refused:  # pydicom turns some read errors into its own: say why reading stopped
                    raise _Skipped(fp.refused) from None
                raise
            return ds, _pixel_data_bytes(fp, ds, size)
    except OSError as exc:
        raise _Skipped(f"cannot read file: {exc.strerror or exc}") from exc


class _HeaderReader(io.BufferedReader):
    """A file that stops a header parse running away: past MAX_HEADER_BYTES, or through a run of zeros.

    pydicom reads zero bytes as endless empty elements (or sequence items), so a valid header
    followed by a hole (a sparse or unfinished copy) would keep it busy for hours on a 2 GiB
    file; and an element claiming gigabytes would be read into memory whole.
    """

    def __init__(self, path: str) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.refused = ""
        self._size = os.fstat(self.fileno()).st_size
        self._reads = self._zero_reads = self._zeros_from = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self._reads += 1
        # Where the file is costs a system call: asked for big reads, and every 4096th small one.
        if size is None or size < 0 or size > 4096 or self._reads % 4096 == 0:
            start = self.tell()
            end = self._size if size is None or size < 0 else start + size  # a deflated file is read whole
            if end > MAX_HEADER_BYTES:
                self.refused = (
                    f"the header goes on past {MAX_HEADER_BYTES >> 20} MiB (from byte {start}): corrupt or not DICOM"
                )
                raise _Skipped(self.refused)
        data = super().read(size)
        # Element and item headers are read 4 to 8 bytes at a time; real ones are never all zero
        # many times in a row.
        if 0 < len(data) <= 16 and not any(data):
            if not self._zero_reads:
                self._zeros_from = self.tell() - len(data)
            self._zero_reads += 1
            if self._zero_reads > 1000:
                self.refused = (
                    f"only zero bytes from byte {self._zeros_from} on, inside the header: a hole or unfinished copy"
                )
                raise _Skipped(self.refused)
        else:
            self._zero_reads = 0
        return data


def _dcmread_header(fp: BinaryIO) -> Dataset:
    try:
        return pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        # Files without the preamble and "DICM" marker (ACR-NEMA style) start with a group 0008 element.
        fp.seek(0)
        if fp.read(2) != b"\x08\x00":
            raise _not_dicom(fp) from None
        fp.seek(0)
        return pydicom.dcmread(fp, stop_before_pixels=True, force=True)


def _not_dicom(fp: BinaryIO) -> _Skipped:
    fp.seek(0)
    start = fp.read(8)
    kind = next((name for magic, name in _KNOWN_NOT_DICOM.items() if start.startswith(magic)), None)
    suffix = os.path.splitext(getattr(fp, "name", ""))[1].lower()
    if kind or suffix in _DOCUMENT_SUFFIXES:
        return _Skipped(f"not a DICOM file ({kind or 'a ' + suffix + ' file'}); skipped", "info")
    return _Skipped("not a DICOM file (no 'DICM' marker)")


def _pixel_data_bytes(fp: BinaryIO, ds: Dataset, file_size: int) -> tuple[int, int] | None:
    """(declared length, bytes present) of the pixel data element at ``fp``, None if there is none."""
    if getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return _UNDEFINED_LENGTH, 0  # pydicom inflated the data set in memory: the file can't be peeked at
    implicit_vr, little_endian = ds.original_encoding
    start = fp.tell()
    header = fp.read(12)
    if len(header) < 8:
        return None
    endian = "<" if little_endian is not False else ">"
    group, element = struct.unpack(endian + "HH", header[:4])
    if (group << 16 | element) not in _PIXEL_DATA_TAGS:
        return None
    # Implicit VR: tag, 4-byte length. Explicit VR (OB/OW/OF/OD): tag, VR, 2 reserved, 4-byte length.
    header_size = 8 if implicit_vr else 12
    (length,) = struct.unpack(endian + "L", header[header_size - 4 : header_size])
    return length, max(file_size - start - header_size, 0)


def _images_of(
    path: str, ds: Dataset, pixel_bytes: tuple[int, int] | None, series_infos: dict[str, tuple[SeriesInfo, list[str]]]
) -> list[_Image]:
    """The placeable images of one DICOM file, or ``_Skipped`` saying why there are none.

    Series-level facts are read from the first file of each series only (they are the
    same in all its files, and reading them is a third of the indexing time); what varies
    per image (geometry, timing, image type) is read for every image.
    """
    file_meta = getattr(ds, "file_meta", None) or Dataset()
    sop_class = UID(str(ds.get("SOPClassUID") or file_meta.get("MediaStorageSOPClassUID") or ""))
    if sop_class == _MEDIA_STORAGE_DIRECTORY:
        raise _Skipped("DICOMDIR (media directory) skipped; images are found by walking the folder", "info")
    if sop_class == _SEGMENTATION_STORAGE:
        raise _Skipped(
            "DICOM Segmentation (labels derived from images, e.g. an earlier analysis), not an image; skipped", "info"
        )
    if len(ds) == 0:
        raise _Skipped("truncated DICOM file: nothing after the file meta header")
    last = ds.get_item(max(ds.keys()))
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH and len(last.value or b"") < last.length:
        raise _Skipped("truncated DICOM file: it ends inside the header")
    if pixel_bytes is None:
        if "Rows" in ds or "Image Storage" in sop_class.name:
            raise _Skipped(f"{sop_class.name or 'image'} without pixel data: the file is truncated or incomplete")
        raise _Skipped(f"no pixel data ({sop_class.name or 'unknown SOP class'}); not an image, skipped", "info")
    declared, present = pixel_bytes
    if declared != _UNDEFINED_LENGTH and present < declared:
        raise _Skipped(f"truncated file: pixel data needs {declared} bytes but only {present} are present")
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    if not sop_uid:
        raise _Skipped("missing SOPInstanceUID")
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise _Skipped(f"colour image (SamplesPerPixel {ds.SamplesPerPixel}) is not supported; skipped", "warning")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows == 0 or cols == 0:
        raise _Skipped("missing Rows/Columns")

    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames < 1:
        raise _Skipped(f"invalid NumberOfFrames {n_frames}")
    _check_pixel_size(ds, rows, cols, n_frames, declared)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != n_frames:
        # Checked before building one image per frame: a forged NumberOfFrames would exhaust memory.
        raise _Skipped(f"NumberOfFrames is {n_frames} but PerFrameFunctionalGroupsSequence describes {len(per_frame)}")
    if per_frame is None and n_frames > 1:
        # A classic multi-frame image (e.g. an old single-slice cine): all frames share the
        # top-level geometry, and FrameTime or FrameTimeVector times them.
        missing = [keyword for keyword in _GEOMETRY if ds.get(keyword) in (None, "", [])]
        if missing:
            raise _Skipped(
                f"multi-frame image ({n_frames} frames) without {', '.join(missing)}: its frames cannot be placed in space"
            )
    frame_indices: list[int | None] = list(range(n_frames)) if n_frames > 1 or per_frame is not None else [None]

    series_uid = str(ds.get("SeriesInstanceUID", ""))
    if series_uid not in series_infos:
        series_infos[series_uid] = _series_info(FrameAttributes(ds, frame_indices[0]))
    info, notes = series_infos[series_uid]
    images = []
    for frame_index in frame_indices:
        attributes = FrameAttributes(ds, frame_index)
        where = "" if frame_index is None else f"frame {frame_index + 1}: "
        images.append(_image(path, frame_index, sop_uid, info, notes, rows, cols, attributes, where))
    if per_frame is None and n_frames > 1:
        for image, time in zip(images, _classic_frame_times(ds, n_frames, images[0].trigger_time)):
            image.trigger_time = time
    return images


def _check_pixel_size(ds: Dataset, rows: int, cols: int, n_frames: int, declared: int) -> None:
    """Refuse, before anything is decoded, pixel data too large to load or smaller than the header says."""
    voxels = rows * cols * n_frames
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (1, 8, 16, 32, 64):
        raise _Skipped(f"invalid BitsAllocated {ds.get('BitsAllocated')}")
    needed = (voxels * bits + 7) // 8
    if declared != _UNDEFINED_LENGTH and declared < needed:
        raise _Skipped(
            f"pixel data holds {declared} bytes, but {rows} rows x {cols} columns x {n_frames} frame(s) "
            f"x {bits} bits need {needed}"
        )
    if voxels > MAX_VOXELS:  # compressed data can't be measured before decoding: its size is capped
        raise _Skipped(
            f"{rows} rows x {cols} columns x {n_frames} frame(s) = {voxels} voxels, "
            f"over the reader's limit of {MAX_VOXELS} (2 GiB as float32)"
        )


def _classic_frame_times(ds: Dataset, n_frames: int, start: float | None) -> list[float | None]:
    """Frame times of a classic multi-frame image: FrameTimeVector holds the increments, FrameTime the step."""
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) == n_frames:
        steps = [_float(value) or 0.0 for value in vector]
    elif _float(ds.get("FrameTime")):
        steps = [0.0] + [_float(ds.get("FrameTime"))] * (n_frames - 1)
    else:
        return [None] * n_frames
    return [float(t) for t in (start or 0.0) + np.cumsum(steps)]


def _image(
    path: str,
    frame_index: int | None,
    sop_uid: str,
    info: SeriesInfo,
    series_notes: list[str],
    rows: int,
    cols: int,
    a: FrameAttributes,
    where: str,
) -> _Image:
    geometry = {keyword: a.get(keyword) for keyword in _GEOMETRY}
    missing = [keyword for keyword, value in geometry.items() if value is None]
    if missing:
        raise _Skipped(f"{where}missing {', '.join(missing)}: the image cannot be placed in space")
    try:
        position = np.array([float(v) for v in geometry["ImagePositionPatient"]])
        orientation = np.array([float(v) for v in geometry["ImageOrientationPatient"]])
        pixel_spacing = tuple(float(v) for v in geometry["PixelSpacing"])
    except (TypeError, ValueError) as exc:
        raise _Skipped(f"{where}unreadable geometry ({exc})") from exc
    if (
        position.size != 3
        or not np.all(np.isfinite(position))
        or len(pixel_spacing) != 2
        or not all(s > 0 for s in pixel_spacing)
    ):
        raise _Skipped(f"{where}invalid ImagePositionPatient {position.tolist()} or PixelSpacing {list(pixel_spacing)}")
    row_dir, col_dir = orientation[:3], orientation[3:]
    lengths = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    # Written with limited precision, but unit and perpendicular; NaN fails every comparison.
    if not (orientation.size == 6 and min(lengths) > 0.5 and abs(row_dir @ col_dir) < 0.01 * lengths[0] * lengths[1]):
        raise _Skipped(
            f"{where}invalid ImageOrientationPatient {orientation.tolist()}: directions are not unit and perpendicular"
        )
    row_dir, col_dir = row_dir / lengths[0], col_dir / lengths[1]
    return _Image(
        path=path,
        frame_index=frame_index,
        sop_uid=sop_uid,
        info=info,
        position=position,
        row_dir=row_dir,
        col_dir=col_dir,
        pixel_spacing=pixel_spacing,
        rows=rows,
        cols=cols,
        series_notes=series_notes,
        image_type=_strings(a.get("FrameType", "ImageType")),
        trigger_time=_float(a.get("NominalCardiacTriggerDelayTime", "TriggerTime")),
        inversion_time=_float(a.get("InversionTime", "InversionTimes")),
        echo_time=_float(a.get("EchoTime", "EffectiveEchoTime")),
        instance_number=_int(a.get("InstanceNumber")),
        temporal_index=_int(a.get("TemporalPositionIndex")),
        nominal_slice_spacing=_float(a.get("SpacingBetweenSlices", "SliceThickness")),
        cardiac_images=_int(a.get("CardiacNumberOfImages")),
    )


def _series_info(a: FrameAttributes) -> tuple[SeriesInfo, list[str]]:
    """The series' header facts, and a note for every value that had to be corrected."""
    notes: list[str] = []
    field_strength = _float(a.get("MagneticFieldStrength"))
    if field_strength is not None and field_strength > 100:
        # No MR magnet reaches 100 T, and a field written in gauss is at least 1000 (0.1 T).
        notes.append(f"MagneticFieldStrength {field_strength:g} read as gauss: {field_strength / 1e4:g} T")
        field_strength /= 1e4
    elif field_strength is not None and field_strength > 30:
        notes.append(f"MagneticFieldStrength {field_strength:g} is neither tesla nor gauss; ignored")
        field_strength = None
    heart_rate = _float(a.get("HeartRate"))
    nominal_interval = _float(a.get("NominalInterval"))
    if not heart_rate and nominal_interval:
        heart_rate = 60000.0 / nominal_interval
    info = SeriesInfo(
        modality=_text(a.get("Modality")),
        study_uid=_text(a.get("StudyInstanceUID")),
        series_uid=_text(a.get("SeriesInstanceUID")),
        series_number=_int(a.get("SeriesNumber")),
        series_description=_text(a.get("SeriesDescription")),
        protocol_name=_text(a.get("ProtocolName")),
        sequence_name=_text(a.get("SequenceName", "PulseSequenceName")),
        image_type=_strings(a.get("FrameType", "ImageType")),
        scanning_sequence=_strings(a.get("ScanningSequence")),
        sequence_variant=_strings(a.get("SequenceVariant")),
        echo_time=_float(a.get("EchoTime", "EffectiveEchoTime")),
        repetition_time=_float(a.get("RepetitionTime")),
        inversion_time=_float(a.get("InversionTime", "InversionTimes")),
        flip_angle=_float(a.get("FlipAngle")),
        slice_thickness=_float(a.get("SliceThickness")),
        heart_rate=heart_rate,
        study_date=_text(a.get("StudyDate")),
        study_time=_text(a.get("StudyTime")),
        study_description=_text(a.get("StudyDescription")),
        patient_id=_text(a.get("PatientID")),
        patient_name=_text(a.get("PatientName")),
        patient_birth_date=_text(a.get("PatientBirthDate")),
        patient_sex=_text(a.get("PatientSex")),
        patient_age=_text(a.get("PatientAge")),
        patient_size=_float(a.get("PatientSize")),
        patient_weight=_float(a.get("PatientWeight")),
        frame_of_reference_uid=_text(a.get("FrameOfReferenceUID")),
        manufacturer=_text(a.get("Manufacturer")),
        field_strength=field_strength,
    )
    return info, notes


def _split_into_stacks(images: list[_Image]) -> list[list[_Image]]:
    """Split one series into groups that can share a single [slices, frames] grid."""
    stacks: list[list[_Image]] = []
    for image in images:
        for stack in stacks:
            if _fits_stack(stack[0], image):
                stack.append(image)
                break
        else:
            stacks.append([image])
    return stacks


def _fits_stack(a: _Image, b: _Image) -> bool:
    if (a.rows, a.cols, a.image_type) != (b.rows, b.cols, b.image_type):
        return False
    if not np.allclose(a.pixel_spacing, b.pixel_spacing, rtol=1e-3, atol=0):
        return False
    if a.row_dir @ b.row_dir < _SAME_DIRECTION or a.col_dir @ b.col_dir < _SAME_DIRECTION:
        return False
    # Slices of one stack may only be offset along the normal, by less than half a pixel in-plane.
    offset = b.position - a.position
    tolerance = 0.5 * min(a.pixel_spacing)
    return abs(offset @ a.row_dir) <= tolerance and abs(offset @ a.col_dir) <= tolerance


def _build_stack(images: list[_Image], problems: list[Problem]) -> StackEntry:
    first = images[0]
    normal = np.cross(first.row_dir, first.col_dir)
    normal /= np.linalg.norm(normal)

    # Cluster positions along the normal into slices; a tenth of the nominal spacing
    # separates "same slice" from "next slice" (0.01 mm when the header gives none).
    depth = np.array([image.position @ normal for image in images])
    tolerance = max(0.01, 0.1 * abs(first.nominal_slice_spacing or 0.0))
    slices: list[list[int]] = []
    for i in np.argsort(depth, kind="stable"):
        if slices and depth[i] - depth[slices[-1][0]] <= tolerance:
            slices[-1].append(i)
        else:
            slices.append([i])

    warnings: list[str] = list(first.series_notes)
    counts = Counter(len(members) for members in slices)
    n_frames = max(counts, key=lambda n: (counts[n], n))  # the majority frame count; ties keep more frames
    if len(counts) > 1:
        for members in slices:
            if len(members) != n_frames:
                reason = f"slice at {depth[members[0]]:.2f} mm has {len(members)} frame(s), the rest of its stack {n_frames}; slice dropped"
                problems.append(Problem(images[members[0]].path, reason, "warning"))
        slices = [members for members in slices if len(members) == n_frames]
        warnings.append(f"{sum(counts.values()) - counts[n_frames]} slice(s) with a deviating frame count dropped")

    grid = [sorted((images[i] for i in members), key=_Image.frame_order) for members in slices]
    positions = np.array([float(np.mean(depth[members])) for members in slices])
    if len(positions) > 1:
        gaps = np.diff(positions)
        slice_spacing = float(np.median(gaps))
        if gaps.max() > 1.5 * gaps.min():  # includes any gap > 1.5x the median, e.g. a missing slice
            warnings.append(
                f"irregular slice spacing: gaps {gaps.min():.2f}-{gaps.max():.2f} mm, geometry uses the median {slice_spacing:.2f} mm"
            )
    else:
        slice_spacing = abs(first.nominal_slice_spacing or 0.0) or 1.0

    origin_image = grid[0][0]
    ijk_to_lps = geometry_matrix(
        origin_image.position,
        origin_image.row_dir,
        origin_image.col_dir,
        np.array([origin_image.pixel_spacing[1], origin_image.pixel_spacing[0], slice_spacing]),
        normal,
    )
    info = dataclasses.replace(
        origin_image.info,
        image_type=origin_image.image_type,
        echo_time=origin_image.echo_time,
        inversion_time=origin_image.inversion_time,
        extra=dict(origin_image.info.extra),
    )
    # Multi-echo and inversion-recovery series (e.g. T1/T2* mapping) vary TE/TI over frames.
    for key, values in (
        ("inversion_times", _per_frame(grid, "inversion_time")),
        ("echo_times", _per_frame(grid, "echo_time")),
    ):
        if values is not None and np.ptp(values) > 0:
            info.extra[key] = values.tolist()

    return StackEntry(
        info=info,
        ijk_to_lps=ijk_to_lps,
        shape=(len(grid), n_frames, first.rows, first.cols),
        frame_refs=[[(image.path, image.frame_index) for image in row] for row in grid],
        sop_instance_uids=[[image.sop_uid for image in row] for row in grid],
        frame_times=_frame_times(grid, warnings),
        slice_positions=positions,
        orientation=orientation_label(normal),
        warnings=warnings,
    )


def _frame_times(grid: list[list[_Image]], warnings: list[str]) -> np.ndarray | None:
    """Trigger times per frame; for a cine whose headers lack them, even steps over the R-R interval."""
    times = _per_frame(grid, "trigger_time")
    first, n_frames = grid[0][0], len(grid[0])
    if n_frames > 1 and (times is None or not np.ptp(times) > 0) and first.cardiac_images == n_frames:
        if first.info.heart_rate:  # from HeartRate or NominalInterval (the R-R interval)
            interval = 60000.0 / first.info.heart_rate
            times = np.arange(n_frames) * interval / n_frames
            warnings.append(
                f"no trigger times in the headers: the {n_frames} cardiac phases are spread evenly over "
                f"the R-R interval ({interval:.0f} ms), in instance-number order"
            )
    return times


def _per_frame(grid: list[list[_Image]], attribute: str) -> np.ndarray | None:
    """Median over slices of a per-image time for each frame, or None if no image has it."""
    values = np.array([[getattr(image, attribute) for image in row] for row in grid], dtype=float)
    if np.isnan(values).all():
        return None
    return np.array(
        [np.median(column[~np.isnan(column)]) if (~np.isnan(column)).any() else np.nan for column in values.T]
    )


def _refine_orientations(stacks: list[StackEntry]) -> None:
    """Label planes against this study's own long axis when it has a short-axis stack.

    Short-axis planes are perpendicular to the long axis, so the normal of an oblique
    multi-slice SAX stack is a far better long axis than the population average.
    """
    short_axis = [s for s in stacks if s.orientation == "SAX-like" and s.shape[0] >= 5]
    if not short_axis:
        return
    long_axis = max(short_axis, key=lambda s: (s.shape[0], s.shape[1])).normal
    for stack in stacks:
        stack.orientation = orientation_label(stack.normal, long_axis=long_axis)


# --- header value conversion ----------------------------------------------------------


def _macro_items(functional_groups: Dataset) -> list[Dataset]:
    return [element.value[0] for element in functional_groups if element.VR == "SQ" and len(element.value)]


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (MultiValue, list, tuple)) and len(value) else value


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(_first(value))
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (MultiValue, list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


# --- summary -------------------------------------------------------------------------------


def summarize(index: StudyIndex, max_problems_per_group: int = 20) -> str:
    """A readable report of an index: the stacks per series, then the problems by severity."""
    lines = [
        f"Study folder: {index.root}",
        f"{index.n_files} file(s), {index.n_dicom_files} DICOM, {len(index.stacks)} stack(s)",
    ]
    if index.stacks:
        info = index.stacks[0].info
        patient = " ".join(filter(None, [info.patient_id, info.patient_name])) or "unknown"
        lines.append(
            f"Patient: {patient}; study of {info.study_date or 'unknown date'} {info.study_description}".rstrip()
        )
    series: dict[str, list[StackEntry]] = defaultdict(list)
    for stack in index.stacks:
        series[stack.info.series_uid].append(stack)
    for stacks in series.values():
        info = stacks[0].info
        number = "?" if info.series_number is None else info.series_number
        lines.append(
            f"\nSeries {number}: {info.series_description or info.protocol_name or '(no description)'} [{info.modality}]"
        )
        for i, stack in enumerate(stacks, 1):
            lines.append(f"  stack {i}: {stack.describe()}")
            lines += [f"    warning: {warning}" for warning in stack.warnings]
    if index.problems:
        lines.append(f"\nProblems ({len(index.problems)}):")
        for severity in ("error", "warning", "info"):
            group = [p for p in index.problems if p.severity == severity]
            if group:
                lines.append(f"  {severity} ({len(group)}):")
                lines += [f"    {problem}" for problem in group[:max_problems_per_group]]
                if len(group) > max_problems_per_group:
                    lines.append(f"    ... and {len(group) - max_problems_per_group} more")
    return "\n".join(lines)
