"""A MRML scene that works with and without the Slicer application, and numpy <-> VTK helpers.

In Slicer, ``slicer.mrmlScene`` already has every node class registered by the modules.
Any other ``slicer.vtkMRMLScene()`` (slicer-core without the application, or a second
scene inside Slicer, as the tests and the batch make) knows only the core classes: the
sequence browser, markups and segmentation conversion rules are registered by their
module logics, whose application instances serve the application's scene only, so
``prepare_scene`` creates those logics once per such scene and keeps them alive beside
it (the sequences logic keeps proxy nodes and sequences in step).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..stack import LPS_TO_RAS
from ..terminology import SLICER_CONTEXT_NAME

# Module logics (Slicer class name) whose SetMRMLScene registers what the scene layer uses.
_LOGIC_CLASSES = ("vtkSlicerSegmentationsModuleLogic", "vtkSlicerSequencesLogic", "vtkSlicerMarkupsLogic",
                  "vtkSlicerTablesLogic", "vtkSlicerSubjectHierarchyModuleLogic", "vtkSlicerVolumesLogic")
# Our structures as a Slicer terminology context (terminology.slicer_terminology_context, saved
# as JSON); installed beside the library like the weights.
TERMINOLOGY_FILE = Path(__file__).resolve().parents[2] / "Resources" / "Terminology" / "CMRFoundation.term.json"
# The logics prepare_scene made, by the scene's C++ address (a Python wrapper's id() is reused once the wrapper
# goes); they hold the scene, so it lives until close_scene.
_logics_of_scene: dict[str, dict[str, object]] = {}


def _key(scene) -> str:
    return scene.GetAddressAsString("vtkMRMLScene")


def new_scene() -> "slicer.vtkMRMLScene":
    """A fresh scene, ready for the scene layer (in plain Python as in Slicer)."""
    scene = slicer.vtkMRMLScene()
    prepare_scene(scene)
    return scene


def prepare_scene(scene) -> None:
    """Register the node classes the scene layer needs, unless an application already did."""
    if _key(scene) in _logics_of_scene or _is_application_scene(scene):
        return
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    logics = {"application": application}
    for class_name in _LOGIC_CLASSES:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        logics[class_name] = logic
    # Without a scene: given one, it would look for Slicer's default terminologies, which only the application has.
    logics["vtkSlicerTerminologiesModuleLogic"] = slicer.vtkSlicerTerminologiesModuleLogic()
    # Reading a bundle whose sequences are nested bundles (.seq.mrb) needs a data I/O manager with a cache folder.
    cache = tempfile.TemporaryDirectory(prefix="cmrfm-scene-")
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    remote_io.SetMRMLApplicationLogic(application)
    remote_io.GetCacheManager().SetRemoteCacheDirectory(cache.name)
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLScene(scene)
    data_io.SetMRMLApplicationLogic(application)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.AddDataIOToScene()
    logics.update(cache=cache, remote_io=remote_io, data_io=data_io)
    _logics_of_scene[_key(scene)] = logics


def close_scene(scene) -> None:
    """Empty the scene and, for one prepare_scene set up, let go of its logics (they hold the scene)."""
    scene.Clear(True)
    logics = _logics_of_scene.pop(_key(scene), None)
    if logics is None:
        return
    for logic in logics.values():
        if hasattr(logic, "SetMRMLScene"):
            logic.SetMRMLScene(None)
    logics["cache"].cleanup()


def sequences_logic(scene):
    """The sequences module logic: the application's in Slicer, else the one prepare_scene made."""
    return _logic(scene, "sequences", "vtkSlicerSequencesLogic")


def terminologies_logic(scene):
    """The terminologies logic with our context loaded, so that our segments' terminology tags resolve."""
    logic = _logic(scene, "terminologies", "vtkSlicerTerminologiesModuleLogic")
    if not _has_context(logic):
        logic.LoadTerminologyFromFile(str(TERMINOLOGY_FILE))
    return logic


def _has_context(logic) -> bool:
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    return SLICER_CONTEXT_NAME in [names.GetValue(n) for n in range(names.GetNumberOfValues())]


def _logic(scene, module: str, class_name: str):
    if _is_application_scene(scene):
        return getattr(slicer.modules, module).logic()
    prepare_scene(scene)
    return _logics_of_scene[_key(scene)][class_name]


def _is_application_scene(scene) -> bool:
    """True for Slicer's own scene (only the application has slicer.mrmlScene)."""
    application_scene = getattr(slicer, "mrmlScene", None)
    return application_scene is not None and _key(application_scene) == _key(scene)


# --- geometry ------------------------------------------------------------------------------

def ras_from_lps(points) -> np.ndarray:
    """LPS points [..., 3] -> RAS (Slicer's world): the first two axes flip."""
    return np.asarray(points, dtype=float) * np.diag(LPS_TO_RAS)[:3]


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def ijk_to_ras_of(node) -> np.ndarray:
    """The IJK-to-RAS matrix of a volume node (or of a vtkOrientedImageData)."""
    matrix = vtk.vtkMatrix4x4()
    if hasattr(node, "GetIJKToRASMatrix"):
        node.GetIJKToRASMatrix(matrix)
    else:
        node.GetImageToWorldMatrix(matrix)
    return numpy_matrix(matrix)


# --- voxels --------------------------------------------------------------------------------


def image_data(array: np.ndarray, image=None):
    """A vtkImageData (or the given subclass instance) holding ``array`` [k, j, i] or
    [k, j, i, components] (numpy order)."""
    array = np.ascontiguousarray(array)
    image = image if image is not None else vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    components = array.shape[3] if array.ndim == 4 else 1
    scalars = numpy_support.numpy_to_vtk(array.reshape(-1, components) if components > 1 else array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def array_of(image) -> np.ndarray:
    """The voxels of a vtkImageData as a numpy array [k, j, i] (or [k, j, i, components]; a copy)."""
    i, j, k = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    shape = (k, j, i) if scalars.GetNumberOfComponents() == 1 else (k, j, i, scalars.GetNumberOfComponents())
    return numpy_support.vtk_to_numpy(scalars).reshape(shape).copy()
