"""An AHA 16-segment bull's-eye as an RGB image volume: the report's layout and colours
(anterior up, septal left), so that Slicer shows what the report shows; the numbers are
in the measurements table."""

from __future__ import annotations

import numpy as np

from ..analysis.report import COLOUR_STOPS, NO_DATA, SEGMENT_PLACES
from ..measurements.aha import AHA_SEGMENT_NAMES
from ..stack import LPS_TO_RAS
from .mrml import image_data, vtk_matrix

RADIUS = max(outer for _, outer, _, _ in SEGMENT_PLACES.values())
BACKGROUND = (0, 0, 0)


def segment_image(size: int = 2 * RADIUS + 1) -> np.ndarray:
    """int [size, size]: the AHA segment number of every pixel (0 outside the bull's-eye)."""
    centre = (size - 1) / 2
    row, col = np.mgrid[0:size, 0:size]
    dx, dy = col - centre, centre - row  # y up, as in the report's drawing
    radius = np.hypot(dx, dy) * RADIUS / centre
    angle = np.degrees(np.arctan2(dy, dx))
    segments = np.zeros((size, size), dtype=np.int16)
    for segment, (inner, outer, middle, span) in SEGMENT_PLACES.items():
        offset = (angle - middle + 180) % 360 - 180
        segments[(radius >= inner) & (radius < outer) & (np.abs(offset) <= span / 2)] = segment
    return segments


def bullseye_rgb(values: dict[int, float], scale: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 [size, size, 3]: each segment in the report's colour of its value, grey without one."""
    finite = {k: v for k, v in values.items() if v is not None and np.isfinite(v)}
    low, high = scale or (min(finite.values(), default=0.0), max(finite.values(), default=1.0))
    if high <= low:
        low, high = low - 1, high + 1
    segments = segment_image()
    rgb = np.zeros((*segments.shape, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    stops = np.linspace(0, 1, len(COLOUR_STOPS))
    for segment in AHA_SEGMENT_NAMES:
        value = finite.get(segment)
        if value is None:
            colour = NO_DATA
        else:
            t = np.clip((value - low) / (high - low), 0, 1)
            colour = [np.interp(t, stops, [c[channel] for c in COLOUR_STOPS]) for channel in range(3)]
        rgb[segments == segment] = np.round(colour)
    return rgb


def add_bullseye(scene, values: dict[int, float], unit: str, name: str):
    """A vector volume of the bull's-eye (1 pixel = 1 mm, in the axial plane, anterior up)."""
    scale = (0.0, 100.0) if unit == "%" else None
    rgb = bullseye_rgb(values, scale)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS))  # i to patient left, j to posterior: the axial view shows it upright
    node.SetAndObserveImageData(image_data(rgb[None]))
    node.CreateDefaultDisplayNodes()
    low, high = scale or (min(values.values()), max(values.values()))
    node.SetDescription(f"AHA 16 segments, colour scale {low:g} to {high:g} {unit} (light yellow to dark red); "
                        "grey: no value. Anterior up, septal left.")
    return node


def segment_value_sets(measurements: list[dict]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(series, name, unit) -> {AHA segment: value} of the per-segment measurements of analysis.json."""
    sets: dict[tuple[str, str, str], dict[int, float]] = {}
    for m in measurements:
        if m.get("segment") is not None:
            sets.setdefault((m["series"], m["name"], m["unit"]), {})[int(m["segment"])] = float(m["value"])
    return sets
