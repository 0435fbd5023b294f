"""The parts of a study analysis, one module per analysis, and their registry.

Each module declares a ``PartSpec``: the series it reads (a role of select.py), its run
function, its share of the progress bar and its measurements (name, unit, label,
decimals, DICOM SR code). The pipeline, analysis.json, the CSV, the report, the SR and
the cohort table all read them from ``PARTS`` and ``MEASUREMENTS`` below; clinical rules
live in ``CMRFoundationLib.measurements``. Adding an analysis: README, "Adding an analysis".

Later parts borrow from earlier ones through ``Context.shared`` (context.py): the
4-chamber segmentation (valve planes for the short-axis volumes), the short-axis cine's
labels, ED/ES frames, base direction and insertion points (see geometry.py for why the
LGE and map stacks take the cine's insertion points), and the LGE segmentation.
"""

from __future__ import annotations

from . import (
    atria,
    disease,
    lge_extent,
    lge_presence,
    myocardial_segments,
    tissue_maps,
    ventricular_function,
    volume_ratio,
)
from .context import Context, MeasurementSpec, PartSkipped, PartSpec, Shared

# In this order: the atria part's 4-chamber segmentation gives the function part its valve
# planes; the function part's segmentation and base direction serve every later part.
PARTS: tuple[PartSpec, ...] = (
    atria.PART,
    ventricular_function.PART,
    volume_ratio.PART,
    myocardial_segments.PART,
    disease.PART,
    lge_extent.PART,
    lge_presence.PART,
    *tissue_maps.PARTS,
)


def _measurements(parts: tuple[PartSpec, ...]) -> dict[str, MeasurementSpec]:
    declared: dict[str, MeasurementSpec] = {}
    for part in parts:
        for spec in part.measurements:
            if spec.name in declared:
                raise ValueError(f"measurement {spec.name!r} is declared by two parts")
            declared[spec.name] = spec
    return declared


MEASUREMENTS: dict[str, MeasurementSpec] = _measurements(PARTS)

__all__ = ["MEASUREMENTS", "PARTS", "Context", "MeasurementSpec", "PartSkipped", "PartSpec", "Shared"]
