"""Samples for all nine tasks from synthetic studies (CMRFoundationLib.synthetic).

A synthetic cache is a folder of studies, ``ROOT/seed_NNNN/`` (DICOM/ and ground_truth/
as ``make_sample_study`` writes them), built once with ``build_synthetic_cache``; the
pathology cycles with the seed (``PATHOLOGIES[seed % 5]``) so every disease class
appears. Samples come from the DICOM as the reader sees it (so training sees the same
pixels as inference) and from the exact label maps beside it; each DICOM stack is
matched to its truth stack by series number and geometry.

What each task takes from a study:

- image_type: every series (truth ``image_type``: localizer and HASTE are "other", T1
  native and post-contrast maps are "t1").
- cine_view: the cine series (truth ``view``) and the bSSFP localizer as "other" (a
  bSSFP image of a non-cardiac plane, which is what "other" stands for).
- seg_sax_cine: SAX cine; LV blood 1, LV myocardium (+infarct, MVO) 2, RV blood 3; the
  RV myocardium and everything else is background.
- seg_4ch_cine: 4-chamber cine; LV blood, LV myocardium (+infarct, MVO), LA, RA.
- seg_lge, seg_mapping: LGE; T1 native, T2 and T1 post maps; LV blood and myocardium.
- rv_insertion: SAX cine slices that have truth points, at the truth frame (ED), and at
  ES the points derived from the labels as on ACDC (rv_insertion.py, validated against
  the truth at ED).
- lge_presence: the LGE stack's basal, mid and apical labelled slices; truth lge_present.
- disease: the SAX cine's most basal slice with LV blood and myocardium at ED, frames ED,
  halfway to ES and ES; truth pathology.

Frames: every frame of single-slice cines, and every ``CINE_FRAME_STEP``-th frame plus
ED and ES of multi-slice cines, so that the SAX stack does not swamp the other views.
Every slice is kept for segmentation, also slices without any label (true background:
below the apex, above the base).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from CMRFoundationLib.dicom import index_study, load_stack
from CMRFoundationLib.measurements.insertion_points import rv_insertion_points
from CMRFoundationLib.stack import ImageStack
from CMRFoundationLib.synthetic.phantom import PATHOLOGIES
from CMRFoundationLib.synthetic.study import load_label_map, load_truth, make_sample_study
from CMRFoundationLib.tasks import CINE_VIEWS, DISEASES, IMAGE_TYPES, TASKS, TaskSpec

from .sample import Sample, as_task, base_to_apex, lge_levels, remap_labels, repeat3, require_task

log = logging.getLogger(__name__)

SYNTHETIC_TASKS = tuple(TASKS)
CINE_FRAME_STEP = 3
STUDY_PREFIX = "seed_"

# Synthetic label values (phantom.LABEL_NAMES) -> task label indices.
LV_LABELS = {1: 1, 2: 2, 8: 2, 9: 2}  # infarct and MVO are myocardium
SAX_CINE_LABELS = {**LV_LABELS, 3: 3}
FOUR_CH_LABELS = {**LV_LABELS, 5: 3, 6: 4}
_LV_EPICARDIUM = (1, 2, 8, 9)


def study_folder(root: str | os.PathLike, seed: int) -> Path:
    """Where the study of ``seed`` lives in a synthetic cache."""
    return Path(root) / f"{STUDY_PREFIX}{seed:04d}"


def pathology_for_seed(seed: int) -> str:
    """The disease class the cache gives ``seed``: cycles so every class appears."""
    return PATHOLOGIES[seed % len(PATHOLOGIES)]


def build_synthetic_cache(root: str | os.PathLike, seeds: Iterable[int], frames: int = 6, progress=print) -> list[Path]:
    """Generate the synthetic studies of ``seeds`` under ``root`` (skipping finished ones).

    Each study is rendered into a temporary folder and renamed when complete, so an
    interrupted run never leaves a half-written study that looks finished.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folders = []
    for seed in seeds:
        folder = study_folder(root, seed)
        folders.append(folder)
        if (folder / "ground_truth" / "study.json").is_file():
            continue
        if folder.exists():
            raise FileExistsError(f"{folder} exists but holds no ground_truth/study.json; remove it to regenerate")
        partial = root / f".partial_{folder.name}"
        if partial.exists():
            shutil.rmtree(partial)  # our own leftover from an interrupted run
        if progress:
            progress(f"synthetic study seed {seed} ({pathology_for_seed(seed)}), {frames} frames")
        make_sample_study(partial, seed=seed, pathology=pathology_for_seed(seed), frames=frames)
        partial.rename(folder)
    return folders


