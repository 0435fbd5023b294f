"""Label folders: write/read round trips with real NIfTI files, no overwriting, clear errors."""

import json

import numpy as np
import pytest

from CMRFoundationLib.label_folder import LabelFolderError, LabelFolderWriter, read_label_folder
from CMRFoundationLib.stack import ImageStack, SeriesInfo, geometry_matrix
from CMRFoundationLib.tasks import TASKS
from cmrtrain.data import samples_for
from cmrtrain.data.label_folders import label_folder_samples


def oblique_stack(slices=3, frames=1, rows=16, cols=20, seed=0) -> ImageStack:
    """A small stack in an oblique (but orthogonal) plane, as a SAX series would be."""
    row_dir = np.array([0.8, 0.6, 0.0])
    col_dir = np.array([-0.36, 0.48, -0.8])
    geometry = geometry_matrix(np.array([10.0, -20.0, 30.0]), row_dir, col_dir, np.array([1.4, 1.6, 8.0]))
    pixels = np.random.default_rng(seed).uniform(0, 500, (slices, frames, rows, cols)).astype(np.float32)
    return ImageStack(pixels, geometry, SeriesInfo(study_uid="1.2.3", series_uid="1.2.3.4"))


def test_segmentation_round_trip_keeps_pixels_geometry_and_metadata(tmp_path):
    stack = oblique_stack(frames=4)
    label = np.zeros((3, 16, 20), np.uint8)
    label[1, 4:9, 5:12] = 2
    label[2, 6:8, 6:8] = 3
    writer = LabelFolderWriter(tmp_path / "sax", "seg_sax_cine")
    case_id = writer.add_case("patient 7/series:6", stack, label=label, frame=2, reviewer="dr x")
    assert case_id == "patient_7_series_6"  # made safe as a file name

    folder = read_label_folder(tmp_path / "sax")
    assert folder.task == "seg_sax_cine" and folder.labels == TASKS["seg_sax_cine"].labels
    [case] = folder.cases
    assert (case.study_uid, case.series_uid, case.frame, case.source) == ("1.2.3", "1.2.3.4", 2, "slicer-correction")
    assert case.extra == {"reviewer": "dr x"} and case.created
    image, labels = folder.load_case(case)
    assert np.allclose(image.ijk_to_lps, stack.ijk_to_lps, atol=1e-4)
    assert np.allclose(image.pixels[:, 0], stack.pixels[:, 2], atol=1e-3)
    assert np.array_equal(labels, label)

    samples = label_folder_samples("seg_sax_cine", tmp_path / "sax")
    assert len(samples) == 2  # the two labelled slices only
    assert samples[0].source == "labels:sax" and samples[0].case == "sax/patient_7_series_6"
    assert samples[0].spacing == pytest.approx((1.6, 1.4)) and np.array_equal(samples[1].target, label[2])
    assert samples[0].image.shape == (3, 16, 20) and samples[0].image.dtype == np.float32


def test_landmark_round_trip_gives_pixel_positions(tmp_path):
    stack = oblique_stack()
    # Anterior point on slice 0 and 2, inferior on slice 2 only, at known pixels.
    pixel = {(0, "anterior_rv_insertion"): (3.0, 4.5), (2, "anterior_rv_insertion"): (10.0, 2.0),
             (2, "inferior_rv_insertion"): (12.25, 15.0)}
    landmarks = {name: [None] * 3 for name in TASKS["rv_insertion"].labels}
    for (k, name), (row, col) in pixel.items():
        landmarks[name][k] = stack.ijk_to_lps_points([col, row, k])[0]
    landmarks["inferior_rv_insertion"][0] = [np.nan] * 3  # NaN means absent, like None
    LabelFolderWriter(tmp_path / "rv", "rv_insertion").add_case("c1", stack, landmarks_lps=landmarks)

    samples = label_folder_samples("rv_insertion", tmp_path / "rv")
    assert len(samples) == 2  # slice 1 has no point
    assert np.allclose(samples[0].target[0], pixel[(0, "anterior_rv_insertion")], atol=1e-3)
    assert np.isnan(samples[0].target[1]).all()
    assert np.allclose(samples[1].target, [pixel[(2, "anterior_rv_insertion")], pixel[(2, "inferior_rv_insertion")]], atol=1e-3)


def test_classification_recipes(tmp_path):
    stack = oblique_stack()
    LabelFolderWriter(tmp_path / "types", "image_type").add_case("a", (stack.pixels[:, 0], stack.ijk_to_lps), class_name="t2")
    samples = label_folder_samples("image_type", tmp_path / "types")
    assert [s.target for s in samples] == [TASKS["image_type"].labels.index("t2")] * 3

    LabelFolderWriter(tmp_path / "lge", "lge_presence").add_case("a", stack, class_name="present")
    [lge] = label_folder_samples("lge_presence", tmp_path / "lge")
    assert lge.target == 1 and np.allclose(lge.image, stack.pixels[:, 0], atol=1e-3)

    cine = oblique_stack(slices=1, frames=3)  # basal slice at ED, halfway, ES
    LabelFolderWriter(tmp_path / "dx", "disease").add_case("a", cine, class_name="HCM")
    [disease] = label_folder_samples("disease", tmp_path / "dx")
    assert disease.target == 2 and np.allclose(disease.image, cine.pixels[0], atol=1e-3)

    with pytest.raises(ValueError, match="3 slices"):
        LabelFolderWriter(tmp_path / "lge", "lge_presence").add_case("b", oblique_stack(slices=4), class_name="absent")
    with pytest.raises(ValueError, match="not one of"):
        LabelFolderWriter(tmp_path / "types", "image_type").add_case("b", stack, class_name="flair")
    with pytest.raises(ValueError, match="frame="):
        LabelFolderWriter(tmp_path / "types", "image_type").add_case("b", oblique_stack(frames=2), class_name="cine")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        LabelFolderWriter(tmp_path / "types", "image_type").add_case("b", stack, class_name="cine", when=object())
    with pytest.raises(ValueError, match="created cannot be given"):
        LabelFolderWriter(tmp_path / "types", "image_type").add_case("b", stack, class_name="cine", created="yesterday")
    assert [c.id for c in read_label_folder(tmp_path / "types").cases] == ["a"]  # nothing half-added


