"""myopari's ONNX baseline: finding its files, the geometry of its pre/post-processing, and
its Dice on a few real ACDC / EMIDEC cases (skipped without the ONNX files or the data)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from cmrtrain.baselines import myopari
from cmrtrain.baselines.myopari import MODEL_FILES, MyopariNotFoundError, MyopariSegmenter, find_myopari_models
from cmrtrain.metrics import dice_per_class
from conftest import SHARED_DATA


def _no_installed_package(monkeypatch):
    monkeypatch.delenv(myopari.ENV_VAR, raising=False)
    monkeypatch.setattr(myopari.importlib.util, "find_spec", lambda name: None)


def _fake_resources(folder):
    folder.mkdir(parents=True)
    for name in MODEL_FILES.values():
        (folder / name).write_bytes(b"not a model")
    return folder


def test_not_found_says_how_to_get_the_models(tmp_path, monkeypatch):
    _no_installed_package(monkeypatch)
    with pytest.raises(MyopariNotFoundError, match="pip download myopari --no-deps"):
        find_myopari_models()
    with pytest.raises(MyopariNotFoundError, match=str(tmp_path)):
        find_myopari_models(tmp_path)
    monkeypatch.setenv(myopari.ENV_VAR, str(tmp_path))
    with pytest.raises(MyopariNotFoundError, match="MYOPARI_RESOURCES"):
        find_myopari_models()


def test_finds_unpacked_package_env_var_and_wheel(tmp_path, monkeypatch):
    _no_installed_package(monkeypatch)
    resources = _fake_resources(tmp_path / "unpacked" / "myopari" / "Resources")
    assert find_myopari_models(tmp_path / "unpacked") == resources
    assert find_myopari_models(resources.parent) == resources
    monkeypatch.setenv(myopari.ENV_VAR, str(resources))
    assert find_myopari_models() == resources

    # A pip-downloaded wheel (or its folder) is unpacked into the temp folder.
    monkeypatch.setattr(myopari.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    wheel = tmp_path / "download" / "myopari-0.1.6-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in MODEL_FILES.values():
            archive.writestr(f"myopari/Resources/{name}", b"not a model")
        archive.writestr("myopari/__init__.py", "")
    found = find_myopari_models(wheel.parent)
    assert found.is_relative_to(tmp_path / "tmp")
    assert sorted(p.name for p in found.iterdir()) == sorted(MODEL_FILES.values())
    assert find_myopari_models(wheel) == found


class _ThresholdSession:
    """Stands in for an ONNX session: class 3 where the (scaled) input is bright."""

    def run(self, _outputs, feeds):
        image = next(iter(feeds.values()))[:, 0]
        scores = np.zeros((len(image), 4, *image.shape[1:]), dtype=np.float32)
        scores[:, 0] = 0.5
        scores[:, 3] = image
        return [scores]


@pytest.mark.parametrize("transpose", [True, False])
def test_masks_come_back_on_the_input_grid(transpose):
    segmenter = MyopariSegmenter.__new__(MyopariSegmenter)
    segmenter.model, segmenter.batch_size, segmenter.transpose = "acdc", 2, transpose
    segmenter.session, segmenter._input_name = _ThresholdSession(), "input"
    # A non-square stack with a black border around dim tissue (a ramp, so that myopari's low
    # percentile clips little of it), an off-centre bright disc and a tiny bright speck.
    volume = np.zeros((3, 90, 120), dtype=np.float32)
    rows, cols = np.mgrid[:90, :120]
    volume[:, 5:85, 10:110] = 0.2 + 0.1 * cols[5:85, 10:110] / 120
    disc = (rows - 40) ** 2 + (cols - 70) ** 2 < 15 ** 2
    volume[:, disc] = 1.0
    volume[1, 80, 40] = 1.0  # a 1-voxel component, far under myopari's 800 voxels
    labels = segmenter.segment(volume)
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    truth = np.broadcast_to(np.where(disc, 3, 0), volume.shape)
    assert dice_per_class(labels, truth, 4)[2] > 0.95
    assert labels[1, 80, 40] == 0
    # Our task's classes: ACDC's LV (3) is our lv_blood_pool (1).
    assert set(np.unique(segmenter.segment_for_task(volume, "seg_sax_cine"))) == {0, 1}
    with pytest.raises(ValueError, match="emidec"):
        segmenter.segment_for_task(volume, "seg_lge")


def test_bad_input_is_refused():
    segmenter = MyopariSegmenter.__new__(MyopariSegmenter)
    segmenter.model, segmenter.transpose = "acdc", True
    with pytest.raises(ValueError, match="slices, H, W"):
        segmenter.segment(np.ones((8, 8)))
    with pytest.raises(ValueError, match="no positive voxels"):
        segmenter.segment(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="unknown myopari model"):
        MyopariSegmenter("kaggle")


# --- real models on real data --------------------------------------------------------------

def _resources():
    pytest.importorskip("onnxruntime")
    try:
        return find_myopari_models()
    except MyopariNotFoundError as error:
        pytest.skip(f"myopari's ONNX files are absent ({error})")


def _mid_slices(path, n):
    """The ``n`` middle labelled slices of a case: a smaller stack keeps the test fast on CPU."""
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    data = np.load(path)
    labelled = np.flatnonzero(data["label"].reshape(len(data["label"]), -1).any(1))
    start = labelled[len(labelled) // 2] - n // 2
    return data["image"][start:start + n].astype(np.float32), data["label"][start:start + n]


def test_acdc_model_on_acdc():
    segmenter = MyopariSegmenter("acdc", _resources())
    scores = []
    for patient in ("patient001", "patient045"):
        image, label = _mid_slices(SHARED_DATA / "acdc" / f"{patient}_ED.npz", 3)
        # ACDC's 1 RV, 2 myocardium, 3 LV are our 3 RV blood pool, 2 myocardium, 1 LV blood pool.
        truth = np.array([0, 3, 2, 1], dtype=np.uint8)[label]
        scores.append(dice_per_class(segmenter.segment_for_task(image, "seg_sax_cine"), truth, 4))
    assert np.nanmean(scores) > 0.7, np.nanmean(scores, axis=0)


def test_emidec_model_on_emidec():
    # This repack stores slices as [x, y] (nibabel order): see the module docstring.
    segmenter = MyopariSegmenter("emidec", _resources(), transpose=False)
    for case in ("Case_P004", "Case_P021"):
        image, label = _mid_slices(SHARED_DATA / "emidec" / f"{case}.npz", 2)
        ours = segmenter.segment_for_task(image, "seg_lge")
        truth = np.array([0, 1, 2, 2, 2], dtype=np.uint8)[label]
        assert dice_per_class(ours, truth, 3)[1] > 0.6
