"""Training data: every source yields ``Sample`` objects for one task.

Sources: ``acdc`` and ``emidec`` (real data in ../shared/data, skipped with a logged
message when absent), ``synthetic`` (a cache built by ``build_synthetic_cache``) and
label folders (corrections exported from Slicer). Splits are patient-level and fixed
(see splits.py).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from CMRFoundationLib.label_folder import LabelCase, read_label_folder
from CMRFoundationLib.synthetic.study import load_truth
from CMRFoundationLib.tasks import CLASSIFICATION, TaskSpec

from .acdc import ACDC_TASKS, acdc_samples
from .emidec import EMIDEC_TASKS, emidec_samples
from .label_folders import case_samples
from .sample import Sample, as_task
from .splits import SPLITS, hashed_split, load_split, synthetic_split
from .synthetic import SYNTHETIC_TASKS, build_synthetic_cache, study_folders, synthetic_samples

__all__ = [
    "SOURCES",
    "Sample",
    "build_synthetic_cache",
    "samples_for",
    "summarize",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO.parent / "shared" / "data"
SOURCES = {"acdc": ACDC_TASKS, "emidec": EMIDEC_TASKS, "synthetic": SYNTHETIC_TASKS}


def samples_for(
    task: TaskSpec | str,
    sources: Sequence[str],
    split: str,
    *,
    shared_root: str | os.PathLike = SHARED_DATA,
    synthetic_root: str | os.PathLike | None = None,
    label_folders: Iterable[str | os.PathLike] = (),
) -> list[Sample]:
    """The samples of ``task`` in ``split`` ("train", "val", "test" or "all") from ``sources``.

    ``sources`` names data sets ("acdc", "emidec", "synthetic"); a real data set whose
    folder is absent, or "synthetic" without a cache, is skipped with a logged message.
    Every folder in ``label_folders`` is added too (it must hold ``task``).
    """
    task = as_task(task)
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or 'all'")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown data source(s) {unknown}; known: {', '.join(SOURCES)} (label folders go in label_folders)")
    shared_root = Path(shared_root)
    samples: list[Sample] = []
    for source in sources:
        if task.name not in SOURCES[source]:
            raise ValueError(f"source {source!r} has no data for task {task.name!r}; it supports: {', '.join(SOURCES[source])}")
        if source == "synthetic":
            samples += _synthetic(task, split, synthetic_root)
            continue
        root = shared_root / source
        if not root.is_dir():
            log.warning("%s: data folder %s is absent; source skipped", source, root)
            continue
        members = None if split == "all" else load_split(source)[split]
        if source == "acdc":
            samples += acdc_samples(task, root, members)
        else:
            samples += emidec_samples(task, root, members)
    for folder in label_folders:
        samples += _label_folder(task, Path(folder), split)
    return samples


def _synthetic(task: TaskSpec, split: str, root: str | os.PathLike | None) -> list[Sample]:
    if root is None or not Path(root).is_dir():
        log.warning("synthetic: no synthetic cache (%s); source skipped (build one with build_synthetic_cache)", root)
        return []
    folders = study_folders(root)
    if split != "all":
        folders = [f for f in folders if synthetic_split(load_truth(f)["seed"]) == split]
    return synthetic_samples(task, root, folders) if folders else []


def _label_folder(task: TaskSpec, folder: Path, split: str) -> list[Sample]:
    """A label folder's cases in ``split``: hashed by study (else case) so a study stays in one split."""
    labels = read_label_folder(folder)
    if labels.task != task.name:
        raise ValueError(f"{labels.dataset_path}: holds task {labels.task!r}, not {task.name!r}")

    def split_of(case: LabelCase) -> str:
        return hashed_split(f"{folder.name}/{case.study_uid or case.id}")

    return [s for case in labels.cases if split in ("all", split_of(case)) for s in case_samples(labels, case)]


def summarize(samples: Sequence[Sample], task: TaskSpec | str | None = None) -> str:
    """One line for logs: counts per source, cases, and per class for classification."""
    if not samples:
        return "0 samples"
    by_source = Counter(s.source for s in samples)
    cases = len({(s.source, s.case) for s in samples})
    text = f"{len(samples)} samples from {cases} cases (" + ", ".join(f"{k} {v}" for k, v in sorted(by_source.items())) + ")"
    if isinstance(samples[0].target, int):
        spec = as_task(task) if task is not None else None
        classes = Counter(int(s.target) for s in samples)
        names = spec.labels if spec is not None and spec.kind == CLASSIFICATION else None
        text += "; classes " + ", ".join(f"{names[c] if names else c} {n}" for c, n in sorted(classes.items()))
    return text
