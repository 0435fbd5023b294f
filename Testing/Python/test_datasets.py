"""Training data sources: sample shapes and labels per task, RV insertion derivation, splits."""

import json
import logging
import shutil

import numpy as np
import pytest

from CMRFoundationLib.measurements.insertion_points import rv_insertion_points
from CMRFoundationLib.synthetic.study import load_label_map
from CMRFoundationLib.tasks import DISEASES, LANDMARKS, SEGMENTATION, TASKS
from cmrtrain.data import samples_for, summarize
from cmrtrain.data.acdc import ACDC_TASKS, acdc_samples
from cmrtrain.data.emidec import EMIDEC_TASKS, emidec_samples
from cmrtrain.data.sample import base_to_apex
from cmrtrain.data.splits import load_split, make_split, synthetic_split
from cmrtrain.data.synthetic import build_synthetic_cache, synthetic_samples
from conftest import SHARED_DATA

ACDC = SHARED_DATA / "acdc"
EMIDEC = SHARED_DATA / "emidec"
needs_acdc = pytest.mark.skipif(not ACDC.is_dir(), reason="ACDC data (../shared/data/acdc) not present")
needs_emidec = pytest.mark.skipif(not EMIDEC.is_dir(), reason="EMIDEC data (../shared/data/emidec) not present")


def check_samples(task, samples, source):
    """Every sample has the documented types, shapes and target ranges for its task."""
    assert samples, f"no {task.name} samples from {source}"
    for s in samples:
        assert s.image.dtype == np.float32 and s.image.ndim == 3 and s.image.shape[0] == 3
        assert np.isfinite(s.image).all()
        assert len(s.spacing) == 2 and all(isinstance(v, float) and v > 0 for v in s.spacing)
        assert isinstance(s.case, str) and s.case and s.source == source
        h, w = s.image.shape[1:]
        if task.kind == SEGMENTATION:
            assert s.target.dtype == np.uint8 and s.target.shape == (h, w)
            assert s.target.max() < len(task.labels)
        elif task.kind == LANDMARKS:
            assert s.target.dtype == np.float32 and s.target.shape == (len(task.labels), 2)
            present = s.target[np.isfinite(s.target).all(axis=1)]
            assert len(present) and ((present >= 0) & (present <= [h - 1, w - 1])).all()
        else:
            assert isinstance(s.target, int) and 0 <= s.target < len(task.labels)


@pytest.fixture(scope="module")
def synthetic_by_task(sample_study):
    """All nine tasks from the session's synthetic study (its parent is a one-study cache)."""
    return {name: synthetic_samples(name, sample_study.parent) for name in TASKS}


@pytest.mark.parametrize("name", list(TASKS))
def test_synthetic_samples_per_task(synthetic_by_task, name):
    check_samples(TASKS[name], synthetic_by_task[name], "synthetic")


def test_synthetic_contents(synthetic_by_task, sample_truth):
    by = synthetic_by_task
    # Every image type and cine view the generator makes is there (localizer = "other" view).
    assert {s.target for s in by["image_type"]} == set(range(5))
    assert {s.target for s in by["cine_view"]} == set(range(6))
    # Segmentations carry every structure of their task.
    for name in ("seg_sax_cine", "seg_4ch_cine", "seg_lge", "seg_mapping"):
        present = set(np.unique(np.concatenate([s.target.ravel() for s in by[name]])))
        assert present == set(range(len(TASKS[name].labels))), name
    [lge] = by["lge_presence"]
    assert lge.target == int(sample_truth["lge_present"])
    [disease] = by["disease"]
    assert DISEASES[disease.target] == sample_truth["pathology"]
    # Truth points first: one per truth slice, at the truth frame.
    assert len(by["rv_insertion"]) >= len(sample_truth["rv_insertion_points"]["slices"])


def test_rv_insertion_derivation_matches_synthetic_truth(sample_study, sample_truth):
    """The label-based rule used on ACDC reproduces the generator's exact points."""
    truth = sample_truth["rv_insertion_points"]
    series = next(s for s in sample_truth["series"] if s["number"] == truth["series_number"])
    labels, ijk_to_lps = load_label_map(sample_study, series["stacks"][0]["label_file"])
    lps_to_ijk = np.linalg.inv(ijk_to_lps)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)[[1, 0]]  # (row, col)
    errors = []
    for entry in truth["slices"]:
        label = labels[entry["slice"], truth["frame"]]
        derived = rv_insertion_points(np.isin(label, (1, 2, 8, 9)), label == 3)
        assert derived is not None, f"slice {entry['slice']}"
        expected = np.array([(lps_to_ijk[:3, :3] @ entry[key] + lps_to_ijk[:3, 3])[[1, 0]]
                             for key in ("anterior_lps", "inferior_lps")])
        errors.append(np.linalg.norm((derived - expected) * spacing, axis=1))  # anterior to anterior
    errors = np.array(errors)
    assert errors.max() < 3.0 and errors.mean() < 1.5, errors


def test_rv_insertion_rejects_unclear_slices():
    yy, xx = np.mgrid[:64, :64]
    lv = (yy - 32) ** 2 + (xx - 36) ** 2 < 12**2
    assert rv_insertion_points(lv, np.zeros_like(lv)) is None  # no RV
    ring = ((yy - 32) ** 2 + (xx - 36) ** 2 < 16**2) & ~lv
    assert rv_insertion_points(lv, ring) is None  # RV all around: no arc ends
    crescent = ((yy - 32) ** 2 + (xx - 22) ** 2 < 10**2) & ~lv
    points = rv_insertion_points(lv, crescent)
    # RV on the left: anterior (top in the standard view) first, inferior second.
    assert points is not None and points[0, 0] < 32 < points[1, 0] and (points[:, 1] < 36).all()


