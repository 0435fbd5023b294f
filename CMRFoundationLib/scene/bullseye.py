"""An AHA 16-segment bull's-eye as an RGB image volume: the report's layout and colours
(anterior up, septal left, from measurements.bullseye), so that Slicer shows what the report
shows; the numbers are in the measurements table."""

from __future__ import annotations

import numpy as np

from ..measurements.aha import AHA_SEGMENT_NAMES
from ..measurements.bullseye import colour_of, segment_image, value_range
from ..stack import LPS_TO_RAS
from .mrml import image_data, vtk_matrix

BACKGROUND = (0, 0, 0)


def bullseye_rgb(values: dict[int, float], scale: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 [size, size, 3]: each segment in the report's colour of its value, grey without one."""
    low, high = value_range(values, scale)
    segments = segment_image()
    rgb = np.zeros((*segments.shape, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    for segment in AHA_SEGMENT_NAMES:
        rgb[segments == segment] = colour_of(values.get(segment), low, high)
    return rgb


def add_bullseye(scene, values: dict[int, float], unit: str, name: str, scale: tuple[float, float] | None = None):
    """A vector volume of the bull's-eye (1 pixel = 1 mm, in the axial plane, anterior up);
    ``scale``: a fixed colour scale (measurements.bullseye.fixed_scale), else the values' span."""
    rgb = bullseye_rgb(values, scale)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS))  # i to patient left, j to posterior: the axial view shows it upright
    node.SetAndObserveImageData(image_data(rgb[None]))
    node.CreateDefaultDisplayNodes()
    low, high = value_range(values, scale)  # the colours' own range (bullseye_rgb)
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
