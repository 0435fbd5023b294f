"""The report's images: image slices cropped to the heart, enlarged, with the segmentation
outlined and landmarks marked, as PNG figures (``data:`` URIs).

Images are shown as stored: row ``r`` of the slice is drawn below row ``r - 1`` and column
``c`` right of column ``c - 1``; nothing is flipped, rotated or transposed.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from ...measurements.aha import slice_levels
from ...measurements.masks import erode_in_plane
from ...terminology import STRUCTURES
from ..results import LabelMap, PartResult
from .markup import _css, _e

FILLED = ("enhanced_myocardium",)  # drawn filled as well as outlined: the area is the finding
CROP_MARGIN_MM = 25.0  # around everything segmented in a stack
TARGET_IMAGE_PX = 300  # small crops are enlarged by a whole factor (at most 4) to reach this size


def _structure_map(part: PartResult) -> LabelMap | None:
    """The part's segmentation of named structures (not its AHA segment map)."""
    return next((m for m in part.label_maps if any(name in STRUCTURES for name in m.label_names[1:])), None)


def _labels_at(label_map: LabelMap, frame: int) -> np.ndarray:
    """The label map's [slices, rows, cols] at stack ``frame``."""
    index = frame if label_map.frames is None else label_map.frames.index(frame)
    return label_map.labels[:, index]


def _level_slices(myocardium: np.ndarray, basal_end: str | None) -> list[tuple[str, int]]:
    """(name, slice): the middle slice of the basal, mid and apical thirds of the LV (``[slices, rows, cols]`` mask)."""
    if not myocardium.any():
        return [("Middle slice", myocardium.shape[0] // 2)]
    if basal_end in ("first", "last"):
        names = {"basal": "Basal", "mid": "Mid-ventricular", "apical": "Apical"}
    else:  # base and apex were not told apart: thirds in stack order
        basal_end, names = "first", {"basal": "First third", "mid": "Middle third", "apical": "Last third"}
    levels = slice_levels(myocardium, basal_end)
    picked = []
    for level in ("basal", "mid", "apical"):
        slices = [k for k, found in enumerate(levels) if found == level]
        if slices:
            picked.append((names[level], slices[len(slices) // 2]))
    return picked


def _crop_box(labels: np.ndarray, spacing) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) around everything segmented in any slice or frame, with a margin."""
    rows, cols = labels.shape[-2:]
    seen = np.any(labels > 0, axis=tuple(range(labels.ndim - 2)))
    if not seen.any():
        return 0, rows, 0, cols
    r, c = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    dr, dc = int(CROP_MARGIN_MM / spacing[1]), int(CROP_MARGIN_MM / spacing[0])  # spacing: (column, row, slice)
    return max(0, r[0] - dr), min(rows, r[-1] + 1 + dr), max(0, c[0] - dc), min(cols, c[-1] + 1 + dc)


def _overlay(image: np.ndarray, labels: np.ndarray, label_names, crop, spacing, points=()) -> np.ndarray:
    """RGB uint8 of a cropped, enlarged slice, each structure outlined (FILLED ones also filled) in its colour.

    ``points``: (row, col, colour) marks in the slice's pixel coordinates.
    """
    r0, r1, c0, c1 = crop
    image, labels = np.nan_to_num(np.asarray(image, dtype=float)[r0:r1, c0:c1]), labels[r0:r1, c0:c1]
    low, high = np.percentile(image, [1, 99.5])
    grey = np.clip((image - low) / (high - low if high > low else 1.0), 0, 1) * 255
    # Whole-pixel enlargement; non-square pixels get more repeats along their longer side.
    scale = int(np.clip(math.ceil(TARGET_IMAGE_PX / max(image.shape)), 1, 4))
    col_mm, row_mm = float(spacing[0]), float(spacing[1])
    fr = max(1, round(scale * row_mm / min(row_mm, col_mm)))
    fc = max(1, round(scale * col_mm / min(row_mm, col_mm)))
    grey, labels = _enlarge(grey, fr, fc), _enlarge(labels, fr, fc)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value, name in enumerate(label_names):
        mask = labels == value
        if value == 0 or name not in STRUCTURES or not mask.any():
            continue
        colour = np.array(STRUCTURES[name].color, dtype=float)
        if name in FILLED:
            rgb[mask] = 0.4 * rgb[mask] + 0.6 * colour
        inside = mask
        for _ in range(min(2, scale)):  # an outline 1-2 pixels wide
            inside = erode_in_plane(inside, border_inside=True)  # the edge is no outline
        rgb[mask & ~inside] = colour
    rows, cols = np.ogrid[:rgb.shape[0], :rgb.shape[1]]
    for row, col, colour in points:
        distance = np.hypot(rows - ((row - r0 + 0.5) * fr - 0.5), cols - ((col - c0 + 0.5) * fc - 0.5))
        radius = 2.5 + scale
        rgb[distance <= radius + 1.2] = 0  # a dark rim, so the mark shows on bright blood too
        rgb[distance <= radius] = colour
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _enlarge(array: np.ndarray, fr: int, fc: int) -> np.ndarray:
    return np.repeat(np.repeat(array, fr, axis=0), fc, axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG (8-bit RGB) of a ``[rows, cols, 3]`` uint8 array: row 0 at the top, column 0 at the left."""
    # Imported on use: without Pillow the sections with images say why they are missing; the rest is written.
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _figure(rgb: np.ndarray, caption: str) -> str:
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" width="{rgb.shape[1]}" height="{rgb.shape[0]}" '
            f'alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _figures(figures: list[str], legend: str) -> str:
    return f'<div class="figures">{"".join(figures)}</div>{legend}' if figures else ""


def _legend(label_names, marks=()) -> str:
    names = [n for n in label_names[1:] if n in STRUCTURES] + list(marks)
    return '<p class="legend">' + "".join(
        f'<span class="swatch" style="background:{_css(STRUCTURES[n].color)}"></span>{_e(STRUCTURES[n].display_name)}'
        for n in names) + "</p>"
