"""The synthetic study round-trips through the reader, and its ground truth is right."""

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from CMRFoundationLib.dicom import index_study, read_study
from CMRFoundationLib.synthetic.phantom import HeartPhantom, sample_parameters
from CMRFoundationLib.synthetic.study import load_label_map, load_truth, make_sample_study

MYOCARDIUM, LV_BLOOD, RV_BLOOD, INFARCT = 2, 1, 3, 8


def _stack_of(stacks, series, truth_stack):
    """The read stack of this series whose geometry is the truth stack's."""
    matrix = np.array(truth_stack["ijk_to_lps"])
    matches = [s for s in stacks if s.info.series_uid == series["series_uid"] and np.allclose(s.ijk_to_lps, matrix, atol=1e-3)]
    assert len(matches) == 1, f"{len(matches)} read stacks match {truth_stack['label_file']}"
    return matches[0]


def _series(truth, view, image_type):
    return next(s for s in truth["series"] if s["view"] == view and s["image_type"] == image_type)


def test_reader_finds_every_series_and_stack(sample_truth, sample_stacks):
    stacks, problems = sample_stacks
    assert problems == []
    assert len(stacks) == sum(len(s["stacks"]) for s in sample_truth["series"])
    for series in sample_truth["series"]:
        for truth_stack in series["stacks"]:
            stack = _stack_of(stacks, series, truth_stack)
            assert list(stack.pixels.shape) == truth_stack["shape"]
            assert stack.info.series_number == series["number"]
            assert stack.info.series_uid == series["series_uid"]


def test_views_from_geometry(sample_truth, sample_stacks):
    stacks, _ = sample_stacks
    expected = {"sax": "SAX-like", "2ch": "LAX-like", "3ch": "LAX-like", "4ch": "LAX-like"}
    for series in sample_truth["series"]:
        for truth_stack in series["stacks"]:
            stack = _stack_of(stacks, series, truth_stack)
            if series["view"] in expected:
                assert stack.orientation == expected[series["view"]], series["description"]
    localizer = sample_truth["series"][0]
    orientations = [_stack_of(stacks, localizer, s).orientation for s in localizer["stacks"]]
    assert sorted(orientations) == ["axial", "coronal", "sagittal"]


def test_cine_frames_are_in_trigger_order(sample_study, sample_truth, sample_stacks):
    stacks, _ = sample_stacks
    series = _series(sample_truth, "sax", "cine")
    stack = _stack_of(stacks, series, series["stacks"][0])
    np.testing.assert_allclose(stack.frame_times, series["trigger_times_ms"], atol=0.01)
    # The bright blood pool in the image follows the true LV area frame by frame.
    labels, _ = load_label_map(sample_study, series["stacks"][0]["label_file"])
    k = int(np.argmax((labels[:, 0] == LV_BLOOD).sum((1, 2))))
    true_area = (labels[k] == LV_BLOOD).sum((1, 2))
    lv_box = np.any(labels[k] == LV_BLOOD, axis=0)
    image = stack.pixels[k]
    threshold = 0.5 * np.percentile(image[:, lv_box], 95)
    bright_area = (image[:, lv_box] > threshold).sum(1)
    assert np.corrcoef(true_area, bright_area)[0, 1] > 0.95


def _blood_myocardium_contrast(image, labels):
    return image[labels == LV_BLOOD].mean() - image[labels == MYOCARDIUM].mean()


def test_label_map_overlays_its_image_exactly(sample_study, sample_truth, sample_stacks):
    """Shifting the labels by any pixel makes them fit the image worse."""
    stacks, _ = sample_stacks
    series = _series(sample_truth, "sax", "cine")
    stack = _stack_of(stacks, series, series["stacks"][0])
    labels, _ = load_label_map(sample_study, series["stacks"][0]["label_file"])
    k = stack.n_slices // 2
    image, label = stack.pixels[k, 0], labels[k, 0]
    aligned = _blood_myocardium_contrast(image, label)
    for dj, di in [(1, 0), (-1, 0), (0, 1), (0, -1), (2, 2)]:
        shifted = np.roll(label, (dj, di), axis=(0, 1))
        assert _blood_myocardium_contrast(image, shifted) < aligned


