"""Volumes on disk (NIfTI, NRRD, MetaImage) to and from ImageStack, plus ``read_any``.

SimpleITK does the file formats; ITK already works in LPS, so its origin, spacing and
direction map straight onto ``ijk_to_lps``. Time (or any fourth axis, including NRRD's
multi-component "list" axis as Slicer writes sequences) becomes the frame axis.
"""

from __future__ import annotations

import os

import numpy as np

from .dicom import StackLoadError, index_study, load_stack, read_study
from .problems import Problem
from .stack import ImageStack, SeriesInfo

VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(VOLUME_EXTENSIONS)


def read_volume(path: str | os.PathLike) -> ImageStack:
    """Read a 2D, 3D or 4D volume as [slices, frames, rows, cols]; ValueError if that's impossible."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if not is_volume_file(path):
        raise ValueError(f"{path}: unsupported file type (expected one of {', '.join(VOLUME_EXTENSIONS)})")
    import SimpleITK as sitk  # here, not at the top: training on a machine without it reads .npz only

    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read volume ({_itk_message(exc)})") from exc

    dimension = image.GetDimension()
    if dimension not in (2, 3, 4):
        raise ValueError(f"{path}: {dimension}D images are not supported")
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # numpy axes reversed: [(t,) (z,) y, x (, components)]
    if image.GetNumberOfComponentsPerPixel() > 1:
        if dimension != 3:
            raise ValueError(f"{path}: multi-component {dimension}D images are not supported")
        pixels = np.moveaxis(array, -1, 1)  # [z, y, x, c] -> [z, c, y, x]
    elif dimension == 4:
        pixels = np.moveaxis(array, 0, 1)  # [t, z, y, x] -> [z, t, y, x]
    elif dimension == 3:
        pixels = array[:, None]
    else:
        pixels = array[None, None]

    spatial = min(dimension, 3)
    direction = np.array(image.GetDirection()).reshape(dimension, dimension)[:spatial, :spatial]
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:spatial, :spatial] = direction * np.array(image.GetSpacing()[:spatial])
    ijk_to_lps[:spatial, 3] = image.GetOrigin()[:spatial]
    info = SeriesInfo(modality="", series_description=os.path.basename(path))
    return ImageStack(pixels=np.ascontiguousarray(pixels), ijk_to_lps=ijk_to_lps, info=info)


def write_volume(
    stack_or_array: ImageStack | np.ndarray, ijk_to_lps: np.ndarray | None, path: str | os.PathLike
) -> None:
    """Write [slices, frames, rows, cols] (or [slices, rows, cols]) as 3D, or 4D when there are several frames.

    ``ijk_to_lps`` may be None for an ImageStack (its own geometry is used). The axes
    must be perpendicular: NIfTI and NRRD cannot store a sheared grid.
    """
    path = os.fspath(path)
    if not is_volume_file(path):
        raise ValueError(f"{path}: unsupported file type (expected one of {', '.join(VOLUME_EXTENSIONS)})")
    if isinstance(stack_or_array, ImageStack):
        pixels = stack_or_array.pixels
        ijk_to_lps = stack_or_array.ijk_to_lps if ijk_to_lps is None else ijk_to_lps
    else:
        pixels = np.asarray(stack_or_array)
        pixels = pixels[:, None] if pixels.ndim == 3 else pixels
    if pixels.ndim != 4:
        raise ValueError(
            f"{path}: pixels must be [slices, frames, rows, cols] or [slices, rows, cols], got {pixels.shape}"
        )
    if ijk_to_lps is None:
        raise ValueError(f"{path}: ijk_to_lps is required when writing a plain array")

    matrix = np.asarray(ijk_to_lps, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    direction = matrix[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError(f"{path}: ijk_to_lps has non-perpendicular axes, which volume files cannot store")

    import SimpleITK as sitk

    frames = [sitk.GetImageFromArray(np.ascontiguousarray(pixels[:, t])) for t in range(pixels.shape[1])]
    if len(frames) == 1:
        image = frames[0]
        image.SetDirection(direction.ravel().tolist())
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(matrix[:3, 3].tolist())
    else:
        image = sitk.JoinSeries(frames)  # a scalar 4D image (x, y, z, t)
        direction4 = np.eye(4)
        direction4[:3, :3] = direction
        image.SetDirection(direction4.ravel().tolist())
        image.SetSpacing([*spacing.tolist(), 1.0])
        image.SetOrigin([*matrix[:3, 3].tolist(), 0.0])
    try:
        sitk.WriteImage(image, path, useCompression=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot write volume ({_itk_message(exc)})") from exc


def read_any(path: str | os.PathLike) -> tuple[list[ImageStack], list[Problem]]:
    """Whatever ``path`` is: a DICOM study folder, a volume file, or one DICOM file (its series)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return read_study(path)
    if not os.path.exists(path):
        return [], [Problem(path, "path does not exist")]
    if os.path.basename(path).upper() == "DICOMDIR":
        return read_study(os.path.dirname(path))
    if is_volume_file(path):
        try:
            return [read_volume(path)], []
        except ValueError as exc:
            return [], [Problem(path, str(exc).removeprefix(f"{path}: "))]

    # One DICOM file stands for its series: index its folder, load the stacks of that series.
    index = index_study(os.path.dirname(path), recursive=False)
    problems = [problem for problem in index.problems if problem.path == path]
    series_uids = {
        entry.info.series_uid
        for entry in index.stacks
        if any(ref[0] == path for row in entry.frame_refs for ref in row)
    }
    if not series_uids:
        return [], problems or [Problem(path, "not part of any readable DICOM image stack")]
    stacks = []
    for entry in index.stacks:
        if entry.info.series_uid in series_uids:
            try:
                stacks.append(load_stack(entry))
            except StackLoadError as error:
                problems.append(error.problem)
    return stacks, problems


def _itk_message(error: RuntimeError) -> str:
    """ITK's exception text is several lines of C++ context; the description is the last one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown ITK error"
