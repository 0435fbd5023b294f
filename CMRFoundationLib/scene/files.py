"""Saving and reading scene-layer results with Slicer's own storage nodes: segmentations
as .seg.nrrd, markups as .mrk.json, and the whole scene as a Slicer data bundle (.mrb)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import slicer

from .mrml import prepare_scene


class SceneFileError(OSError):
    """A storage node could not write or read a file."""


def save_segmentation(node, path: str | os.PathLike) -> Path:
    """Write a segmentation node as .seg.nrrd (segment names, colours, terminology tags kept)."""
    return _write(slicer.vtkMRMLSegmentationStorageNode(), node, path)


def save_markups(node, path: str | os.PathLike) -> Path:
    """Write a markups node as .mrk.json (positions stored in LPS, as Slicer does)."""
    return _write(slicer.vtkMRMLMarkupsJsonStorageNode(), node, path)


def read_segmentation(scene, path: str | os.PathLike, name: str | None = None):
    """A new segmentation node in ``scene`` read from a .seg.nrrd."""
    return _read(scene, slicer.vtkMRMLSegmentationStorageNode(), "vtkMRMLSegmentationNode", path, name)


def read_markups(scene, path: str | os.PathLike, name: str | None = None):
    """A new fiducial markups node in ``scene`` read from a .mrk.json."""
    return _read(scene, slicer.vtkMRMLMarkupsJsonStorageNode(), "vtkMRMLMarkupsFiducialNode", path, name)


def save_scene_bundle(scene, path: str | os.PathLike) -> Path:
    """Write the scene with all its data as a Slicer data bundle (.mrb, a zip Slicer opens)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not scene.WriteToMRB(str(path)):
        raise SceneFileError(f"{path}: the scene could not be written as a data bundle")
    return path


def read_scene_bundle(path: str | os.PathLike, scene=None):
    """The scene of a .mrb (into ``scene`` if given, else a new one)."""
    scene = scene if scene is not None else slicer.vtkMRMLScene()
    prepare_scene(scene)
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(path) as bundle:
            bundle.extractall(folder)
        mrml = next(Path(folder).rglob("*.mrml"), None)
        if mrml is None:
            raise SceneFileError(f"{path}: no .mrml scene inside")
        scene.SetURL(str(mrml))
        if not scene.Import():
            raise SceneFileError(f"{path}: the scene could not be read")
    return scene


def _write(storage, node, path) -> Path:
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise SceneFileError(f"{path}: {node.GetName()} could not be written")
    return path


def _read(scene, storage, class_name: str, path, name: str | None):
    prepare_scene(scene)
    node = scene.AddNewNodeByClass(class_name, name or Path(path).name.split(".")[0])
    storage.SetFileName(str(Path(path).resolve()))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise SceneFileError(f"{path}: could not be read as {class_name}")
    node.CreateDefaultDisplayNodes()
    return node
