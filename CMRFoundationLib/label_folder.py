"""Label folders: corrected results saved as new training labels for one task.

The Slicer module exports a user's corrected contours, points or classes into a label
folder; the training code (``cmrtrain.data.label_folders``) reads it as one more data
source. One folder holds one task::

    FOLDER/dataset.json
    FOLDER/images/<id>.nii.gz      the image the labels belong to
    FOLDER/labels/<id>.nii.gz      segmentation tasks only: uint8, the task's label indices

``dataset.json``::

    {"format": "cmrfm-labels", "format_version": 1,
     "task": "<task name>", "labels": [the task's labels, in task order],
     "cases": [{"id": "<id>",
                "image": "images/<id>.nii.gz",
                "label": "labels/<id>.nii.gz",               segmentation
                "class": "<one of labels>",                 classification
                "landmarks": {"<point name>": [[x, y, z] | null, ...]},   landmarks: LPS mm, one entry per slice
                "study_uid": "...", "series_uid": "...", "frame": <int> | null,
                "source": "slicer-correction", "created": "<ISO 8601 UTC>",
                ...any further metadata}]}

Images and labels are NIfTI volumes written with ``volume_io`` so their geometry (LPS)
is the stack's: ``[slices, rows, cols]`` for one frame of a stack (``frame`` says which
frame of the series). What the image holds follows the task's input recipe:

- ``single`` tasks: any number of slices, one frame; every slice is a training sample.
- ``lge_levels`` (lge_presence): exactly 3 slices, in the order basal, mid, apical.
- ``basal_frames`` (disease): one slice (the basal one) with exactly 3 frames, in the
  order end-diastole, halfway to end-systole, end-systole (a 4D volume).

Writing never loses data: a case id that is taken (in ``dataset.json`` or as a file)
gets a ``-2``, ``-3``... suffix, files are written under temporary names and renamed,
and ``dataset.json`` is re-read before and replaced atomically after every addition.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .files import read_json, write_json
from .stack import ImageStack
from .tasks import CLASSIFICATION, INPUT_BASAL_FRAMES, INPUT_LGE_LEVELS, LANDMARKS, SEGMENTATION, TASKS, TaskSpec
from .volume_io import read_volume, write_volume

FORMAT = "cmrfm-labels"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
DEFAULT_SOURCE = "slicer-correction"
_KNOWN_KEYS = {"id", "image", "label", "class", "landmarks", "study_uid", "series_uid", "frame", "source", "created"}
_GEOMETRY_TOLERANCE_MM = 1e-3


class LabelFolderError(ValueError):
    """A label folder (or a case in it) that cannot be used; the message names the file."""


@dataclass
class LabelCase:
    """One entry of ``dataset.json``."""

    id: str
    image: str  # path relative to the folder
    label: str | None = None
    class_name: str | None = None
    landmarks: dict[str, list[list[float] | None]] | None = None
    study_uid: str = ""
    series_uid: str = ""
    frame: int | None = None
    source: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id, "image": self.image}
        if self.label is not None:
            entry["label"] = self.label
        if self.class_name is not None:
            entry["class"] = self.class_name
        if self.landmarks is not None:
            entry["landmarks"] = self.landmarks
        entry.update(study_uid=self.study_uid, series_uid=self.series_uid, frame=self.frame,
                     source=self.source, created=self.created)
        return {**entry, **self.extra}


@dataclass
class LabelFolder:
    """A validated label folder: its task, label names and cases."""

    folder: Path
    task: str
    labels: tuple[str, ...]
    cases: list[LabelCase]

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.task]

    @property
    def dataset_path(self) -> Path:
        return self.folder / DATASET_FILE

    def load_case(self, case: LabelCase) -> tuple[ImageStack, np.ndarray | None]:
        """(image stack, label uint8 [slices, rows, cols] or None) of one case, checked against each other."""
        image_path = self.folder / case.image
        try:
            stack = read_volume(image_path)
        except ValueError as exc:
            raise LabelFolderError(f"{self.dataset_path}: case {case.id!r}: {exc}") from exc
        _check_image_shape(self.spec, stack.pixels.shape, f"{image_path}")
        if case.label is None:
            return stack, None
        label_path = self.folder / case.label
        try:
            label_stack = read_volume(label_path)
        except ValueError as exc:
            raise LabelFolderError(f"{self.dataset_path}: case {case.id!r}: {exc}") from exc
        values = label_stack.pixels[:, 0]
        if label_stack.pixels.shape[1] != 1 or values.shape != stack.pixels[:, 0].shape:
            raise LabelFolderError(
                f"{label_path}: label shape {label_stack.pixels.shape} does not fit image {stack.pixels.shape} ({image_path})"
            )
        if not np.allclose(label_stack.ijk_to_lps, stack.ijk_to_lps, atol=_GEOMETRY_TOLERANCE_MM):
            raise LabelFolderError(f"{label_path}: label geometry differs from its image {image_path}")
        if not np.array_equal(values, np.round(values)) or values.min() < 0 or values.max() >= len(self.labels):
            raise LabelFolderError(
                f"{label_path}: label values must be integers 0..{len(self.labels) - 1} ({', '.join(self.labels)})"
            )
        return stack, values.astype(np.uint8)


def read_label_folder(folder: str | os.PathLike) -> LabelFolder:
    """Read and validate ``folder/dataset.json`` (and that every file it names exists)."""
    folder = Path(folder)
    path = folder / DATASET_FILE
    if not path.is_file():
        raise LabelFolderError(f"{path}: no such file ({folder} is not a label folder)")
    data = read_json(path, "label folder description", LabelFolderError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LabelFolderError(f"{path}: not a label folder description (\"format\" must be {FORMAT!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise LabelFolderError(f"{path}: \"format_version\" must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise LabelFolderError(f"{path}: format version {version} is newer than this software reads ({FORMAT_VERSION})")
    task_name = data.get("task")
    if task_name not in TASKS:
        raise LabelFolderError(f"{path}: unknown task {task_name!r}; known tasks: {', '.join(TASKS)}")
    task = TASKS[task_name]
    labels = data.get("labels")
    if not isinstance(labels, list) or tuple(labels) != task.labels:
        raise LabelFolderError(f"{path}: \"labels\" {labels!r} differ from task {task.name}'s {list(task.labels)}")
    cases_data = data.get("cases")
    if not isinstance(cases_data, list):
        raise LabelFolderError(f"{path}: \"cases\" must be a list")
    cases, seen = [], set()
    for position, entry in enumerate(cases_data):
        case = _parse_case(entry, task, folder, f"{path}: case {position + 1}")
        if case.id in seen:
            raise LabelFolderError(f"{path}: case id {case.id!r} appears twice")
        seen.add(case.id)
        cases.append(case)
    return LabelFolder(folder=folder, task=task.name, labels=task.labels, cases=cases)


def _parse_case(entry: Any, task: TaskSpec, folder: Path, where: str) -> LabelCase:
    if not isinstance(entry, dict):
        raise LabelFolderError(f"{where}: must be an object")
    case_id = entry.get("id")
    if not isinstance(case_id, str) or not case_id:
        raise LabelFolderError(f"{where}: \"id\" must be a non-empty string")
    where = f"{where} ({case_id!r})"
    image = _relative_file(entry.get("image"), folder, f"{where}: \"image\"")
    label = class_name = landmarks = None
    if task.kind == SEGMENTATION:
        label = _relative_file(entry.get("label"), folder, f"{where}: \"label\"")
    elif task.kind == CLASSIFICATION:
        class_name = entry.get("class")
        if class_name not in task.labels:
            raise LabelFolderError(f"{where}: \"class\" {class_name!r} is not one of {list(task.labels)}")
    else:
        landmarks = _parse_landmarks(entry.get("landmarks"), task, where)
    frame = entry.get("frame")
    if frame is not None and (not isinstance(frame, int) or frame < 0):
        raise LabelFolderError(f"{where}: \"frame\" must be null or a non-negative integer, got {frame!r}")
    return LabelCase(
        id=case_id, image=image, label=label, class_name=class_name, landmarks=landmarks,
        study_uid=str(entry.get("study_uid") or ""), series_uid=str(entry.get("series_uid") or ""), frame=frame,
        source=str(entry.get("source") or ""), created=str(entry.get("created") or ""),
        extra={k: v for k, v in entry.items() if k not in _KNOWN_KEYS},
    )


def _relative_file(value: Any, folder: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise LabelFolderError(f"{where} must be a file path relative to the folder")
    relative = Path(value)
    if relative.is_absolute() or ".." in relative.parts:
        raise LabelFolderError(f"{where} {value!r} must stay inside the folder")
    if not (folder / relative).is_file():
        raise LabelFolderError(f"{where}: {folder / relative} does not exist")
    return value


def _parse_landmarks(value: Any, task: TaskSpec, where: str) -> dict[str, list[list[float] | None]]:
    if not isinstance(value, dict) or not value:
        raise LabelFolderError(f"{where}: \"landmarks\" must map point names to per-slice lists")
    unknown = set(value) - set(task.labels)
    if unknown:
        raise LabelFolderError(f"{where}: unknown point name(s) {sorted(unknown)}; expected {list(task.labels)}")
    lengths = set()
    for name, per_slice in value.items():
        if not isinstance(per_slice, list):
            raise LabelFolderError(f"{where}: landmarks[{name!r}] must be a list with one entry per slice")
        for point in per_slice:
            if point is not None and not (
                isinstance(point, list) and len(point) == 3 and all(isinstance(v, (int, float)) for v in point)
            ):
                raise LabelFolderError(f"{where}: landmarks[{name!r}] entries must be [x, y, z] (LPS mm) or null, got {point!r}")
        lengths.add(len(per_slice))
    if len(lengths) != 1:
        raise LabelFolderError(f"{where}: every landmark list must have one entry per slice (lengths {sorted(lengths)})")
    return value


def _check_image_shape(task: TaskSpec, shape: tuple[int, ...], where: str) -> None:
    """The image a case stores must be the input its task's recipe needs (see the module doc)."""
    slices, frames = shape[:2]
    if task.input == INPUT_BASAL_FRAMES:
        if (slices, frames) != (1, 3):
            raise LabelFolderError(f"{where}: task {task.name} needs one slice with 3 frames (ED, halfway, ES), got {slices} x {frames}")
    elif frames != 1:
        raise LabelFolderError(f"{where}: task {task.name} needs one frame, got {frames}")
    elif task.input == INPUT_LGE_LEVELS and slices != 3:
        raise LabelFolderError(f"{where}: task {task.name} needs 3 slices (basal, mid, apical), got {slices}")


