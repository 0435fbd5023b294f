"""The measurements of an analysis as a table node (the rows and columns of measurements.csv)."""

from __future__ import annotations

import vtk

from ..stack import numbered

# frame: numbered from 1, as in measurements.csv; check: why a value is not to be trusted
COLUMNS = ("section", "name", "value", "unit", "series", "segment", "frame", "check")


def add_measurements_table(scene, measurements: list[dict], name: str):
    """A table node with one row per measurement of analysis.json, columns as in measurements.csv."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for column in COLUMNS:
        array = vtk.vtkDoubleArray() if column == "value" else vtk.vtkStringArray()
        array.SetName(column)
        table.AddColumn(array)
    table.SetNumberOfRows(len(measurements))
    for row, measurement in enumerate(measurements):
        frame = measurement.get("frame")
        cells = {**measurement, "segment": measurement.get("segment_label") or "", "check": measurement.get("check") or "",
                 "frame": "" if frame is None else numbered(frame)}
        for column_index, column in enumerate(COLUMNS):
            value = cells[column]
            table.SetValue(row, column_index, vtk.vtkVariant(float(value) if column == "value" else str(value or "")))
    node.SetColumnUnitLabel("value", "")
    node.Modified()
    return node


def table_rows(node) -> list[dict]:
    """The rows of a measurements table node, as dicts keyed by column name."""
    table = node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{name: table.GetValue(row, c).ToString() if name != "value" else table.GetValue(row, c).ToDouble()
             for c, name in enumerate(names)} for row in range(table.GetNumberOfRows())]
