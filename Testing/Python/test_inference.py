"""Inference end to end: verified weights -> model -> native-grid outputs, via the API and `cmrfm predict`."""

import json

import numpy as np
import pytest

from CMRFoundationLib.cli import main as cmrfm
from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.models import architecture_of, build_model
from CMRFoundationLib.preprocess import PreprocessConfig
from CMRFoundationLib.tasks import TASKS, get_task
from CMRFoundationLib.volume_io import read_volume
from CMRFoundationLib.weights import save_task_weights

# Small grid so that CPU tests stay fast; the manifest carries it to inference.
TEST_PREPROCESSING = PreprocessConfig(spacing_mm=2.0, size=64)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Untrained vit_nano models of all nine tasks, saved in the real weights format."""
    folder = tmp_path_factory.mktemp("weights")
    for seed, task in enumerate(TASKS.values()):
        import torch

        torch.manual_seed(seed)
        model = build_model(task, "vit_nano", image_size=TEST_PREPROCESSING.size)
        save_task_weights(folder, task.name, model.state_dict(), architecture=architecture_of(model),
                          preprocessing=TEST_PREPROCESSING.to_dict(), labels=list(task.labels))
    return folder


def _stack(sample_stacks, series_number):
    stacks, _ = sample_stacks
    return next(s for s in stacks if s.info.series_number == series_number)


@pytest.mark.slow
def test_every_task_predicts_on_its_series(weights_dir, sample_stacks):
    sax, lge = _stack(sample_stacks, 6), _stack(sample_stacks, 10)
    for task in TASKS.values():
        stack = lge if task.name in ("seg_lge", "lge_presence") else sax
        prediction = TaskPredictor.load(task.name, weights_dir, "cpu").predict_stack(stack)
        summary = json.loads(json.dumps(prediction.to_dict()))  # JSON-able
        if task.kind == "segmentation":
            assert prediction.labels.shape == stack.pixels.shape and prediction.labels.dtype == np.uint8
            assert prediction.labels.max() < task.n_outputs
        elif task.kind == "landmarks":
            assert prediction.points_rc.shape == (stack.n_slices, stack.n_frames, 2, 2)
            assert len(summary["landmarks"]) == stack.n_slices * stack.n_frames
        else:
            assert prediction.probabilities.shape == (task.n_outputs,)
            assert abs(prediction.probabilities.sum() - 1) < 1e-5
            assert summary["class"] in task.labels


@pytest.mark.slow
def test_prediction_is_deterministic_and_batch_independent(weights_dir, sample_stacks):
    stack = _stack(sample_stacks, 6)
    one = TaskPredictor.load("seg_sax_cine", weights_dir, "cpu", batch_size=1).predict_stack(stack)
    many = TaskPredictor.load("seg_sax_cine", weights_dir, "cpu", batch_size=7).predict_stack(stack)
    again = TaskPredictor.load("seg_sax_cine", weights_dir, "cpu", batch_size=7).predict_stack(stack)
    assert np.array_equal(many.labels, again.labels)
    # Batching changes float summation order only: nearly all labels agree.
    assert (one.labels == many.labels).mean() > 0.999


def test_outside_the_field_of_view_is_background(weights_dir):
    # 200 mm x 400 mm at 2 mm: the 64-pixel (128 mm) model grid covers only the centre.
    images = np.random.default_rng(0).normal(size=(2, 3, 100, 200)).astype(np.float32)
    result = TaskPredictor.load("seg_sax_cine", weights_dir, "cpu").predict_images(images, (2.0, 2.0))
    assert result.labels.shape == (2, 100, 200)
    assert (result.labels[:, :, :30] == 0).all() and (result.labels[:, :, -30:] == 0).all()


def test_landmarks_come_back_in_native_pixels(weights_dir):
    """A heatmap peak mapped back lands where the same physical point is on the native grid."""
    predictor = TaskPredictor.load("rv_insertion", weights_dir, "cpu")
    images = np.zeros((1, 3, 90, 120), np.float32)
    result = predictor.predict_images(images, (1.5, 1.5))
    found = ~np.isnan(result.points).any(-1)
    assert result.points.shape == (1, 2, 2) and result.confidence.shape == (1, 2)
    rows, cols = result.points[found][:, 0], result.points[found][:, 1]
    assert ((rows > -1) & (rows < 90) & (cols > -1) & (cols < 120)).all()


@pytest.mark.slow
def test_cli_predict_writes_label_map_in_series_geometry(weights_dir, sample_study, sample_stacks, tmp_path):
    series = next((sample_study / "DICOM").glob("S006*"))
    out = tmp_path / "out"
    assert cmrfm(["predict", "seg_sax_cine", str(series), str(out), "--weights", str(weights_dir), "--device", "cpu"]) == 0
    report = json.loads((out / "seg_sax_cine.json").read_text())
    [entry] = report["stacks"]
    labels = read_volume(out / entry["label_file"])
    stack = _stack(sample_stacks, 6)
    assert labels.pixels.shape == stack.pixels.shape
    np.testing.assert_allclose(labels.ijk_to_lps, stack.ijk_to_lps, atol=1e-4)
    assert report["weights"][0]["sha256"]


@pytest.mark.slow
def test_cli_predict_on_nifti_gives_json(weights_dir, sample_stacks, tmp_path):
    from CMRFoundationLib.volume_io import write_volume

    volume = tmp_path / "sax.nii.gz"
    write_volume(_stack(sample_stacks, 6), None, volume)
    out = tmp_path / "out"
    assert cmrfm(["predict", "disease", str(volume), str(out), "--weights", str(weights_dir)]) == 0
    report = json.loads((out / "disease.json").read_text())
    assert report["stacks"][0]["class"] in get_task("disease").labels
    # The basal slice and ED/ES frames came from the seg_sax_cine model of the same folder.
    assert report["stacks"][0]["notes"][0].startswith("levels from seg_sax_cine")


def test_cli_predict_refuses_tampered_weights(weights_dir, sample_study, tmp_path, capsys):
    import shutil

    tampered = tmp_path / "weights"
    shutil.copytree(weights_dir, tampered)
    path = tampered / "seg_lge.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    series = next((sample_study / "DICOM").glob("S010*"))
    assert cmrfm(["predict", "seg_lge", str(series), str(tmp_path / "out"), "--weights", str(tampered)]) == 2
    assert "seg_lge.safetensors" in capsys.readouterr().err


def test_cli_predict_reports_unknown_task_and_empty_input(weights_dir, tmp_path, capsys):
    assert cmrfm(["predict", "seg_everything", str(tmp_path), str(tmp_path / "o"), "--weights", str(weights_dir)]) == 2
    assert "known tasks" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cmrfm(["predict", "seg_lge", str(empty), str(tmp_path / "o"), "--weights", str(weights_dir)]) == 1
    assert "no image stack" in capsys.readouterr().err


@pytest.mark.slow
def test_example_analyses_the_sample_study_and_shows_truth(sample_study, tmp_path, monkeypatch, capsys):
    """`cmrfm example` with the carried weights on an already generated study (the
    fixture's seed stands in for the example's, so nothing is regenerated): index, full
    analysis, truth beside."""
    import shutil

    from CMRFoundationLib import cli

    study = tmp_path / "example"
    shutil.copytree(sample_study, study)
    monkeypatch.setattr(cli, "EXAMPLE_SEED", json.loads((study / "ground_truth" / "study.json").read_text())["seed"])
    assert cmrfm(["example", "--out", str(study), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Ground truth of the sample study" in printed and "LV EDV" in printed
    analysis = json.loads((study / "analysis" / "analysis.json").read_text())
    assert analysis["format"] == "cmrfm-analysis" and analysis["parts"]["function"]["status"] == "ok"


def test_cardiac_levels_from_the_true_short_axis_labels(sample_study, sample_truth):
    from CMRFoundationLib.synthetic.study import load_label_map
    from CMRFoundationLib.task_inputs import cardiac_levels

    labels, _ = load_label_map(sample_study, "labels/S006.npz")
    levels = cardiac_levels(labels, lv_blood=1, lv_myocardium=2)  # the phantom's label numbers
    assert (levels.ed_frame, levels.es_frame) == (sample_truth["cine"]["ed_frame"], sample_truth["cine"]["es_frame"])
    blood = (labels[:, levels.ed_frame] == 1).sum(axis=(1, 2))
    assert blood[levels.basal_slice] > blood[levels.apical_slice] > 0
    assert min(levels.basal_slice, levels.apical_slice) < levels.mid_slice < max(levels.basal_slice, levels.apical_slice)