def _under(root: Path, folder: Path) -> Path:
    """``folder`` as given when it is absolute or already starts with ``root``, else under ``root``."""
    return folder if folder.is_absolute() or folder.is_relative_to(root) else root / folder


def study_folders(root: str | os.PathLike, studies: Iterable[int | str | os.PathLike] | None = None) -> list[Path]:
    """The study folders to read: ``root`` itself if it is a study, else its studies.

    ``studies`` selects by seed (int) or by folder (name under ``root``, or a path).
    """
    root = Path(root)
    if studies is not None:
        selected = [study_folder(root, s) if isinstance(s, (int, np.integer)) else _under(root, Path(s)) for s in studies]
        missing = [str(f) for f in selected if not (f / "ground_truth" / "study.json").is_file()]
        if missing:
            raise FileNotFoundError(f"not synthetic studies (no ground_truth/study.json): {', '.join(missing)}")
        return selected
    if (root / "ground_truth" / "study.json").is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such synthetic cache folder")
    return sorted(f for f in root.iterdir() if (f / "ground_truth" / "study.json").is_file())


def synthetic_samples(
    task: TaskSpec | str, root: str | os.PathLike, studies: Iterable[int | str | os.PathLike] | None = None
) -> list[Sample]:
    """Samples of ``task`` from the synthetic studies under ``root`` (see the module doc)."""
    task = as_task(task)
    require_task(task, SYNTHETIC_TASKS, "synthetic")
    samples: list[Sample] = []
    for folder in study_folders(root, studies):
        samples += _study_samples(task, folder)
    return samples


def _study_samples(task: TaskSpec, folder: Path) -> list[Sample]:
    truth = load_truth(folder)
    case = f"synthetic-{truth['seed']:04d}"
    series = [s for s in truth["series"] if _series_wanted(task, s)]
    samples = []
    for stack, series_truth, labels in _matched_stacks(folder, series):
        samples += _stack_samples(task, stack, series_truth, labels, truth, case)
    return samples


def _series_wanted(task: TaskSpec, series: dict) -> bool:
    image_type, view = series["image_type"], series["view"]
    if task.name == "image_type":
        return True
    if task.name == "cine_view":
        return image_type == "cine" or series["sequence"] == "bssfp"
    if task.name in ("seg_sax_cine", "rv_insertion", "disease"):
        return image_type == "cine" and view == "sax"
    if task.name == "seg_4ch_cine":
        return image_type == "cine" and view == "4ch"
    if task.name in ("seg_lge", "lge_presence"):
        return image_type == "lge"
    if task.name == "seg_mapping":
        return image_type in ("t1", "t2")
    return False


def _matched_stacks(folder: Path, series: list[dict]):
    """(ImageStack, series truth, labels [S, F, R, C]) for each wanted stack of the study."""
    for series_truth in series:
        # Index only this series' folder: reading every header of the study per task is slow.
        for entry in index_study(folder / series_truth["folder"]).stacks:
            if entry.info.series_number != series_truth["number"]:
                continue
            truth_stack = next(
                (t for t in series_truth["stacks"]
                 if tuple(t["shape"]) == tuple(entry.shape) and np.allclose(t["ijk_to_lps"], entry.ijk_to_lps, atol=1e-3)),
                None,
            )
            if truth_stack is None:
                log.warning("%s: stack %s of series %s matches no ground-truth stack; skipped",
                            folder, entry.describe(), entry.info.series_number)
                continue
            labels, _ = load_label_map(folder, truth_stack["label_file"])
            yield load_stack(entry), series_truth, labels