class LabelFolderWriter:
    """Adds cases to a label folder for ``task``; creates the folder on first use."""

    def __init__(self, folder: str | os.PathLike, task: TaskSpec | str) -> None:
        self.folder = Path(folder)
        self.task = task if isinstance(task, TaskSpec) else TASKS.get(task)
        if self.task is None:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        existing = self._read_existing()
        if existing is not None and existing.task != self.task.name:
            raise LabelFolderError(f"{existing.dataset_path}: this folder holds task {existing.task!r}, not {self.task.name!r}")

    def add_case(
        self,
        case_id: str,
        image: ImageStack | tuple[np.ndarray, np.ndarray],
        label: np.ndarray | None = None,
        class_name: str | None = None,
        landmarks_lps: dict[str, Any] | None = None,
        *,
        frame: int | None = None,
        **meta: Any,
    ) -> str:
        """Add one case; returns the id it was stored under (``case_id`` or a suffixed one).

        ``image``: an ImageStack or (pixels, ijk_to_lps) with pixels [slices, rows, cols]
        or [slices, frames, rows, cols]; ``frame`` picks one frame of a multi-frame image
        (except for ``basal_frames`` tasks, which store 3 frames). ``label``: uint8
        [slices, rows, cols] in the task's label indices (segmentation). ``class_name``:
        one of the task's labels (classification). ``landmarks_lps``: point name -> one
        entry per slice, an LPS point or None / NaN (landmarks). ``meta``: study_uid,
        series_uid, source and any further JSON-serialisable facts.
        """
        pixels, ijk_to_lps, info_uids = _image_parts(image)
        if frame is not None:
            if not 0 <= frame < pixels.shape[1]:
                raise ValueError(f"case {case_id!r}: frame {frame} is outside the image's {pixels.shape[1]} frame(s)")
            pixels = pixels[:, frame : frame + 1]
        elif pixels.shape[1] > 1 and self.task.input != INPUT_BASAL_FRAMES:
            raise ValueError(f"case {case_id!r}: the image has {pixels.shape[1]} frames; choose one with frame=")
        _check_image_shape(self.task, pixels.shape, f"case {case_id!r}")
        given = {"label": label, "class_name": class_name, "landmarks_lps": landmarks_lps}
        needed = {SEGMENTATION: "label", CLASSIFICATION: "class_name", LANDMARKS: "landmarks_lps"}[self.task.kind]
        stray = [name for name, value in given.items() if value is not None and name != needed]
        if stray:
            raise ValueError(f"case {case_id!r}: {', '.join(stray)} does not apply to {self.task.kind} task {self.task.name}")
        reserved = (set(meta) & _KNOWN_KEYS) - {"study_uid", "series_uid", "source"}
        if reserved:
            raise ValueError(f"case {case_id!r}: {', '.join(sorted(reserved))} cannot be given as metadata")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"case {case_id!r}: metadata must be JSON-serialisable ({exc})") from None
        entry: dict[str, Any] = {}
        if self.task.kind == SEGMENTATION:
            entry["label"] = self._checked_label(label, pixels.shape, case_id)
        elif self.task.kind == CLASSIFICATION:
            if class_name not in self.task.labels:
                raise ValueError(f"case {case_id!r}: class {class_name!r} is not one of {list(self.task.labels)}")
        else:
            entry["landmarks"] = self._checked_landmarks(landmarks_lps, pixels.shape[0], case_id)

        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self._read_existing()
        cases = existing.cases if existing is not None else []
        stored_id = self._free_id(case_id, {c.id for c in cases})
        image_rel = f"images/{stored_id}.nii.gz"
        _write_atomically(pixels[:, 0] if pixels.shape[1] == 1 else pixels, ijk_to_lps, self.folder / image_rel)
        label_rel = None
        if self.task.kind == SEGMENTATION:
            label_rel = f"labels/{stored_id}.nii.gz"
            _write_atomically(entry["label"], ijk_to_lps, self.folder / label_rel)
        extra = dict(meta)
        case = LabelCase(
            id=stored_id, image=image_rel, label=label_rel,
            class_name=class_name if self.task.kind == CLASSIFICATION else None,
            landmarks=entry.get("landmarks"),
            study_uid=str(extra.pop("study_uid", info_uids[0]) or ""),
            series_uid=str(extra.pop("series_uid", info_uids[1]) or ""),
            frame=frame, source=str(extra.pop("source", DEFAULT_SOURCE)),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            extra=extra,
        )
        self._write_dataset([*cases, case])
        return stored_id

    # --- helpers ---------------------------------------------------------------------
    def _read_existing(self) -> LabelFolder | None:
        if not (self.folder / DATASET_FILE).exists():
            return None
        return read_label_folder(self.folder)

    def _free_id(self, case_id: str, taken: set[str]) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"

        def in_use(candidate: str) -> bool:
            return candidate in taken or any(
                (self.folder / sub / f"{candidate}.nii.gz").exists() for sub in ("images", "labels")
            )

        candidate, n = base, 1
        while in_use(candidate):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _checked_label(self, label: np.ndarray | None, image_shape: tuple[int, ...], case_id: str) -> np.ndarray:
        if label is None:
            raise ValueError(f"case {case_id!r}: segmentation task {self.task.name} needs a label map")
        label = np.asarray(label)
        expected = (image_shape[0], *image_shape[2:])
        if label.shape != expected:
            raise ValueError(f"case {case_id!r}: label shape {label.shape} differs from the image's {expected}")
        if not np.array_equal(label, np.round(label)) or label.min() < 0 or label.max() >= len(self.task.labels):
            raise ValueError(f"case {case_id!r}: label values must be integers 0..{len(self.task.labels) - 1}")
        return label.astype(np.uint8)

    def _checked_landmarks(self, landmarks: dict[str, Any] | None, n_slices: int, case_id: str) -> dict:
        if not landmarks:
            raise ValueError(f"case {case_id!r}: landmark task {self.task.name} needs landmarks_lps")
        unknown = set(landmarks) - set(self.task.labels)
        if unknown:
            raise ValueError(f"case {case_id!r}: unknown point name(s) {sorted(unknown)}; expected {list(self.task.labels)}")
        result = {}
        for name in self.task.labels:
            per_slice = landmarks.get(name, [None] * n_slices)
            if len(per_slice) != n_slices:
                raise ValueError(f"case {case_id!r}: landmarks[{name!r}] has {len(per_slice)} entries for {n_slices} slices")
            points = []
            for point in per_slice:
                point = None if point is None else np.asarray(point, dtype=float)
                if point is not None and point.shape != (3,):
                    raise ValueError(f"case {case_id!r}: landmarks[{name!r}] entries must be LPS points [x, y, z] or None")
                points.append(None if point is None or np.isnan(point).any() else [round(float(v), 4) for v in point])
            result[name] = points
        return result

    def _write_dataset(self, cases: list[LabelCase]) -> None:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": self.task.name,
                "labels": list(self.task.labels), "cases": [c.to_json() for c in cases]}
        write_json(self.folder / DATASET_FILE, data)  # readers see the old or the new file, never half of one