def test_patient_point_maps_to_the_right_voxel(sample_study, sample_truth, sample_stacks):
    """An RV insertion point (LPS) lands where LV myocardium meets RV blood."""
    stacks, _ = sample_stacks
    series = _series(sample_truth, "sax", "cine")
    stack = _stack_of(stacks, series, series["stacks"][0])
    labels, matrix = load_label_map(sample_study, series["stacks"][0]["label_file"])
    np.testing.assert_allclose(stack.ijk_to_lps, matrix, atol=1e-3)
    points = sample_truth["rv_insertion_points"]
    assert len(points["slices"]) >= 3
    for entry in points["slices"]:
        for key in ("anterior_lps", "inferior_lps"):
            i, j, k = np.round(stack.lps_to_ijk_points(entry[key])[0]).astype(int)
            assert k == entry["slice"]
            around = labels[k, points["frame"], j - 2 : j + 3, i - 2 : i + 3]
            assert MYOCARDIUM in around and RV_BLOOD in around, (key, entry["slice"])


def test_lge_scar_is_bright_and_maps_hold_their_values(sample_study, sample_truth, sample_stacks):
    stacks, _ = sample_stacks
    assert sample_truth["lge_present"]
    lge = _series(sample_truth, "sax", "lge")
    stack = _stack_of(stacks, lge, lge["stacks"][0])
    labels, _ = load_label_map(sample_study, lge["stacks"][0]["label_file"])
    assert (labels == INFARCT).sum() > 50
    assert stack.pixels[labels == INFARCT].mean() > 4 * stack.pixels[labels == MYOCARDIUM].mean()
    t1 = next(s for s in sample_truth["series"] if s["sequence"] == "t1_native")
    stack = _stack_of(stacks, t1, t1["stacks"][0])
    labels, _ = load_label_map(sample_study, t1["stacks"][0]["label_file"])
    # Interior myocardium (away from partial volume with blood) holds the true T1.
    interior = labels == MYOCARDIUM
    for axis in (2, 3):
        interior &= np.roll(labels, 1, axis) == MYOCARDIUM
        interior &= np.roll(labels, -1, axis) == MYOCARDIUM
    measured = np.median(stack.pixels[interior])
    assert measured == pytest.approx(sample_truth["map_values_ms"]["t1_native"]["myocardium"], rel=0.03)


def test_enhanced_multiframe_series_reads_as_one_file(sample_truth, sample_study):
    series = next(s for s in sample_truth["series"] if s["enhanced_multiframe"])
    files = list((sample_study / series["folder"]).iterdir())
    assert len(files) == 1
    stacks, problems = read_study(sample_study / series["folder"])
    assert problems == [] and len(stacks) == 1
    assert list(stacks[0].pixels.shape) == series["stacks"][0]["shape"]


def test_any_file_names_and_layout(sample_truth, sample_study, tmp_path):
    """Flattened into one folder under meaningless names, the study reads the same."""
    flat = tmp_path / "flat"
    flat.mkdir()
    files = sorted((sample_study / "DICOM").rglob("*"))
    order = np.random.default_rng(0).permutation(len(files))
    for n, i in enumerate(order):
        if files[i].is_file():
            shutil.copy(files[i], flat / f"{n:05x}")
    index = index_study(flat)
    assert index.problems == []
    expected = sorted(tuple(s["shape"]) for series in sample_truth["series"] for s in series["stacks"])
    assert sorted(tuple(s.shape) for s in index.stacks) == expected


