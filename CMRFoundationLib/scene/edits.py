"""Telling results the user edited from untouched ones, so a re-run never overwrites an edit.

Every node the scene layer creates carries attributes saying what it is (KIND), which
study and series it belongs to and, for what a user may edit (segmentations, landmarks),
a content fingerprint taken at creation. A segmentation's fingerprint is one SHA-256 per
frame of its segments (names, colours, terminology, each segment's own voxels on the
reference grid: segmentations.fingerprint); a landmarks node's, of its points (labels,
descriptions, positions); a cine's
segmentation is a sequence, so its frames are the sequence items, which the browser
keeps in step with what the user edits on the proxy node. A node whose content no longer
matches is edited: it is kept (renamed " (edited)" and marked) and never touched again.
"""

from __future__ import annotations

import hashlib
import json

from . import segmentations
from .mrml import sequences_logic

KIND = "CMRFoundation.Kind"
STUDY = "CMRFoundation.StudyUID"
SERIES = "CMRFoundation.SeriesUID"
SERIES_KEY = "CMRFoundation.SeriesKey"
TASK = "CMRFoundation.Task"
FRAMES = "CMRFoundation.Frames"  # JSON list: the stack frame of each segmentation frame
FINGERPRINT = "CMRFoundation.Fingerprint"  # JSON list: one SHA-256 per frame
EDITED = "CMRFoundation.Edited"  # "1" once found edited

IMAGES, SEGMENTATION, LANDMARKS, MEASUREMENTS, BULLSEYE = "images", "segmentation", "landmarks", "measurements", "bullseye"
EDITABLE = (SEGMENTATION, LANDMARKS)
EDITED_SUFFIX = " (edited)"


def tag(node, kind: str, study_uid: str, **attributes) -> None:
    """Mark ``node`` as a scene-layer result of ``kind``; keyword attributes by constant name (series=..., task=...)."""
    names = {"series": SERIES, "series_key": SERIES_KEY, "task": TASK, "frames": FRAMES}
    node.SetAttribute(KIND, kind)
    node.SetAttribute(STUDY, study_uid)
    for key, value in attributes.items():
        node.SetAttribute(names[key], value if isinstance(value, str) else json.dumps(value))
    if kind in EDITABLE:
        node.SetAttribute(FINGERPRINT, json.dumps(frame_fingerprints(node)))


def frame_fingerprints(node) -> list[str]:
    """The content fingerprints of a result node, one per frame."""
    if node.IsA("vtkMRMLSequenceNode"):
        return [segmentations.fingerprint(node.GetNthDataNode(n)) for n in range(node.GetNumberOfDataNodes())]
    if node.IsA("vtkMRMLSegmentationNode"):
        return [segmentations.fingerprint(node)]
    return [_markups_fingerprint(node)]


def edited_frames(node) -> list[int]:
    """Positions of the frames whose content differs from the fingerprint taken at creation."""
    recorded = json.loads(node.GetAttribute(FINGERPRINT) or "[]")
    now = frame_fingerprints(node)
    if len(now) != len(recorded):
        return list(range(len(now)))
    return [n for n, (a, b) in enumerate(zip(recorded, now)) if a != b]


def results_of_study(scene, study_uid: str, kind: str | None = None) -> list:
    """The scene-layer nodes of a study (of one kind), in scene order."""
    nodes = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
    return [node for node in nodes if node.GetAttribute(STUDY) == study_uid
            and (kind is None or node.GetAttribute(KIND) == kind)]


def retire_previous(scene, study_uid: str) -> tuple[list, list[str]]:
    """Before a re-load: keep edited results (renamed, marked), remove the rest but the images.

    Returns (kept edited nodes, names of removed nodes). Results already marked edited stay as they are.
    """
    kept, removed = [], []
    for node in results_of_study(scene, study_uid):
        kind = node.GetAttribute(KIND)
        if kind == IMAGES or node.GetAttribute(EDITED):
            continue
        if kind in EDITABLE and edited_frames(node):
            node.SetAttribute(EDITED, "1")
            for shown in _with_proxy(scene, node):
                shown.SetName(shown.GetName() + EDITED_SUFFIX)
            kept.append(node)
        else:
            removed.append(node.GetName())
            for shown in _with_proxy(scene, node):
                remove_node(scene, shown)
    return kept, removed


def shown_node(scene, node):
    """What the views show of a result: a sequence's proxy node, else the node itself."""
    return _with_proxy(scene, node)[-1]


def sequence_of_proxy(scene, node):
    """The sequence a browser shows through proxy ``node``; None for a node no browser drives."""
    browser = sequences_logic(scene).GetFirstBrowserNodeForProxyNode(node)
    return browser.GetSequenceNode(node) if browser is not None else None


def _with_proxy(scene, node) -> list:
    if not node.IsA("vtkMRMLSequenceNode"):
        return [node]
    browser = sequences_logic(scene).GetFirstBrowserNodeForSequenceNode(node)
    proxy = browser.GetProxyNode(node) if browser is not None else None
    return [node] if proxy is None else [node, proxy]


def remove_node(scene, node) -> None:
    """Remove a node with its display and storage nodes (and from any browser that plays it)."""
    if node.IsA("vtkMRMLSequenceNode"):
        browser = sequences_logic(scene).GetFirstBrowserNodeForSequenceNode(node)
        if browser is not None:
            browser.RemoveSynchronizedSequenceNode(node.GetID())
    helpers = []
    for getter, count in (("GetNthDisplayNode", "GetNumberOfDisplayNodes"), ("GetNthStorageNode", "GetNumberOfStorageNodes")):
        if hasattr(node, count):
            helpers += [getattr(node, getter)(n) for n in range(getattr(node, count)())]
    hierarchy = scene.GetSubjectHierarchyNode()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.RemoveItem(item, False, False)  # slicer-core leaves the item behind otherwise
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None:
            scene.RemoveNode(helper)


def _markups_fingerprint(node) -> str:
    points = [(node.GetNthControlPointLabel(n), node.GetNthControlPointDescription(n),
               *(round(v, 3) for v in node.GetNthControlPointPosition(n)))
              for n in range(node.GetNumberOfControlPoints())]
    return hashlib.sha256(json.dumps(points).encode()).hexdigest()
