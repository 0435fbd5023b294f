"""The task registry: the nine tasks of a CMR read, each declared once.

A task says what goes into the network (its input recipe), what comes out (its labels
and head), how it is trained (loss) and how it is judged (metric). Everything else
(model building, training, evaluation, inference, the weights manifest) reads these
entries, so adding a task is adding one entry here.

Input recipes, as in the method:
- ``single``: one 2D image repeated over the 3 input channels.
- ``lge_levels``: the basal, mid and apical slices of a short-axis LGE stack as the
  3 channels (one sample per stack).
- ``basal_frames``: three frames of the basal short-axis cine slice as the 3 channels:
  end-diastole, the frame halfway to end-systole, and end-systole. Where only ED and ES
  exist (ACDC), the halfway channel is their mean.
"""

from __future__ import annotations

from dataclasses import dataclass

SEGMENTATION = "segmentation"
LANDMARKS = "landmarks"
CLASSIFICATION = "classification"

INPUT_SINGLE = "single"
INPUT_LGE_LEVELS = "lge_levels"
INPUT_BASAL_FRAMES = "basal_frames"

# A landmark whose heatmap peak is below this is reported as not found.
MIN_LANDMARK_CONFIDENCE = 0.2


@dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    kind: str  # SEGMENTATION | LANDMARKS | CLASSIFICATION
    labels: tuple[str, ...]  # segmentation: index 0 is background; landmarks: point names
    input: str  # INPUT_SINGLE | INPUT_LGE_LEVELS | INPUT_BASAL_FRAMES
    applies_to: str  # which series the task reads, in words (for users and the manifest)
    loss: str  # "dice_ce" | "ce" | "heatmap_mse"
    metric: str  # "dice" | "accuracy" | "landmark_error_mm"
    # Landmarks only: the Gaussian of the target heatmap, in mm (= pixels at 1 mm).
    heatmap_sigma_mm: float = 3.0

    @property
    def n_outputs(self) -> int:
        """Output channels of the head: classes, or one heatmap per landmark."""
        return len(self.labels)

    @property
    def is_dense(self) -> bool:
        """True when the head predicts an image (segmentation or heatmaps)."""
        return self.kind in (SEGMENTATION, LANDMARKS)


IMAGE_TYPES = ("cine", "lge", "t1", "t2", "other")
CINE_VIEWS = ("sax", "2ch", "3ch", "4ch", "aorta", "other")
DISEASES = ("NOR", "DCM", "HCM", "MINF", "RV")  # ACDC's groups; RV = abnormal right ventricle

_TASKS = (
    TaskSpec(
        name="image_type",
        title="Image type",
        kind=CLASSIFICATION,
        labels=IMAGE_TYPES,
        input=INPUT_SINGLE,
        applies_to="any MR image",
        loss="ce",
        metric="accuracy",
    ),
    TaskSpec(
        name="cine_view",
        title="Cine view",
        kind=CLASSIFICATION,
        labels=CINE_VIEWS,
        input=INPUT_SINGLE,
        applies_to="cine images",
        loss="ce",
        metric="accuracy",
    ),
    TaskSpec(
        name="seg_sax_cine",
        title="Short-axis cine segmentation",
        kind=SEGMENTATION,
        labels=("background", "lv_blood_pool", "lv_myocardium", "rv_blood_pool"),
        input=INPUT_SINGLE,
        applies_to="short-axis cine",
        loss="dice_ce",
        metric="dice",
    ),
    TaskSpec(
        name="seg_4ch_cine",
        title="Four-chamber cine segmentation",
        kind=SEGMENTATION,
        labels=("background", "lv_blood_pool", "lv_myocardium", "la_blood_pool", "ra_blood_pool"),
        input=INPUT_SINGLE,
        applies_to="4-chamber cine",
        loss="dice_ce",
        metric="dice",
    ),
    TaskSpec(
        name="seg_lge",
        title="LGE segmentation",
        kind=SEGMENTATION,
        labels=("background", "lv_blood_pool", "lv_myocardium"),
        input=INPUT_SINGLE,
        applies_to="short-axis LGE",
        loss="dice_ce",
        metric="dice",
    ),
    TaskSpec(
        name="seg_mapping",
        title="T1/T2 map segmentation",
        kind=SEGMENTATION,
        labels=("background", "lv_blood_pool", "lv_myocardium"),
        input=INPUT_SINGLE,
        applies_to="short-axis T1 or T2 maps",
        loss="dice_ce",
        metric="dice",
    ),
    TaskSpec(
        name="rv_insertion",
        title="RV insertion points",
        kind=LANDMARKS,
        labels=("anterior_rv_insertion", "inferior_rv_insertion"),
        input=INPUT_SINGLE,
        applies_to="short-axis cine",
        loss="heatmap_mse",
        metric="landmark_error_mm",
    ),
    TaskSpec(
        name="lge_presence",
        title="LGE presence",
        kind=CLASSIFICATION,
        labels=("absent", "present"),
        input=INPUT_LGE_LEVELS,
        applies_to="short-axis LGE stack (basal, mid, apical slices)",
        loss="ce",
        metric="accuracy",
    ),
    TaskSpec(
        name="disease",
        title="Disease class",
        kind=CLASSIFICATION,
        labels=DISEASES,
        input=INPUT_BASAL_FRAMES,
        applies_to="short-axis cine (basal slice at ED, mid-systole, ES)",
        loss="ce",
        metric="accuracy",
    ),
)

TASKS: dict[str, TaskSpec] = {task.name: task for task in _TASKS}


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name``; a clear error listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
