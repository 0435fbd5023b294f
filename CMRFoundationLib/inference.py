"""Running a task's model on images: pre-processing, batching, and back to native pixels.

``TaskPredictor`` works on numpy arrays ([N, 3, rows, cols] with one in-plane spacing)
and on ImageStacks. Every output is on the input's own pixel grid: label maps, landmark
coordinates (pixels, and LPS mm for stacks) and class probabilities. The model runs in
eval mode under ``torch.inference_mode``, so the same input gives the same output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .models import build_from_architecture
from .models.heads import heatmap_peaks
from .preprocess import PreprocessConfig, preprocess
from .stack import ImageStack, numbered
from .task_inputs import CardiacLevels, cardiac_levels, native_spacing, task_inputs
from .tasks import (
    INPUT_BASAL_FRAMES,
    INPUT_LGE_LEVELS,
    INPUT_SINGLE,
    LANDMARKS,
    MIN_LANDMARK_CONFIDENCE,
    SEGMENTATION,
    TaskSpec,
    get_task,
)
from .weights import available_tasks, load_task_state, resolve_weights_dir

# The segmentation that locates base/mid/apex (and ED/ES) for the stack-level recipes.
LEVELS_FROM = {INPUT_LGE_LEVELS: "seg_lge", INPUT_BASAL_FRAMES: "seg_sax_cine"}


def choose_device(name: str | None = "auto") -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but torch sees no GPU (is the CPU build of torch installed?)")
    return torch.device(name)


def load_task_model(task: str | TaskSpec, weights_dir: str | Path | None = None, device: str | None = "auto"):
    """The task's model from verified weights, in eval mode: (model, manifest)."""
    task = get_task(task) if isinstance(task, str) else task
    state, manifest = load_task_state(resolve_weights_dir(weights_dir), task.name)
    model = build_from_architecture(task, manifest["architecture"])
    model.load_state_dict(state, strict=True)
    return model.eval().to(choose_device(device)), manifest


@dataclass
class ImagePredictions:
    """Outputs for N input images, on their native grid."""

    task: str
    labels: np.ndarray | None = None  # segmentation: uint8 [N, rows, cols]
    points: np.ndarray | None = None  # landmarks: (row, col) pixels [N, K, 2], NaN when not found
    confidence: np.ndarray | None = None  # landmarks: heatmap peak [N, K]
    probabilities: np.ndarray | None = None  # classification: [N, classes]
    certainty: np.ndarray | None = None  # segmentation: [N] (see segmentation_certainty)


class TaskPredictor:
    def __init__(self, task: TaskSpec | str, model: torch.nn.Module, preprocessing: PreprocessConfig,
                 device: str | torch.device | None = "auto", batch_size: int = 16, manifest: dict | None = None) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.model = model.eval().to(self.device)
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.manifest = manifest or {}

    @classmethod
    def load(cls, task: str | TaskSpec, weights_dir: str | Path | None = None, device: str | None = "auto",
             batch_size: int = 16) -> "TaskPredictor":
        model, manifest = load_task_model(task, weights_dir, device)
        preprocessing = PreprocessConfig.from_dict(manifest["preprocessing"])
        return cls(task, model, preprocessing, next(model.parameters()).device, batch_size, manifest)

    # --- arrays ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict_images(self, images: np.ndarray, spacing: tuple[float, float], progress=None) -> ImagePredictions:
        """Predict [N, 3, rows, cols] images (or [N, rows, cols], repeated over 3 channels) of one grid."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = np.repeat(images[:, None], 3, axis=1)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, rows, cols] or [N, rows, cols], got shape {images.shape}")
        kind = self.task.kind
        outputs: dict[str, list[np.ndarray]] = {"labels": [], "points": [], "confidence": [], "probabilities": [],
                                                "certainty": []}
        for start in range(0, len(images), self.batch_size):
            batch, grid = preprocess(images[start:start + self.batch_size], spacing, self.preprocessing)
            output = self.model(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)).float()
            if kind == SEGMENTATION:
                probabilities = torch.softmax(output, dim=1).cpu().numpy()
                native = grid.to_native(probabilities, fill=_background_fill(probabilities.shape[1]))
                outputs["labels"].append(native.argmax(axis=1).astype(np.uint8))
                outputs["certainty"].append(segmentation_certainty(probabilities))
            elif kind == LANDMARKS:
                points, confidence = heatmap_peaks(output)
                points = grid.model_to_native_points(points.cpu().numpy().astype(np.float64))
                confidence = confidence.cpu().numpy()
                points[confidence < MIN_LANDMARK_CONFIDENCE] = np.nan
                outputs["points"].append(points)
                outputs["confidence"].append(confidence)
            else:
                outputs["probabilities"].append(torch.softmax(output, dim=1).cpu().numpy())
            if progress:
                progress(min(len(images), start + self.batch_size), len(images))
        joined = {k: np.concatenate(v) for k, v in outputs.items() if v}
        return ImagePredictions(self.task.name, **joined)

    # --- stacks ----------------------------------------------------------------------
    def predict_stack(self, stack: ImageStack, levels: CardiacLevels | None = None, progress=None) -> "StackPrediction":
        """Predict a stack; label maps come back [slices, frames, rows, cols] in its geometry."""
        inputs = task_inputs(self.task, stack, levels)
        result = self.predict_images(inputs, native_spacing(stack), progress)
        prediction = StackPrediction(self.task, stack)
        grid_shape = stack.pixels.shape[:2]
        if self.task.kind == SEGMENTATION:
            prediction.labels = result.labels.reshape(stack.pixels.shape)
            prediction.certainty = result.certainty.reshape(grid_shape)
        elif self.task.kind == LANDMARKS:
            prediction.points_rc = result.points.reshape(*grid_shape, *result.points.shape[1:])
            prediction.confidence = result.confidence.reshape(*grid_shape, -1)
        else:
            if self.task.input == INPUT_SINGLE:
                prediction.image_probabilities = result.probabilities.reshape(*grid_shape, -1)
                prediction.probabilities = result.probabilities.mean(axis=0)
            else:
                prediction.probabilities = result.probabilities[0]
            if self.task.input != INPUT_SINGLE:
                prediction.notes += levels.notes if levels else [
                    "inputs chosen without a segmentation (see task_inputs.fallback_levels)"]
        return prediction


def segmentation_certainty(probabilities: np.ndarray) -> np.ndarray:
    """How sure the model is of each image's segmentation: the mean winning probability over
    the pixels it labels as a structure (softmax [N, classes, rows, cols] -> [N]; NaN where it
    labels none). Near 1 where every structure is clear-cut; it drops where the model hesitates
    between structures or between a structure and background, which is where its contours
    go wrong (Training/evaluate_certainty.py relates it to Dice)."""
    winner = probabilities.max(axis=1)
    foreground = probabilities.argmax(axis=1) > 0
    counts = foreground.sum(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, (winner * foreground).sum(axis=(1, 2)) / np.maximum(counts, 1), np.nan)


def levels_from_segmentation(task: TaskSpec, stack: ImageStack, weights_dir: str | Path | None = None,
                             device: str | None = "auto") -> CardiacLevels | None:
    """Base/mid/apex and ED/ES of ``stack`` from the matching segmentation model, for the
    tasks whose input needs them; None when the task doesn't or that model is absent."""
    segmentation = LEVELS_FROM.get(task.input)
    if segmentation is None or segmentation not in available_tasks(weights_dir):
        return None
    predictor = TaskPredictor.load(segmentation, weights_dir, device)
    labels = predictor.predict_stack(stack).labels
    names = predictor.task.labels
    rv = names.index("rv_blood_pool") if "rv_blood_pool" in names else None
    levels = cardiac_levels(labels, names.index("lv_blood_pool"), names.index("lv_myocardium"), rv)
    levels.notes.insert(0, f"levels from {segmentation}: basal slice {numbered(levels.basal_slice)}, mid {numbered(levels.mid_slice)}, "
                           f"apical {numbered(levels.apical_slice)}, ED frame {numbered(levels.ed_frame)}, "
                           f"ES frame {numbered(levels.es_frame)}")
    return levels


