"""Unlabeled 2D images for self-supervised pretraining, from any mix of sources.

``UnlabeledImages(sources)`` is a torch Dataset with one item per 2D image: every slice
(and every frame) of every stack found under the given paths. A path may be

* an ``.npz`` file, or a folder of them, with an ``image`` array [slices, H, W] (or
  [H, W], or [slices, frames, H, W]); the shared ACDC (float16 0..1) and EMIDEC (uint8)
  files are of this kind. They carry no pixel spacing: ``npz_spacing_mm`` (1.5 mm, the
  middle of ACDC's 1.37-1.68 mm) is assumed;
* a NIfTI / NRRD / MetaImage volume, or a folder containing some (``volume_io``);
* a DICOM study folder (any layout: the DICOM reader indexes it from the headers), or a
  single DICOM file (its series).

Folders are walked recursively and may mix the kinds. Unreadable files are logged
(naming the file and the reason) and skipped; they never stop training.

Memory stays bounded: start-up reads headers only (npz array headers, volume headers,
DICOM headers) and keeps a compact (source, slice, frame) index. Pixels are read when an
item is requested: one DICOM file per image, or the whole npz / volume file, through a
small least-recently-used cache of decoded files (``cache_mb`` per process, so per
DataLoader worker) that serves the other slices of a file read recently.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import torch
from torch.utils.data import Dataset

from CMRFoundationLib.dicom import index_study
from CMRFoundationLib.dicom.index import FrameAttributes, rescale_of
from CMRFoundationLib.preprocess import PreprocessConfig, preprocess
from CMRFoundationLib.volume_io import VOLUME_EXTENSIONS, is_volume_file, read_any, read_volume

log = logging.getLogger(__name__)

NPZ = "npz"
VOLUME = "volume"
DICOM = "dicom"  # one indexed DICOM stack; its images are separate files (or frames of one)
DICOM_SERIES = "dicom-series"  # a single DICOM file given directly: loaded with its series

# Files in a walked folder that are certainly not images (not worth a DICOM header read).
_NOT_IMAGES = (".json", ".md", ".txt", ".csv", ".tsv", ".py", ".yaml", ".yml", ".log", ".pdf", ".html",
               ".png", ".jpg", ".jpeg", ".gif", ".zip", ".gz", ".tar", ".pt", ".safetensors", ".onnx")


@dataclass
class _Source:
    """One file or stack the index points into."""

    kind: str
    path: str
    shape: tuple[int, int, int, int]  # (slices, frames, rows, cols)
    spacing: tuple[float, float]  # (row_mm, col_mm)
    frame_refs: list[list[tuple[str, int | None]]] | None = None  # DICOM: file and frame of each image
    stack_index: int = 0  # DICOM_SERIES: which stack of the series


class _FileCache:
    """Least-recently-used decoded files, bounded by total bytes (the newest entry is always kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Any, load: Callable[[], tuple[Any, int]]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value, size = load()
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped
        return value


class UnlabeledImages(Dataset):
    """Every 2D image (slice x frame) under ``sources``; see the module docstring.

    An item is ``(image, spacing)``: float32 tensor [H, W] in the file's own units and a
    float32 tensor (row_mm, col_mm), or whatever ``transform(image, spacing)`` returns
    (e.g. ``PretrainTransform``: pre-processing to 1 mm, then multi-crop views).
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike],
        transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
        npz_spacing_mm: float = 1.5,
        npz_key: str = "image",
        cache_mb: float = 256.0,
    ) -> None:
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        self.transform = transform
        self.npz_spacing_mm = float(npz_spacing_mm)
        self.npz_key = npz_key
        self.cache_mb = cache_mb
        self.sources: list[_Source] = []
        self.skipped: list[tuple[str, str]] = []  # (path, reason) of every file left out
        for path in sources:
            self._add_path(os.path.abspath(os.fspath(path)))

        # The index: one row per image, (source, slice, frame), in int32 to stay small.
        rows = [
            (s, k, t)
            for s, source in enumerate(self.sources)
            for k in range(source.shape[0])
            for t in range(source.shape[1])
        ]
        self._index = np.array(rows, dtype=np.int32).reshape(-1, 3)
        self._cache: _FileCache | None = None  # created lazily, so that every DataLoader worker has its own
        self._failed: set[int] = set()  # sources whose pixels could not be read

    # -- indexing ---------------------------------------------------------------------

    def _skip(self, path: str, reason: str) -> None:
        log.warning("skipping %s: %s", path, reason)
        self.skipped.append((path, reason))

    def _add_path(self, path: str) -> None:
        if os.path.isdir(path):
            self._add_folder(path)
        elif not os.path.exists(path):
            self._skip(path, "path does not exist")
        elif path.lower().endswith(".npz"):
            self._add_npz(path)
        elif is_volume_file(path):
            self._add_volume(path)
        else:
            self._add_dicom_file(path)

    def _add_folder(self, root: str) -> None:
        """npz and volume files are indexed one by one; everything else is offered to the DICOM reader."""
        maybe_dicom = False
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = os.path.join(folder, name)
                lower = name.lower()
                if lower.endswith(".npz"):
                    self._add_npz(path)
                elif lower.endswith(VOLUME_EXTENSIONS):
                    self._add_volume(path)
                elif not lower.endswith(_NOT_IMAGES):
                    maybe_dicom = True
        if maybe_dicom:
            self._add_dicom_folder(root)

    def _add_npz(self, path: str) -> None:
        try:
            shape = _npz_array_shape(path, self.npz_key)
        except _NoImages as reason:  # e.g. a label file next to the images: not an error
            log.info("ignoring %s: %s", path, reason)
            return
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            self._skip(path, f"unreadable npz file ({exc})")
            return
        if len(shape) == 2:
            shape4 = (1, 1, *shape)
        elif len(shape) == 3:
            shape4 = (shape[0], 1, shape[1], shape[2])
        elif len(shape) == 4:
            shape4 = tuple(shape)
        else:
            self._skip(path, f"'{self.npz_key}' has shape {shape}; expected [H, W], [S, H, W] or [S, F, H, W]")
            return
        spacing = (self.npz_spacing_mm, self.npz_spacing_mm)
        self._add_source(_Source(NPZ, path, shape4, spacing))

    def _add_volume(self, path: str) -> None:
        try:
            shape, spacing = _volume_header(path)
        except (RuntimeError, ValueError) as exc:
            self._skip(path, f"unreadable volume ({_first_line(exc)})")
            return
        self._add_source(_Source(VOLUME, path, shape, spacing))

    def _add_dicom_folder(self, root: str) -> None:
        index = index_study(root)
        for problem in index.problems:
            if problem.path.lower().endswith((".npz", *VOLUME_EXTENSIONS, *_NOT_IMAGES)):
                continue  # indexed above, or not meant to be an image
            if problem.severity == "info":  # skipped by design (DICOMDIR, structured report, ...)
                log.info("ignoring %s: %s", problem.path, problem.reason)
            else:
                self._skip(problem.path, problem.reason)
        for entry in index.stacks:
            col_mm, row_mm = entry.spacing[:2]
            refs = [list(row) for row in entry.frame_refs]
            self._add_source(_Source(DICOM, root, tuple(entry.shape), (float(row_mm), float(col_mm)), refs))

    def _add_dicom_file(self, path: str) -> None:
        """A single DICOM file stands for its series (read now: a series is small)."""
        stacks, problems = read_any(path)
        for problem in problems:
            self._skip(problem.path, problem.reason)
        for i, stack in enumerate(stacks):
            col_mm, row_mm = stack.spacing[:2]
            self._add_source(_Source(DICOM_SERIES, path, stack.pixels.shape, (float(row_mm), float(col_mm)), stack_index=i))

    def _add_source(self, source: _Source) -> None:
        if min(source.shape) < 1:
            self._skip(source.path, f"no images (shape {source.shape})")
            return
        if not all(np.isfinite(source.spacing)) or min(source.spacing) <= 0:
            self._skip(source.path, f"invalid pixel spacing {source.spacing}")
            return
        self.sources.append(source)

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def describe(self) -> str:
        """One line: how many images from how many sources of which kind, and how many files were skipped."""
        counts: dict[str, int] = {}
        for source in self.sources:
            counts[source.kind] = counts.get(source.kind, 0) + source.shape[0] * source.shape[1]
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        return f"{len(self)} images from {len(self.sources)} sources ({kinds or 'none'}); {len(self.skipped)} files skipped"

    def image(self, index: int) -> tuple[np.ndarray, tuple[float, float]]:
        """The raw 2D image (float32 [H, W]) and its (row_mm, col_mm) spacing; raises ValueError if unreadable."""
        s, k, t = (int(v) for v in self._index[index])
        source = self.sources[s]
        if self._cache is None:
            self._cache = _FileCache(int(self.cache_mb * 2**20))
        if source.kind == DICOM:
            image = self._dicom_image(source, k, t)
        else:
            pixels = self._cache.get(("file", source.path, source.stack_index), lambda: self._load_pixels(source))
            image = pixels[k, t]
        return np.asarray(image, dtype=np.float32), source.spacing

    def __getitem__(self, index: int) -> Any:
        # An image that cannot be read (or pre-processed: e.g. NaN pixels) is replaced by the
        # next readable one, so that one bad file cannot stop a long run; its source is
        # logged once and left out from then on.
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            source_id = int(self._index[i][0])
            if source_id in self._failed:
                continue
            try:
                image, spacing = self.image(i)
                image_t = torch.from_numpy(np.ascontiguousarray(image))
                spacing_t = torch.tensor(spacing, dtype=torch.float32)
                return (image_t, spacing_t) if self.transform is None else self.transform(image_t, spacing_t)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("skipping %s from now on: %s", self.sources[source_id].path, _first_line(exc))
                self._failed.add(source_id)
        raise RuntimeError(f"none of the {len(self.sources)} sources could be read (see the warnings above)")

    def _load_pixels(self, source: _Source) -> tuple[np.ndarray, int]:
        """All pixels [slices, frames, rows, cols] of an npz, volume or single-file DICOM source, and their bytes."""
        if source.kind == NPZ:
            if os.path.isfile(source.path) and not zipfile.is_zipfile(source.path):
                raise ValueError(f"{source.path}: not an npz (zip) file any more")
            with np.load(source.path) as archive:
                pixels = archive[self.npz_key]
            pixels = pixels.reshape(source.shape)
        elif source.kind == VOLUME:
            pixels = read_volume(source.path).pixels
        else:
            stacks, problems = read_any(source.path)
            if len(stacks) <= source.stack_index:
                reason = problems[0].reason if problems else "stack missing"
                raise ValueError(f"{source.path}: cannot load its series ({reason})")
            pixels = stacks[source.stack_index].pixels
        if pixels.shape != source.shape:
            raise ValueError(f"{source.path}: pixels are {pixels.shape}, indexed as {source.shape} (file changed?)")
        return pixels, pixels.nbytes

    def _dicom_image(self, source: _Source, k: int, t: int) -> np.ndarray:
        path, frame = source.frame_refs[k][t]
        ds, frames = self._cache.get(("dicom", path), lambda: _decode_dicom(path))
        rows, cols = source.shape[2:]
        if frames.shape[-2:] != (rows, cols):
            raise ValueError(f"{path}: image is {frames.shape[-2]}x{frames.shape[-1]}, expected {rows}x{cols} (file changed?)")
        slope, intercept = rescale_of(FrameAttributes(ds, frame))
        return frames[frame or 0].astype(np.float32) * slope + intercept


class PretrainTransform:
    """Pre-process one image to the 1 mm model grid, then make its multi-crop views.

    ``preprocess`` resamples to ``spacing_mm`` pixels, centre-crops/pads to ``size`` and
    scales intensities to [-1, 1] (98th percentile cap); ``views`` (e.g.
    ``MultiCropAugment``) turns that [1, size, size] image into the list of crops.
    """

    def __init__(self, views: Callable[[torch.Tensor], Any], size: int = 256, spacing_mm: float = 1.0,
                 percentile: float = 98.0) -> None:
        self.views = views
        self.config = PreprocessConfig(spacing_mm=spacing_mm, size=size, percentile=percentile)

    def __call__(self, image: torch.Tensor, spacing: torch.Tensor) -> Any:
        model_image, _ = preprocess(image.numpy()[None], tuple(spacing.tolist()), self.config)
        return self.views(torch.from_numpy(model_image))


# --- file access -----------------------------------------------------------------------------


class _NoImages(Exception):
    """An npz file without the image array (not an error: e.g. a label file)."""


def _npz_array_shape(path: str, key: str) -> tuple[int, ...]:
    """The shape of ``key`` in an npz file, from the array header only (no pixel data read)."""
    with zipfile.ZipFile(path) as archive:
        name = f"{key}.npy"
        if name not in archive.namelist():
            raise _NoImages(f"no '{key}' array (has {', '.join(n.removesuffix('.npy') for n in archive.namelist())})")
        with archive.open(name) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(stream)
    if not np.issubdtype(dtype, np.number):
        raise ValueError(f"'{key}' is not numeric (dtype {dtype})")
    return tuple(int(n) for n in shape)


def _volume_header(path: str) -> tuple[tuple[int, int, int, int], tuple[float, float]]:
    """(slices, frames, rows, cols) and (row_mm, col_mm) as ``read_volume`` will see them, from the header."""
    import SimpleITK as sitk  # only volume files need it; a GPU machine without it reads .npz

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    size, spacing = reader.GetSize(), reader.GetSpacing()
    dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
    if components > 1 and dimension != 3:
        raise ValueError(f"multi-component {dimension}D images are not supported")
    cols, rows = size[0], size[1]
    if dimension == 2:
        shape = (1, 1, rows, cols)
    elif dimension == 3:
        shape = (size[2], components, rows, cols)  # read_volume puts components on the frame axis
    elif dimension == 4:
        shape = (size[2], size[3], rows, cols)
    else:
        raise ValueError(f"{dimension}D images are not supported")
    return shape, (float(spacing[1]), float(spacing[0]))


def _decode_dicom(path: str) -> tuple[tuple[pydicom.Dataset, np.ndarray], int]:
    """A DICOM file's dataset and its stored frames [frames, rows, cols], and their bytes."""
    try:
        ds = pydicom.dcmread(path)
        array = ds.pixel_array
    except OSError:
        raise
    except Exception as exc:  # header and pixel decoders fail in many ways; all mean "unusable"
        raise ValueError(f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    frames = array.reshape((-1, *array.shape[-2:]))
    return (ds, frames), frames.nbytes


def _first_line(error: BaseException) -> str:
    """A one-line reason; ITK's messages end with the description after lines of C++ context."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if isinstance(error, RuntimeError) else lines[0]
