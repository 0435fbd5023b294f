"""Landmarks of an analysis (the RV insertion points) as markups fiducials in RAS."""

from __future__ import annotations

import vtk

from ..stack import numbered
from .mrml import ras_from_lps

POINT_NAMES = {"anterior": "Anterior RV insertion", "inferior": "Inferior RV insertion"}


def add_insertion_points(scene, insertion_points: list[dict], name: str):
    """One fiducial per found point; ``insertion_points`` as analysis.json writes them
    (per slice: "slice", and per point name "lps" and "confidence", or null)."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    for entry in insertion_points:
        for point_name, label in POINT_NAMES.items():
            point = entry.get(point_name)
            if point is None:
                continue
            index = node.AddControlPoint(vtk.vtkVector3d(*ras_from_lps(point["lps"])),
                                         f"{label} s{numbered(entry['slice'])}")
            node.SetNthControlPointDescription(index, f"slice {numbered(entry['slice'])}, confidence {point['confidence']:.2f}")
    return node


def insertion_point_sets(analysis: dict) -> list[tuple[str, str, int | None, list[dict]]]:
    """(part, series key, frame, points) of every part of analysis.json that found insertion points."""
    found = []
    for part_name, part in analysis["parts"].items():
        results = part.get("results") or {}
        if part["status"] == "ok" and results.get("insertion_points"):
            found.append((part_name, part["series"], results.get("frame"), results["insertion_points"]))
    return found