def test_never_overwrites_an_existing_case(tmp_path):
    writer = LabelFolderWriter(tmp_path / "f", "seg_lge")
    first, second = oblique_stack(seed=1), oblique_stack(seed=2)
    label = np.ones((3, 16, 20), np.uint8)
    assert writer.add_case("case", first, label=label) == "case"
    before = (tmp_path / "f" / "images" / "case.nii.gz").read_bytes()
    assert writer.add_case("case", second, label=label * 2) == "case-2"
    assert (tmp_path / "f" / "images" / "case.nii.gz").read_bytes() == before
    # A file without an entry (say, from an interrupted export) is kept too.
    (tmp_path / "f" / "images" / "case-3.nii.gz").write_bytes(b"someone's file")
    assert LabelFolderWriter(tmp_path / "f", "seg_lge").add_case("case", first, label=label) == "case-4"
    assert (tmp_path / "f" / "images" / "case-3.nii.gz").read_bytes() == b"someone's file"
    folder = read_label_folder(tmp_path / "f")
    assert [c.id for c in folder.cases] == ["case", "case-2", "case-4"]
    assert folder.load_case(folder.cases[1])[1].max() == 2
    assert not [p for p in (tmp_path / "f").rglob("*") if p.name.startswith(".")]  # no temporary files left
    with pytest.raises(LabelFolderError, match="holds task 'seg_lge'"):
        LabelFolderWriter(tmp_path / "f", "seg_mapping")


def write_sample_folder(folder):
    stack = oblique_stack()
    LabelFolderWriter(folder, "seg_lge").add_case("a", stack, label=np.ones((3, 16, 20), np.uint8))
    return json.loads((folder / "dataset.json").read_text())


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: {**d, "format": "nnunet"}, "not a label folder description"),
        (lambda d: {**d, "format_version": 9}, "newer than this software"),
        (lambda d: {**d, "task": "seg_brain"}, "unknown task 'seg_brain'"),
        (lambda d: {**d, "labels": ["background", "myo"]}, "differ from task seg_lge"),
        (lambda d: {**d, "cases": [{**d["cases"][0], "image": "images/missing.nii.gz"}]}, "missing.nii.gz does not exist"),
        (lambda d: {**d, "cases": [{**d["cases"][0], "label": "../../etc/passwd"}]}, "must stay inside the folder"),
        (lambda d: {**d, "cases": d["cases"] * 2}, "appears twice"),
    ],
)
def test_broken_dataset_json_names_the_file(tmp_path, breakage, message):
    folder = tmp_path / "broken"
    data = write_sample_folder(folder)
    broken = breakage(data)
    (folder / "dataset.json").write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(LabelFolderError, match=message) as error:
        read_label_folder(folder)
    assert str(folder / "dataset.json") in str(error.value)


def test_broken_files_are_reported_with_their_names(tmp_path):
    with pytest.raises(LabelFolderError, match="dataset.json: no such file"):
        read_label_folder(tmp_path)
    folder = tmp_path / "f"
    write_sample_folder(folder)
    (folder / "labels" / "a.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(LabelFolderError, match=r"labels/a\.nii\.gz"):
        label_folder_samples("seg_lge", folder)
    with pytest.raises(LabelFolderError, match="holds task 'seg_lge', not 'seg_mapping'"):
        label_folder_samples("seg_mapping", folder)


def test_off_plane_landmark_is_an_error(tmp_path):
    stack = oblique_stack()
    point = stack.ijk_to_lps_points([5, 5, 1.9])[0]  # nearer slice 2 than slice 1
    landmarks = {"anterior_rv_insertion": [None, point, None]}
    LabelFolderWriter(tmp_path / "rv", "rv_insertion").add_case("c", stack, landmarks_lps=landmarks)
    with pytest.raises(LabelFolderError, match="off that slice"):
        label_folder_samples("rv_insertion", tmp_path / "rv")


def test_samples_for_splits_label_folders_by_study(tmp_path):
    writer = LabelFolderWriter(tmp_path / "mine", "seg_lge")
    label = np.ones((3, 16, 20), np.uint8)
    for n in range(12):
        writer.add_case(f"c{n}", oblique_stack(), label=label, study_uid=f"1.2.{n // 2}")  # 2 cases per study
    parts = {split: samples_for("seg_lge", [], split, label_folders=[tmp_path / "mine"]) for split in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == len(samples_for("seg_lge", [], "all", label_folders=[tmp_path / "mine"])) == 36
    cases = {split: {s.case for s in p} for split, p in parts.items()}
    assert not (cases["train"] & cases["test"]) and not (cases["train"] & cases["val"])
    assert all(len(c) % 2 == 0 for c in cases.values())  # both cases of a study land together
