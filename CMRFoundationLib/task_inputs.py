"""How an image stack becomes the 3-channel network inputs of a task (its input recipe).

The recipes are declared in tasks.py. ``single`` uses every (slice, frame) image;
``lge_levels`` and ``basal_frames`` make one input per stack and need to know where the
base of the heart is and, for cine, which frames are end-diastole and end-systole. When
a short-axis segmentation is at hand, ``cardiac_levels`` reads that from it; otherwise
the fallbacks below are used and said so in the result's notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .stack import ImageStack
from .tasks import INPUT_BASAL_FRAMES, INPUT_LGE_LEVELS, INPUT_SINGLE, TaskSpec

# Without a segmentation, end-systole is assumed at this fraction of the cardiac cycle
# (typical of adults at rest); the pipeline replaces it with the segmented minimum.
DEFAULT_ES_FRACTION = 0.35


@dataclass
class CardiacLevels:
    """Where the base, mid and apex are in a short-axis stack, and its ED/ES frames."""

    basal_slice: int
    mid_slice: int
    apical_slice: int
    ed_frame: int = 0
    es_frame: int = 0
    notes: list[str] = field(default_factory=list)


def cardiac_levels(labels: np.ndarray, lv_blood: int, lv_myocardium: int, rv_blood: int | None = None) -> CardiacLevels:
    """Levels and phases from a short-axis label map [slices, frames, rows, cols].

    ED and ES are the frames of largest and smallest LV blood pool; the LV's slices are
    those with blood pool and myocardium at ED; which end is the base follows
    ``measurements.guess_basal_end`` (one rule for the whole project).
    """
    from .measurements import guess_basal_end

    blood = (labels == lv_blood).sum(axis=(2, 3))  # [slices, frames]
    notes = []
    volume = blood.sum(axis=0)
    ed = int(np.argmax(volume))
    es = int(np.argmin(volume)) if labels.shape[1] > 1 else ed
    myo = (labels[:, ed] == lv_myocardium).sum(axis=(1, 2))
    lv_slices = np.flatnonzero((blood[:, ed] > 0) & (myo > 0))
    if lv_slices.size == 0:
        notes.append("no LV found in the segmentation; levels are the stack's first, middle and last slices")
        return CardiacLevels(0, labels.shape[0] // 2, labels.shape[0] - 1, ed, es, notes)
    first, last = int(lv_slices[0]), int(lv_slices[-1])
    end = guess_basal_end(labels[:, ed], lv_blood=lv_blood, lv_myocardium=lv_myocardium, rv_blood=rv_blood)
    basal, apical = (first, last) if end == "first" else (last, first)
    return CardiacLevels(basal, (first + last) // 2, apical, ed, es, notes)


def fallback_levels(stack: ImageStack) -> CardiacLevels:
    """Levels without a segmentation: the stack's own order and a typical ES timing."""
    n = stack.n_slices
    frames = stack.n_frames
    es = int(round(DEFAULT_ES_FRACTION * frames)) if frames > 1 else 0
    return CardiacLevels(
        0, n // 2, n - 1, 0, min(es, frames - 1),
        notes=["levels taken as the stack's first, middle and last slices (no segmentation given)",
               f"ED assumed at the first frame and ES at {DEFAULT_ES_FRACTION:.0%} of the cycle"],
    )


def native_spacing(stack: ImageStack) -> tuple[float, float]:
    """In-plane (row, col) spacing in mm."""
    spacing = stack.spacing  # (col, row, slice)
    return float(spacing[1]), float(spacing[0])


def single_inputs(stack: ImageStack) -> np.ndarray:
    """Every (slice, frame) image repeated over 3 channels: [slices*frames, 3, rows, cols]."""
    images = stack.pixels.reshape(-1, *stack.pixels.shape[2:]).astype(np.float32)
    return np.repeat(images[:, None], 3, axis=1)


def lge_level_input(stack: ImageStack, levels: CardiacLevels) -> np.ndarray:
    """Basal, mid and apical slices (first frame) as one [1, 3, rows, cols] input."""
    picks = [levels.basal_slice, levels.mid_slice, levels.apical_slice]
    return stack.pixels[picks, 0].astype(np.float32)[None]


def basal_frames_input(stack: ImageStack, levels: CardiacLevels) -> np.ndarray:
    """The basal slice at ED, halfway to ES, and ES as one [1, 3, rows, cols] input."""
    ed, es = levels.ed_frame, levels.es_frame
    frames = stack.pixels[levels.basal_slice].astype(np.float32)
    if es >= ed:
        halfway = frames[(ed + es) // 2]
    else:  # ES before ED in the stored order (cycle wraps around)
        halfway = frames[((ed + es + stack.n_frames) // 2) % stack.n_frames]
    return np.stack([frames[ed], halfway, frames[es]])[None]


def task_inputs(task: TaskSpec, stack: ImageStack, levels: CardiacLevels | None = None) -> np.ndarray:
    """The [N, 3, rows, cols] inputs of ``task`` for ``stack`` (N = slices*frames for ``single``, else 1)."""
    if task.input == INPUT_SINGLE:
        return single_inputs(stack)
    levels = levels or fallback_levels(stack)
    if task.input == INPUT_LGE_LEVELS:
        return lge_level_input(stack, levels)
    if task.input == INPUT_BASAL_FRAMES:
        if stack.n_frames < 2:
            raise ValueError(f"task {task.name} needs a cine stack; this one has a single frame ({stack.describe()})")
        return basal_frames_input(stack, levels)
    raise ValueError(f"task {task.name}: unknown input recipe {task.input!r}")
