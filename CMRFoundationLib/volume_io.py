"""Volumes on disk (NIfTI, NRRD, MetaImage) to and from ImageStack, plus ``read_any``.

SimpleITK does the file formats; ITK already works in LPS, so its origin, spacing and
direction map straight onto ``ijk_to_lps``. Time (or any fourth axis, including NRRD's
multi-component "list" axis as Slicer writes sequences) becomes the frame axis.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import struct
from collections.abc import Sequence

import numpy as np

from .dicom import StackLoadError, index_study, load_stack, read_study
from .dicom.index import is_file_list
from .problems import Problem
from .stack import LPS_TO_RAS, MAX_VOXELS, ImageStack, SeriesInfo

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

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    nifti = _nifti1_header(path)
    warnings: list[str] = []
    orthonormalised = None  # the corrected geometry of a NIfTI whose sform ITK refuses
    try:
        reader.ReadImageInformation()  # the header only: sizes are checked before any pixel is read
    except RuntimeError as exc:
        if "orthonormal" not in str(exc):
            raise ValueError(f"{path}: cannot read volume ({_itk_message(exc)})") from exc
        orthonormalised, note = _orthonormalised_sform(path, nifti)  # ValueError when the deviation is large
        warnings.append(note)
    try:
        with _sform_permissive(orthonormalised is not None):
            reader.ReadImageInformation()
            voxels = int(np.prod(reader.GetSize(), dtype=np.int64)) * reader.GetNumberOfComponents()
            if voxels > MAX_VOXELS:
                size = " x ".join(map(str, reader.GetSize()))
                raise ValueError(f"{path}: {size} is {voxels} voxels, over the reader's limit of {MAX_VOXELS}")
            if nifti is not None:
                _check_nifti_length(path, nifti)  # ITK fills a truncated NIfTI with zeros, silently
            image = reader.Execute()
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
    if orthonormalised is not None:
        ijk_to_lps = orthonormalised
    info = SeriesInfo(modality="", series_description=os.path.basename(path))
    stack = ImageStack(pixels=np.ascontiguousarray(pixels), ijk_to_lps=ijk_to_lps, info=info, warnings=warnings)
    _apply_info_cfg(stack, path)
    return stack


def _nifti1_header(path: str) -> dict | None:
    """The NIfTI-1 header fields this module checks, or None for other files (ITK judges those)."""
    if not path.lower().endswith((".nii", ".nii.gz")):
        return None
    header = b""
    with contextlib.suppress(OSError, EOFError), (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as f:
        header = f.read(348)
    endian = next((e for e in "<>" if len(header) == 348 and struct.unpack_from(e + "i", header)[0] == 348), None)
    if endian is None:
        return None
    dims = struct.unpack_from(endian + "8h", header, 40)
    return {
        "shape": [max(n, 1) for n in dims[1 : 1 + min(max(dims[0], 1), 7)]],
        "bitpix": struct.unpack_from(endian + "h", header, 72)[0],
        "vox_offset": struct.unpack_from(endian + "f", header, 108)[0],
        "sform_code": struct.unpack_from(endian + "h", header, 254)[0],
        "sform": np.array(struct.unpack_from(endian + "12f", header, 280), dtype=float).reshape(3, 4),
    }


def _check_nifti_length(path: str, nifti: dict) -> None:
    """Refuse a NIfTI whose file holds fewer bytes than its header's image needs."""
    needed = int(nifti["vox_offset"]) + int(np.prod(nifti["shape"], dtype=np.int64)) * max(nifti["bitpix"], 0) // 8
    if path.lower().endswith(".gz"):
        present = 0  # the uncompressed length is only known by inflating (stopping once there is enough)
        try:
            with gzip.open(path, "rb") as f:
                while present < needed and (chunk := f.read(1 << 24)):
                    present += len(chunk)
        except (OSError, EOFError) as exc:  # a cut gzip stream ends without its end marker
            raise ValueError(f"{path}: truncated or corrupt gzip data ({exc})") from exc
    else:
        present = os.path.getsize(path)
    if present < needed:
        shape = " x ".join(map(str, nifti["shape"]))
        raise ValueError(
            f"{path}: truncated file: {shape} voxels of {nifti['bitpix']} bits need {needed} bytes, "
            f"the file holds {present}"
        )