def test_ground_truth_volumes_agree_with_label_maps(sample_study, sample_truth):
    """Summing the SAX labels (as a reader would) approaches the phantom's exact volumes."""
    series = _series(sample_truth, "sax", "cine")
    labels, matrix = load_label_map(sample_study, series["stacks"][0]["label_file"])
    voxel_ml = abs(np.linalg.det(matrix[:3, :3])) / 1000
    ed, es = sample_truth["cine"]["ed_frame"], sample_truth["cine"]["es_frame"]
    edv = (labels[:, ed] == LV_BLOOD).sum() * voxel_ml
    esv = (labels[:, es] == LV_BLOOD).sum() * voxel_ml
    assert edv == pytest.approx(sample_truth["lv"]["edv_ml"], rel=0.10)
    assert (edv - esv) / edv == pytest.approx(sample_truth["lv"]["ef"], abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("pathology", ["NOR", "DCM", "HCM", "MINF", "RV"])
def test_phantom_pathologies(pathology):
    params = sample_parameters(100, pathology)
    heart = HeartPhantom(params)
    es = params.es_phase
    ed_volumes, es_volumes = heart.structure_volumes_ml(0.0), heart.structure_volumes_ml(es)
    lv_ef = 1 - es_volumes["lv_blood_pool"] / ed_volumes["lv_blood_pool"]
    rv_ef = 1 - es_volumes["rv_blood_pool"] / ed_volumes["rv_blood_pool"]
    assert lv_ef == pytest.approx(params.lv_ef, abs=0.01)
    assert ed_volumes["rv_blood_pool"] == pytest.approx(params.rv_edv_ml, rel=0.03)
    assert rv_ef == pytest.approx(params.rv_ef, abs=0.03)
    # Myocardium is incompressible: its volume is the same at ED and ES.
    assert es_volumes["lv_myocardium"] == pytest.approx(ed_volumes["lv_myocardium"], rel=0.02)
    # The exact LV volume agrees with integrating the labels on a fine grid.
    fine = heart.structure_volumes_ml(0.0, step=0.7)
    assert ed_volumes["lv_myocardium"] == pytest.approx(fine["lv_myocardium"], rel=0.02)
    signature = {
        "NOR": lambda: 0.55 <= lv_ef <= 0.72,
        "DCM": lambda: lv_ef < 0.4 and ed_volumes["lv_blood_pool"] > 200,
        "HCM": lambda: ed_volumes["lv_myocardium"] * 1.05 > 150 and lv_ef > 0.6,
        "MINF": lambda: ed_volumes["infarct"] > 1.0 and lv_ef < 0.5,
        "RV": lambda: ed_volumes["rv_blood_pool"] > 1.5 * ed_volumes["lv_blood_pool"] and rv_ef < 0.4,
    }
    assert signature[pathology]()
    if pathology != "MINF":
        assert ed_volumes["infarct"] == 0


@pytest.mark.slow
def test_same_seed_gives_identical_files(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        return h.hexdigest()

    for name in ("a", "b"):
        make_sample_study(tmp_path / name, seed=3, frames=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert sample_parameters(3) != sample_parameters(4)


def test_cmrfm_index_and_make_sample_study_commands(sample_study, tmp_path):
    result = subprocess.run([sys.executable, "-m", "CMRFoundationLib.cli", "index", str(sample_study / "DICOM")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cine_retro_sax" in result.stdout and "SAX-like" in result.stdout
    result = subprocess.run([sys.executable, "-m", "CMRFoundationLib.cli", "make-sample-study", str(sample_study)], capture_output=True, text=True)
    assert result.returncode == 2 and "not empty" in result.stderr
    result = subprocess.run([sys.executable, "-m", "CMRFoundationLib.cli", "index", str(tmp_path / "missing")], capture_output=True, text=True)
    assert result.returncode == 1 and "missing" in result.stdout + result.stderr


def test_distractors_are_off_by_default_and_leave_the_rest_of_the_study_unchanged(sample_study, sample_truth,
                                                                                   distractor_study):
    truth = load_truth(distractor_study)
    assert not any("distractor" in s for s in sample_truth["series"])  # the default study has none
    kinds = {s["number"]: s["distractor"] for s in truth["series"] if "distractor" in s}
    assert kinds == {12: "first-pass perfusion", 13: "phase-contrast flow, magnitude",
                     14: "phase-contrast flow, phase (velocity)"}
    assert [s for s in truth["series"] if "distractor" not in s] == sample_truth["series"]
    for series in sample_truth["series"]:  # every file of every other series, byte for byte
        ours, theirs = distractor_study / series["folder"], sample_study / series["folder"]
        names = sorted(p.name for p in theirs.iterdir())
        assert sorted(p.name for p in ours.iterdir()) == names
        assert all((ours / name).read_bytes() == (theirs / name).read_bytes() for name in names), series["folder"]


def test_perfusion_repeats_one_trigger_delay_while_the_bolus_passes_rv_lv_then_myocardium(distractor_study):
    truth = load_truth(distractor_study)
    series = next(s for s in truth["series"] if s.get("distractor") == "first-pass perfusion")
    stacks, problems = read_study(distractor_study / series["folder"])
    assert problems == [] and len(stacks) == 1
    perfusion = stacks[0]
    assert perfusion.n_slices == 3 and perfusion.n_frames >= 40
    assert np.ptp(perfusion.frame_times) == 0  # one trigger delay, repeated
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((distractor_study / series["folder"]).iterdir())]
    first_slice = sorted((h for h in headers if h.InstanceNumber <= perfusion.n_frames), key=lambda h: h.InstanceNumber)
    seconds = [_seconds(h.AcquisitionTime) for h in first_slice]
    assert np.all(np.diff(seconds) > 0) and 20 < seconds[-1] - seconds[0] < 90  # tens of seconds, one frame a beat
    assert all("CardiacNumberOfImages" not in h for h in headers)  # not the phases of one cycle

    labels, _ = load_label_map(distractor_study, series["stacks"][0]["label_file"])
    mid = perfusion.pixels[1]  # [frames, rows, cols]
    curve = {name: mid[:, labels[1, 0] == label].mean(axis=1) for name, label in
             (("rv", RV_BLOOD), ("lv", LV_BLOOD), ("myocardium", MYOCARDIUM))}
    peaks = {name: int(np.argmax(values)) for name, values in curve.items()}
    assert peaks["rv"] < peaks["lv"] < peaks["myocardium"], peaks
    rise = {name: values.max() - values[0] for name, values in curve.items()}
    assert rise["myocardium"] < 0.5 * rise["lv"]  # the muscle enhances far less than the blood


def test_flow_series_carry_velocity_in_their_headers_and_phase_images(distractor_study):
    truth = load_truth(distractor_study)
    by_kind = {s["distractor"]: s for s in truth["series"] if s.get("distractor", "").startswith("phase-contrast")}
    (magnitude,), _ = read_study(distractor_study / by_kind["phase-contrast flow, magnitude"]["folder"])
    (phase,), _ = read_study(distractor_study / by_kind["phase-contrast flow, phase (velocity)"]["folder"])
    venc = by_kind["phase-contrast flow, phase (velocity)"]["velocity_encoding_cm_s"]
    assert magnitude.info.sequence_name == phase.info.sequence_name == f"*fl2d1_v{venc:.0f}in"
    assert "M" in magnitude.info.image_type and "P" in phase.info.image_type
    assert np.ptp(phase.frame_times) > 0 and phase.n_frames == magnitude.n_frames  # a cine over one cycle

    labels, _ = load_label_map(distractor_study, by_kind["phase-contrast flow, phase (velocity)"]["stacks"][0]["label_file"])
    aorta = labels[0] == 7  # [frames, rows, cols]
    systole = int(np.argmax([np.abs(phase.pixels[0, f][aorta[f]]).mean() for f in range(phase.n_frames)]))
    values = phase.pixels[0, systole][aorta[systole]]
    assert values.max() > 1500 and values.min() < -1500  # up the ascending, down the descending aorta
    still = (labels[0, systole] == 0) & (magnitude.pixels[0, systole] > np.percentile(magnitude.pixels, 60))
    assert abs(np.median(phase.pixels[0, systole][still])) < 100  # bright static tissue: no velocity


def _seconds(tm: str) -> float:
    return int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])
