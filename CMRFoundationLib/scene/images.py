"""The images of an analysed series in the scene: a scalar volume, or for a cine a volume
sequence with a sequence browser (its proxy volume is what the views show)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from ..stack import ImageStack, numbered
from .mrml import image_data, sequences_logic, vtk_matrix


@dataclass
class SeriesImages:
    """The nodes that show one series: ``volume`` is the scalar volume (a cine's proxy volume)."""

    volume: object
    sequence: object | None = None  # cine: the vtkMRMLSequenceNode of volumes
    browser: object | None = None  # cine: the vtkMRMLSequenceBrowserNode

    @property
    def is_cine(self) -> bool:
        return self.sequence is not None


def frame_index(stack: ImageStack) -> tuple[str, str, list[str]]:
    """(index name, unit, one value per frame) of a cine's sequences: trigger times when they
    tell the frames apart, else frame numbers (from 1, as the report counts them)."""
    if stack.frame_times is not None and len(set(np.round(stack.frame_times, 2))) == stack.n_frames:
        return "time", "ms", [f"{t:.2f}" for t in stack.frame_times]
    return "frame", "", [numbered(t) for t in range(stack.n_frames)]


def new_sequence(scene, name: str, index_name: str, unit: str):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName(index_name)
    sequence.SetIndexUnit(unit)
    return sequence


def add_series_images(scene, stack: ImageStack, name: str) -> SeriesImages:
    """Add the stack to the scene: a scalar volume, or a browsed volume sequence for a cine."""
    ijk_to_ras = stack.ijk_to_ras
    if stack.n_frames == 1:
        volume = _volume(stack.pixels[:, 0], ijk_to_ras, scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name))
        volume.CreateDefaultDisplayNodes()
        return SeriesImages(volume)
    index_name, unit, values = frame_index(stack)
    sequence = new_sequence(scene, f"{name} (sequence)", index_name, unit)
    for frame, value in enumerate(values):
        sequence.SetDataNodeAtValue(_volume(stack.pixels[:, frame], ijk_to_ras, slicer.vtkMRMLScalarVolumeNode()), value)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} (browser)")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    sequences_logic(scene).UpdateProxyNodesFromSequences(browser)
    volume = browser.GetProxyNode(sequence)
    volume.SetName(name)
    volume.CreateDefaultDisplayNodes()
    return SeriesImages(volume, sequence, browser)


def _volume(pixels: np.ndarray, ijk_to_ras: np.ndarray, node):
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras))
    node.SetAndObserveImageData(image_data(pixels.astype(np.float32)))
    return node