def _orthonormalised_sform(path: str, nifti: dict | None) -> tuple[np.ndarray, str]:
    """IJK-to-LPS of a NIfTI-1 file whose sform axes are not quite perpendicular, made so; and a note.

    Converters write direction cosines rounded to a few decimals, and ITK (5.4) refuses any
    sform that is not orthonormal to its precision when there is no qform to fall back on.
    The nearest orthonormal axes (SVD, voxel sizes kept) are accepted when no voxel of the
    grid moves by more than half the smallest voxel size: then every voxel keeps its place
    to within its own extent. A larger correction would misplace the image; it is refused.
    """
    if nifti is None or nifti["sform_code"] <= 0:
        raise ValueError(f"{path}: no orthonormal direction cosines, and no NIfTI-1 sform to correct")
    sform = nifti["sform"]
    linear, spacing = sform[:, :3], np.linalg.norm(sform[:, :3], axis=0)
    if not np.all(np.isfinite(sform)) or not np.all(spacing > 0):
        raise ValueError(f"{path}: degenerate sform {sform.tolist()}")
    u, _, vt = np.linalg.svd(linear / spacing)
    fixed = (u @ vt) * spacing
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in (nifti["shape"] + [1, 1])[:3]])), dtype=float)
    shift = float(np.linalg.norm((linear - fixed) @ corners.T, axis=0).max())
    cosines = (linear / spacing).T @ (linear / spacing) - np.eye(3)
    angle = float(np.degrees(np.arcsin(min(1.0, np.abs(cosines).max()))))
    tolerance = 0.5 * float(spacing.min())
    if shift > tolerance:
        raise ValueError(
            f"{path}: the sform's axes are up to {angle:.2f} degrees from perpendicular; making them so would "
            f"move voxels by up to {shift:.2f} mm, more than half a voxel ({tolerance:.2f} mm): refused"
        )
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3], ijk_to_ras[:3, 3] = fixed, sform[:, 3]
    note = (
        f"NIfTI sform axes up to {angle:.3f} degrees from perpendicular were made orthonormal; "
        f"no voxel moved by more than {shift:.3f} mm (tolerance: half a voxel, {tolerance:.2f} mm)"
    )
    return LPS_TO_RAS @ ijk_to_ras, note


@contextlib.contextmanager
def _sform_permissive(enabled: bool):
    """Let ITK read the pixels of a NIfTI whose sform it would refuse (its geometry is replaced)."""
    if not enabled:
        yield
        return
    import SimpleITK as sitk

    key, previous, display = "ITK_NIFTI_SFORM_PERMISSIVE", os.environ.get("ITK_NIFTI_SFORM_PERMISSIVE"), None
    os.environ[key] = "1"
    display = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # our own note says what was done
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(display)
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def _apply_info_cfg(stack: ImageStack, path: str) -> None:
    """Use an ACDC-style Info.cfg beside the volume: height, weight, and the ED and ES frames of a cine.

    ACDC writes "ED: 1", "ES: 12" (1-based frames), "Height: 184.0" (cm), "Weight: 95.0" (kg)
    and "NbFrame: 30". Its "Group" (the diagnosis) is deliberately not read: it is the answer
    an analysis must find, not an input.
    """
    config = os.path.join(os.path.dirname(path), "Info.cfg")
    if not os.path.isfile(config):
        return
    values: dict[str, float] = {}
    with open(config, encoding="utf-8", errors="replace") as f:
        for line in f.read(65536).splitlines():  # a config is a few lines; don't read a huge file
            key, _, value = line.partition(":")
            with contextlib.suppress(ValueError):
                values[key.strip().lower()] = float(value)
    used = []
    height, weight = values.get("height", 0.0), values.get("weight", 0.0)
    if 50 <= height <= 250:  # cm
        stack.info.patient_size, used = height / 100.0, [*used, f"height {height:g} cm"]
    if 2 <= weight <= 400:
        stack.info.patient_weight, used = weight, [*used, f"weight {weight:g} kg"]
    n_frames = stack.n_frames
    ed, es, listed = values.get("ed"), values.get("es"), values.get("nbframe")
    if n_frames > 1 and ed is not None and es is not None:
        if listed is not None and listed != n_frames:
            stack.warnings.append(f"{config}: NbFrame {listed:g} but the volume has {n_frames} frames; ED/ES not used")
        elif all(1 <= frame <= n_frames and frame == int(frame) for frame in (ed, es)):
            stack.info.extra["ed_frame"], stack.info.extra["es_frame"] = int(ed) - 1, int(es) - 1  # 0-based
            used.append(f"ED frame {ed:g}, ES frame {es:g}")
        else:
            stack.warnings.append(f"{config}: ED {ed:g} / ES {es:g} are not frames of this {n_frames}-frame volume")
    if used:
        stack.warnings.append(f"from {config}: {', '.join(used)}")


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


def read_any(path: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[ImageStack], list[Problem]]:
    """Whatever ``path`` is: a DICOM study folder, a volume file, one DICOM file (its series),
    or a list of one study's DICOM files (as a DICOM database lists them)."""
    if not isinstance(path, (str, os.PathLike)):
        return read_study([os.path.abspath(p) for p in path])
    path = os.path.abspath(path)
    if os.path.isdir(path) or is_file_list(path):  # a folder, or a file list (e.g. a DICOM database's files)
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