def _image_parts(image: ImageStack | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """(pixels [S, F, R, C] float32, ijk_to_lps, (study_uid, series_uid)) of an image argument."""
    if isinstance(image, ImageStack):
        return image.pixels.astype(np.float32), image.ijk_to_lps, (image.info.study_uid, image.info.series_uid)
    try:
        pixels, ijk_to_lps = image
    except (TypeError, ValueError):
        raise TypeError("image must be an ImageStack or a (pixels, ijk_to_lps) pair") from None
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4:
        raise ValueError(f"image pixels must be [slices, rows, cols] or [slices, frames, rows, cols], got {pixels.shape}")
    ijk_to_lps = np.asarray(ijk_to_lps, dtype=float)
    if ijk_to_lps.shape != (4, 4):
        raise ValueError("ijk_to_lps must be a 4x4 matrix")
    return pixels, ijk_to_lps, ("", "")


def _write_atomically(array: np.ndarray, ijk_to_lps: np.ndarray, path: Path) -> None:
    """Write a volume under a temporary name in the same folder, then rename it into place.

    Not files.atomic_write: a label file is never replaced, so the rename fails if the name was taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        write_volume(array, ijk_to_lps, temp)
        try:
            os.link(temp, path)  # fails, rather than replaces, if the name was taken meanwhile
        except FileExistsError:
            raise FileExistsError(f"{path} appeared while writing; nothing overwritten") from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise FileExistsError(f"{path} appeared while writing; nothing overwritten") from None
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