def _background_fill(n_classes: int) -> np.ndarray:
    """Outside the model's field of view a pixel is background with certainty."""
    fill = np.zeros(n_classes, dtype=np.float32)
    fill[0] = 1.0
    return fill


@dataclass
class StackPrediction:
    task: TaskSpec
    stack: ImageStack
    labels: np.ndarray | None = None  # uint8 [slices, frames, rows, cols]
    points_rc: np.ndarray | None = None  # [slices, frames, K, 2] (row, col) pixels, NaN when not found
    confidence: np.ndarray | None = None  # [slices, frames, K]
    certainty: np.ndarray | None = None  # segmentation: [slices, frames] (see segmentation_certainty)
    probabilities: np.ndarray | None = None  # [classes], for the whole stack
    image_probabilities: np.ndarray | None = None  # [slices, frames, classes] for per-image tasks
    notes: list[str] = field(default_factory=list)

    @property
    def class_name(self) -> str | None:
        return None if self.probabilities is None else self.task.labels[int(np.argmax(self.probabilities))]

    def points_lps(self) -> np.ndarray | None:
        """Landmarks in patient LPS mm, [slices, frames, K, 3], at each slice's true depth."""
        if self.points_rc is None:
            return None
        return self.stack.pixel_points_to_lps(self.points_rc)

    def to_dict(self) -> dict:
        """JSON-able summary (label maps are written as volumes, not here)."""
        info = self.stack.info
        out = {"task": self.task.name, "series_uid": info.series_uid, "series_number": info.series_number,
               "series_description": info.series_description, "stack": self.stack.describe(), "notes": self.notes}
        if self.labels is not None:
            spacing = self.stack.spacing
            voxel_ml = float(np.prod(spacing)) / 1000.0
            out["voxels_per_label"] = {name: int((self.labels == i).sum()) for i, name in enumerate(self.task.labels) if i}
            out["volume_ml_per_frame"] = {
                name: [round(float((self.labels[:, f] == i).sum()) * voxel_ml, 3) for f in range(self.labels.shape[1])]
                for i, name in enumerate(self.task.labels) if i
            }
        if self.points_rc is not None:
            lps = self.points_lps()
            out["landmarks"] = [
                {"slice": s, "frame": f, **{name: (None if np.isnan(lps[s, f, k]).any() else
                                                  {"lps": [round(float(v), 3) for v in lps[s, f, k]],
                                                   "row_col": [round(float(v), 3) for v in self.points_rc[s, f, k]],
                                                   "confidence": round(float(self.confidence[s, f, k]), 4)})
                                            for k, name in enumerate(self.task.labels)}}
                for s in range(lps.shape[0]) for f in range(lps.shape[1])
            ]
        if self.probabilities is not None:
            out["class"] = self.class_name
            out["probabilities"] = {name: round(float(p), 5) for name, p in zip(self.task.labels, self.probabilities)}
        return out
