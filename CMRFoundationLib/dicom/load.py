"""Turn indexed stacks into ImageStacks: decode pixels, apply rescale, keep the provenance."""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.filereader import read_partial
from pydicom.pixels import get_decoder

from ..problems import Problem
from ..stack import MAX_VOXELS, ImageStack
from .index import FrameAttributes, StackEntry, index_files, index_study, rescale_of


class StackLoadError(Exception):
    """A stack's pixels could not be read; ``problem`` names the file and the reason."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def load_stack(entry: StackEntry) -> ImageStack:
    """Read the pixels of an indexed stack as float32 physical values [slices, frames, rows, cols]."""
    rows, cols = entry.shape[2:]
    if np.prod(entry.shape, dtype=np.int64) > MAX_VOXELS:
        first = entry.frame_refs[0][0][0]
        raise StackLoadError(Problem(first, f"stack of {entry.describe()} is over the limit of {MAX_VOXELS} voxels"))
    pixels = np.empty(entry.shape, dtype=np.float32)
    # Group the images by file so that a multi-frame file is decoded once.
    targets: dict[str, list[tuple[int, int, int | None]]] = defaultdict(list)
    for k, row in enumerate(entry.frame_refs):
        for t, (path, frame_index) in enumerate(row):
            targets[path].append((k, t, frame_index))

    for path, images in targets.items():
        ds, frames = _decode(path)
        if frames.shape[-2:] != (rows, cols):
            found = "x".join(map(str, frames.shape[-2:]))
            raise StackLoadError(
                Problem(path, f"image is {found}, expected {rows}x{cols} (file changed since indexing?)")
            )
        for k, t, frame_index in images:
            slope, intercept = rescale_of(FrameAttributes(ds, frame_index))
            pixels[k, t] = frames[frame_index or 0] * slope + intercept

    return ImageStack(
        pixels=pixels,
        ijk_to_lps=entry.ijk_to_lps.copy(),
        info=dataclasses.replace(entry.info, extra=dict(entry.info.extra)),
        frame_times=None if entry.frame_times is None else entry.frame_times.copy(),
        slice_positions=entry.slice_positions.copy(),
        sources=[list(row) for row in entry.frame_refs],
        sop_instance_uids=[list(row) for row in entry.sop_instance_uids],
        warnings=list(entry.warnings),
        orientation_in_study=entry.orientation,
    )


def _decode(path: str) -> tuple[pydicom.Dataset, np.ndarray]:
    """The full dataset and its frames as [frames, rows, cols] stored values."""
    ds = None
    try:
        with open(path, "rb") as fp:
            # Nothing after the pixel data is needed, and pydicom would parse trailing zeros
            # (a sparse or unfinished file) as endless empty elements.
            ds = read_partial(fp, stop_when=_after_pixel_data(), force=True)
        _check_decoder(path, ds)
        array = ds.pixel_array
    except OSError as exc:
        raise StackLoadError(Problem(path, f"cannot read file: {exc.strerror or exc}")) from exc
    except Exception as exc:  # pixel decoders fail in many ways; each means this file's pixels are unusable
        syntax = ds.file_meta.get("TransferSyntaxUID") if ds is not None and getattr(ds, "file_meta", None) else None
        reason = f"cannot decode pixel data ({syntax.name if syntax else 'unknown transfer syntax'}): {exc}"
        raise StackLoadError(Problem(path, reason)) from exc
    if array.ndim not in (2, 3):
        raise StackLoadError(Problem(path, f"unexpected pixel array shape {array.shape}"))
    return ds, array.reshape((-1, *array.shape[-2:]))


def _after_pixel_data():
    """A ``stop_when`` for pydicom: read up to and including the pixel data, stop at the next element."""
    seen = False

    def stop_when(tag, vr, length) -> bool:
        nonlocal seen
        if seen:
            return True
        seen = tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)
        return False

    return stop_when


def _check_decoder(path: str, ds: pydicom.Dataset) -> None:
    """Name the transfer syntax and what to install when no installed plugin decodes it."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        reason = f"pixel data compressed as {syntax.name} ({syntax}), which pydicom cannot decode"
        raise StackLoadError(Problem(path, reason)) from None
    if not decoder.is_available:
        reason = (
            f"pixel data compressed as {syntax.name} ({syntax}) and no decoder for it is installed; "
            f"install one of: {'; '.join(decoder.missing_dependencies)}"
        )
        raise StackLoadError(Problem(path, reason))


def read_study(folder: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[ImageStack], list[Problem]]:
    """Index ``folder`` (or a list of one study's files) and load every stack that can be
    loaded; problems from both steps."""
    index = index_study(folder) if isinstance(folder, (str, os.PathLike)) else index_files(folder)
    stacks: list[ImageStack] = []
    problems = list(index.problems)
    for entry in index.stacks:
        try:
            stacks.append(load_stack(entry))
        except StackLoadError as error:
            problem = error.problem
            problems.append(
                Problem(problem.path, f"{problem.reason}; stack not loaded ({entry.describe()})", problem.severity)
            )
    return stacks, problems
