"""Corrected segmentations become training labels: an export into a label folder
(label_folder.py), the format Training/cmrtrain reads, de-identified.

What leaves the hospital is the image and label voxels, their geometry, the task's label
names and where the labels came from. No patient name, ID or birth date, and no study
date or time: the scene's names (which carry series descriptions and dates) are not
copied, the case id is built from a pseudonym, and the Study and Series Instance UIDs
are replaced by pseudonyms (a SHA-256 of the UID). The UIDs are hashed, not kept,
because many scanners build them from the site's root, the device serial number and the
acquisition date and time, so a UID can carry a study date. The hash is unsalted on
purpose: the same series always gets the same pseudonym, so a re-export is recognisable
and the training split keeps all cases of one study on one side (it groups by
study_uid); only someone who holds the original UID (the hospital) can link it back.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .. import __version__
from ..label_folder import DEFAULT_SOURCE, LabelFolderWriter
from ..stack import LPS_TO_RAS, numbered
from ..tasks import TASKS
from . import edits
from .mrml import array_of, ijk_to_ras_of, sequences_logic
from .segmentations import labels_in_reference_geometry, segment_ids_of, structure_of

# Structures a task does not have, and the task label they belong to (the LGE map marks
# enhanced myocardium apart; for seg_lge it is myocardium).
PART_OF = {"enhanced_myocardium": "lv_myocardium", "microvascular_obstruction": "lv_myocardium"}


def pseudonym(uid: str) -> str:
    """A stable stand-in for a DICOM UID (see the module docstring for why it is hashed)."""
    return "sha256-" + hashlib.sha256(uid.encode()).hexdigest()[:32] if uid else ""


def export_training_labels(scene, segmentation, folder: str | os.PathLike, frames: list[int] | None = None,
                           task: str | None = None) -> list[str]:
    """Add a segmentation (the node the views show, or its sequence) with its images to the
    label folder ``folder``; returns the case ids written, one per frame.

    ``frames``: positions in the segmentation's frames (a cine's frames); default: a single
    frame's only one, a cine's edited frames (a cine with none edited is refused: unchecked
    model output is not a correction). ``task``: default the task the segmentation came from.
    """
    result = _result_node(scene, segmentation)
    task = task or result.GetAttribute(edits.TASK)
    if task not in TASKS:
        raise ValueError(f"{result.GetName()}: {task!r} is not a task to export to; choose one of {', '.join(TASKS)}")
    spec = TASKS[task]
    stack_frames = _stack_frames(result)
    if frames is None:
        frames = edits.edited_frames(result) if len(stack_frames) > 1 else [0]
        if not frames:
            raise ValueError(f"{result.GetName()}: no frame was edited; name the frames to export unedited frames")
    writer = LabelFolderWriter(folder, spec)
    study = pseudonym(result.GetAttribute(edits.STUDY) or "")
    series = pseudonym(result.GetAttribute(edits.SERIES) or "")
    key = result.GetAttribute(edits.SERIES_KEY) or "series"
    written = []
    for position in frames:
        node, volume = _frame_nodes(scene, result, position)
        label, segment_labels = _task_labels(node, spec)
        ijk_to_lps = LPS_TO_RAS @ ijk_to_ras_of(volume)
        # The frame as the report and the SEG files count it (from 1); dataset.json's "frame" stays 0-based.
        case_id = (f"{study.removeprefix('sha256-')[:12] or 'case'}-{key}-{task}"
                   f"-f{numbered(stack_frames[position]).zfill(2)}")
        written.append(writer.add_case(
            case_id, (array_of(volume.GetImageData()).astype(np.float32), ijk_to_lps), label,
            study_uid=study, series_uid=series, source=DEFAULT_SOURCE,
            label_names=list(spec.labels), segments=segment_labels, software=f"CMRFoundation {__version__}",
            stack_frame=stack_frames[position]))
    return written


def _result_node(scene, node):
    """The node that carries the result's attributes: a proxy's sequence, else the node."""
    return (edits.sequence_of_proxy(scene, node) if node.IsA("vtkMRMLSegmentationNode") else None) or node


def _stack_frames(result) -> list[int]:
    count = result.GetNumberOfDataNodes() if result.IsA("vtkMRMLSequenceNode") else 1
    return json.loads(result.GetAttribute(edits.FRAMES) or "null") or list(range(count))


def _frame_nodes(scene, result, position: int):
    """(segmentation, image volume) of one frame of the result."""
    if not result.IsA("vtkMRMLSequenceNode"):
        volume = result.GetNodeReference(result.GetReferenceImageGeometryReferenceRole())
        if volume is None:
            raise ValueError(f"{result.GetName()}: no source volume is referenced; cannot export its image")
        return result, volume
    browser = sequences_logic(scene).GetFirstBrowserNodeForSequenceNode(result)
    if not 0 <= position < result.GetNumberOfDataNodes():
        raise ValueError(f"{result.GetName()}: frame {position} is outside its {result.GetNumberOfDataNodes()} frames")
    return result.GetNthDataNode(position), browser.GetMasterSequenceNode().GetNthDataNode(position)


def _task_labels(node, spec) -> tuple[np.ndarray, dict[str, str]]:
    """The segments as the task's label indices, and segment name -> task label."""
    ids, values, names = [], [], {}
    segmentation = node.GetSegmentation()
    for segment_id in segment_ids_of(node):
        segment = segmentation.GetSegment(segment_id)
        name = structure_of(segment)
        label = PART_OF.get(name, name) if name not in spec.labels else name
        if label not in spec.labels:
            raise ValueError(f"segment {segment.GetName()!r} is not a structure of task {spec.name} "
                             f"({', '.join(spec.labels[1:])}); remove or rename it before exporting")
        ids.append(segment_id)
        values.append(spec.labels.index(label))
        names[segment.GetName()] = label
    order = np.argsort(values, kind="stable")  # later task labels drawn over earlier ones where they overlap
    labels = labels_in_reference_geometry(node, [ids[n] for n in order], [values[n] for n in order])
    return labels, names