def test_base_to_apex_orders_by_lv_size():
    assert base_to_apex([0, 100, 80, 40, 10, 0]) == [1, 2, 3, 4]
    assert base_to_apex([0, 5, 40, 80, 100]) == [4, 3, 2, 1]
    assert base_to_apex([0, 0]) == []


@needs_acdc
@pytest.mark.parametrize("name", ACDC_TASKS)
def test_acdc_samples(name):
    task = TASKS[name]
    samples = acdc_samples(task, ACDC, ["patient001", "patient061"])
    check_samples(task, samples, "acdc")
    assert {s.case for s in samples} == {"patient001", "patient061"}
    if name == "seg_sax_cine":
        assert set(np.unique(np.concatenate([s.target.ravel() for s in samples]))) == {0, 1, 2, 3}
    if name == "disease":
        groups = json.loads((ACDC / "patients.json").read_text())
        assert [DISEASES[s.target] for s in samples] == [groups[p]["group"] for p in ("patient001", "patient061")]


@needs_emidec
@pytest.mark.parametrize("name", EMIDEC_TASKS)
def test_emidec_samples(name):
    task = TASKS[name]
    samples = emidec_samples(task, EMIDEC, ["Case_N012", "Case_P002"])
    check_samples(task, samples, "emidec")
    if name == "lge_presence":
        assert [s.target for s in samples] == [0, 1]
        # EMIDEC runs apex -> base, so the basal channel is the last slice.
        with np.load(EMIDEC / "Case_N012.npz") as data:
            assert np.array_equal(samples[0].image[0], data["image"][-1]) and np.array_equal(samples[0].image[2], data["image"][0])
    if name == "seg_lge":
        assert set(np.unique(np.concatenate([s.target.ravel() for s in samples]))) == {0, 1, 2}


def test_make_split_is_stratified_disjoint_and_seeded():
    ids = [f"p{i:03d}" for i in range(50)]
    groups = ["A" if i % 5 else "B" for i in range(50)]
    split = make_split(ids, groups, (0.7, 0.1, 0.2), seed=3)
    assert split == make_split(ids, groups, (0.7, 0.1, 0.2), seed=3)
    assert sorted(sum(split.values(), [])) == ids
    assert {len(v) for v in split.values()} == {35, 5, 10}
    assert sum(groups[ids.index(i)] == "B" for i in split["test"]) == 2  # 20% of the 10 B's
    assert split != make_split(ids, groups, (0.7, 0.1, 0.2), seed=4)
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(ids, groups, (0.5, 0.1, 0.1))


@pytest.mark.parametrize("name, listing", [("acdc", "patients.json"), ("emidec", "cases.json")])
def test_fixed_splits_are_patient_disjoint_and_complete(name, listing):
    split = load_split(name)
    members = sum(split.values(), [])
    assert len(members) == len(set(members)) and all(split.values())
    assert all(v == sorted(v) for v in split.values())
    listing_path = SHARED_DATA / name / listing
    if listing_path.is_file():
        assert sorted(members) == sorted(json.loads(listing_path.read_text()))


def test_synthetic_split_rule_balances_pathologies():
    seeds = range(50)
    splits = [synthetic_split(s) for s in seeds]
    assert splits.count("train") == 35 and splits.count("val") == 5 and splits.count("test") == 10
    for part in ("val", "test"):
        pathologies = [s % 5 for s in seeds if synthetic_split(s) == part]
        assert sorted(set(pathologies)) == [0, 1, 2, 3, 4] and len(set(map(pathologies.count, range(5)))) == 1
    assert {synthetic_split(s) for s in range(10)} == {"train", "val", "test"}


def test_samples_for_combines_sources_and_skips_absent_data(sample_study, tmp_path, caplog):
    root = sample_study.parent  # seed 11: in the test split
    assert synthetic_split(11) == "test"
    with caplog.at_level(logging.WARNING):
        samples = samples_for("seg_sax_cine", ["acdc", "synthetic"], "test", shared_root=tmp_path, synthetic_root=root)
    assert samples and {s.source for s in samples} == {"synthetic"}
    assert "acdc" in caplog.text and "absent" in caplog.text
    assert samples_for("seg_sax_cine", ["synthetic"], "train", shared_root=tmp_path, synthetic_root=root) == []
    assert samples_for("disease", ["synthetic"], "test", synthetic_root=None) == []
    with pytest.raises(ValueError, match="no data for task"):
        samples_for("seg_lge", ["acdc"], "train", shared_root=tmp_path)
    with pytest.raises(ValueError, match="unknown data source"):
        samples_for("seg_lge", ["kaggle"], "train")
    with pytest.raises(ValueError, match="unknown split"):
        samples_for("seg_lge", ["emidec"], "holdout")
    text = summarize(samples_for("disease", ["synthetic"], "all", synthetic_root=root), "disease")
    assert text.startswith("1 samples from 1 cases (synthetic 1)") and "MINF 1" in text


def test_build_synthetic_cache_skips_finished_studies(sample_study, tmp_path):
    shutil.copytree(sample_study / "ground_truth", tmp_path / "seed_0011" / "ground_truth")
    messages = []
    folders = build_synthetic_cache(tmp_path, [11], progress=messages.append)
    assert folders == [tmp_path / "seed_0011"] and messages == []
    (tmp_path / "seed_0012").mkdir()  # a folder that is not a finished study is not touched
    with pytest.raises(FileExistsError, match="seed_0012"):
        build_synthetic_cache(tmp_path, [12], progress=messages.append)