def _cine_frames(n_slices: int, n_frames: int, truth: dict) -> list[int]:
    if n_frames == 1 or n_slices == 1:
        return list(range(n_frames))
    cine = truth["cine"]
    return sorted(set(range(0, n_frames, CINE_FRAME_STEP)) | {cine["ed_frame"], cine["es_frame"]})


def _stack_samples(task: TaskSpec, stack: ImageStack, series: dict, labels: np.ndarray, truth: dict, case: str) -> list[Sample]:
    spacing = (float(stack.spacing[1]), float(stack.spacing[0]))  # (row, col)
    pixels = stack.pixels
    n_slices, n_frames = pixels.shape[:2]
    frames = _cine_frames(n_slices, n_frames, truth)

    def per_image(target_of) -> list[Sample]:
        return [Sample(repeat3(pixels[k, f]), spacing, target_of(k, f), case, "synthetic")
                for k in range(n_slices) for f in frames]

    if task.name == "image_type":
        return per_image(lambda k, f: IMAGE_TYPES.index(series["image_type"]))
    if task.name == "cine_view":
        return per_image(lambda k, f: CINE_VIEWS.index(series["view"]))
    mapping = {"seg_sax_cine": SAX_CINE_LABELS, "seg_4ch_cine": FOUR_CH_LABELS,
               "seg_lge": LV_LABELS, "seg_mapping": LV_LABELS}.get(task.name)
    if mapping is not None:
        return per_image(lambda k, f: remap_labels(labels[k, f], mapping))
    if task.name == "rv_insertion":
        return _rv_insertion_samples(stack, labels, truth, spacing, case)
    if task.name == "lge_presence":
        ordered = base_to_apex(np.isin(labels[:, 0], _LV_EPICARDIUM).sum(axis=(1, 2)))
        if not ordered:
            return []
        return [Sample(lge_levels(pixels[:, 0], ordered), spacing, int(truth["lge_present"]), case, "synthetic")]
    if task.name == "disease":
        return _disease_samples(pixels, labels, spacing, truth, case)
    raise AssertionError(task.name)


def _rv_insertion_samples(stack: ImageStack, labels: np.ndarray, truth: dict, spacing, case: str) -> list[Sample]:
    """Truth points at the truth frame (ED); at ES, points derived from the labels as on ACDC."""
    points_truth = truth["rv_insertion_points"]
    frame = points_truth["frame"]
    samples = []
    for entry in points_truth["slices"]:
        ijk = stack.lps_to_ijk_points(np.array([entry["anterior_lps"], entry["inferior_lps"]]))
        target = ijk[:, [1, 0]].astype(np.float32)  # (i=col, j=row) -> (row, col)
        samples.append(Sample(repeat3(stack.pixels[entry["slice"], frame]), spacing, target, case, "synthetic"))
    es = truth["cine"]["es_frame"]
    if es != frame:
        for k in range(stack.n_slices):
            points = rv_insertion_points(np.isin(labels[k, es], _LV_EPICARDIUM), labels[k, es] == 3)
            if points is not None:
                samples.append(Sample(repeat3(stack.pixels[k, es]), spacing, points, case, "synthetic"))
    return samples


def _disease_samples(pixels: np.ndarray, labels: np.ndarray, spacing, truth: dict, case: str) -> list[Sample]:
    cine = truth["cine"]
    ed, es = cine["ed_frame"], cine["es_frame"]
    n_frames = pixels.shape[1]
    halfway = (ed + ((es - ed) % n_frames) // 2) % n_frames
    ed_labels = labels[:, ed]
    ordered = base_to_apex(np.isin(ed_labels, _LV_EPICARDIUM).sum(axis=(1, 2)))
    basal = next((k for k in ordered if (ed_labels[k] == 1).any() and np.isin(ed_labels[k], (2, 8, 9)).any()), None)
    if basal is None:
        return []
    image = pixels[basal, [ed, halfway, es]].astype(np.float32)
    return [Sample(image, spacing, DISEASES.index(truth["pathology"]), case, "synthetic")]

