"""Weights on disk: safetensors + manifest round trip, hash checks, stacking, folder lookup."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from CMRFoundationLib import weights
from CMRFoundationLib.preprocess import PreprocessConfig
from CMRFoundationLib.weights import (
    WeightsError,
    available_tasks,
    load_task_state,
    read_manifest,
    record_evaluation,
    resolve_weights_dir,
    save_encoder_weights,
    save_task_weights,
    sha256_of,
)

TASK = "seg_sax_cine"
LABELS = ["background", "lv_blood_pool", "lv_myocardium", "rv_blood_pool"]


@pytest.fixture
def no_pickle(monkeypatch):
    """Make any unpickling fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights must never be unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def _save(folder, state, task=TASK, **kwargs):
    return save_task_weights(
        folder,
        task,
        state,
        architecture=kwargs.pop("architecture", {"encoder": "vit_nano", "head": "linear"}),
        preprocessing=PreprocessConfig(),
        labels=LABELS,
        training=kwargs.pop("training", {"data": "synthetic", "epochs": 1}),
        evaluation={"dice": 0.5},
        **kwargs,
    )


def test_round_trip(tmp_path, no_pickle):
    state = _model().state_dict()
    manifest_path = _save(tmp_path, state)
    assert manifest_path == tmp_path / f"{TASK}.json"

    loaded, manifest = load_task_state(tmp_path, TASK)
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert loaded["1.num_batches_tracked"].dtype == torch.int64  # integers stay integers

    assert manifest["format"] == "cmrfm-weights" and manifest["format_version"] == 1
    assert manifest["task"] == TASK and manifest["labels"] == LABELS
    assert manifest["task_spec"]["kind"] == "segmentation" and manifest["task_spec"]["labels"] == LABELS
    assert manifest["architecture"]["encoder"] == "vit_nano"
    assert PreprocessConfig.from_dict(manifest["preprocessing"]) == PreprocessConfig()
    assert manifest["training"]["epochs"] == 1 and manifest["evaluation"]["dice"] == 0.5
    [entry] = manifest["files"]
    assert entry["role"] == "model" and entry["path"] == f"{TASK}.safetensors"
    assert entry["sha256"] == sha256_of(tmp_path / entry["path"])
    assert entry["bytes"] == (tmp_path / entry["path"]).stat().st_size
    assert read_manifest(tmp_path, TASK) == manifest
    # Only the manifest and the weights: no temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TASK}.json", f"{TASK}.safetensors"]


def test_files_are_safetensors(tmp_path):
    _save(tmp_path, _model().state_dict())
    with safe_open(str(tmp_path / f"{TASK}.safetensors"), framework="pt") as handle:
        assert "0.weight" in handle.keys()
        assert handle.metadata()["task"] == TASK


def test_float16_storage_loads_as_float32(tmp_path):
    state = _model().state_dict()
    _save(tmp_path, state, dtype=torch.float16)
    full_size = _save(tmp_path / "full", state)
    half_bytes = (tmp_path / f"{TASK}.safetensors").stat().st_size
    assert half_bytes < (full_size.parent / f"{TASK}.safetensors").stat().st_size
    loaded, _ = load_task_state(tmp_path, TASK)
    for key, value in state.items():
        if value.is_floating_point():
            assert loaded[key].dtype == torch.float32
            torch.testing.assert_close(loaded[key], value, atol=2e-3, rtol=2e-3)
        else:
            assert torch.equal(loaded[key], value)


def test_tied_tensors_are_saved(tmp_path):
    model = _model()
    state = dict(model.state_dict())
    state["tied"] = state["0.weight"]  # the same tensor under two names
    state["view"] = state["0.weight"][:, :4]  # a non-contiguous view of it
    _save(tmp_path, state)
    loaded, _ = load_task_state(tmp_path, TASK)
    assert torch.equal(loaded["tied"], state["0.weight"]) and torch.equal(loaded["view"], state["view"])


def test_changed_file_is_refused(tmp_path, no_pickle):
    _save(tmp_path, _model().state_dict())
    path = tmp_path / f"{TASK}.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt or replaced") as error:
        load_task_state(tmp_path, TASK)
    assert str(path) in str(error.value) and sha256_of(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_weights_file(tmp_path):
    _save(tmp_path, _model().state_dict())
    (tmp_path / f"{TASK}.safetensors").unlink()
    with pytest.raises(WeightsError, match=rf"{TASK}\.safetensors.*missing"):
        load_task_state(tmp_path, TASK)


def test_missing_manifest_lists_available_tasks(tmp_path):
    _save(tmp_path, _model().state_dict())
    _save(tmp_path, _model().state_dict(), task="seg_lge")
    (tmp_path / "notes.json").write_text("{}")  # not a manifest
    assert available_tasks(tmp_path) == ["seg_lge", TASK]
    with pytest.raises(WeightsError, match="seg_lge, seg_sax_cine") as error:
        read_manifest(tmp_path, "disease")
    assert "disease.json" in str(error.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a CMRFoundation weights manifest"),
        ('{"format": "cmrfm-weights", "format_version": 2}', "newer version"),
        ('{"format": "cmrfm-weights", "format_version": 1, "task": "seg_lge", "files": []}', "is for task"),
        ('{"format": "cmrfm-weights", "format_version": 1, "task": "seg_sax_cine", "files": []}', "lists no files"),
        (
            '{"format": "cmrfm-weights", "format_version": 1, "task": "seg_sax_cine",'
            ' "files": [{"path": "../elsewhere.safetensors", "sha256": "00"}]}',
            "inside the weights folder",
        ),
    ],
)
def test_broken_manifest(tmp_path, content, message):
    (tmp_path / f"{TASK}.json").write_text(content)
    with pytest.raises(WeightsError, match=message):
        read_manifest(tmp_path, TASK)


def test_shared_encoder_and_task_file_stack(tmp_path, no_pickle):
    encoder = {"encoder.w": torch.ones(3, 3), "encoder.b": torch.zeros(3), "head.w": torch.zeros(2, 3)}
    relative, digest = save_encoder_weights(tmp_path, encoder)
    assert relative == "encoder.safetensors" and digest == sha256_of(tmp_path / relative)
    head = {"head.w": torch.full((2, 3), 5.0), "head.b": torch.ones(2), "encoder.b": torch.full((3,), 2.0)}
    _save(tmp_path, head, shared_files=[relative])
    _save(tmp_path, {"head.w": torch.zeros(5, 3)}, task="seg_lge", shared_files=[relative])

    state, manifest = load_task_state(tmp_path, TASK)
    assert [(f["path"], f["role"]) for f in manifest["files"]] == [
        ("encoder.safetensors", "encoder"),
        (f"{TASK}.safetensors", "task"),
    ]
    assert torch.equal(state["encoder.w"], torch.ones(3, 3))
    assert torch.equal(state["encoder.b"], torch.full((3,), 2.0))  # later file overrides
    assert torch.equal(state["head.w"], torch.full((2, 3), 5.0))

    with pytest.raises(WeightsError, match=r"'head.w' has shape \(2, 3\) in encoder.safetensors but \(5, 3\)"):
        load_task_state(tmp_path, "seg_lge")

    # Replacing the shared encoder invalidates every task that uses it.
    save_encoder_weights(tmp_path, {"encoder.w": torch.zeros(3, 3)})
    with pytest.raises(WeightsError, match="encoder.safetensors"):
        load_task_state(tmp_path, TASK)


def test_bad_save_arguments(tmp_path):
    with pytest.raises(KeyError, match="unknown task"):
        _save(tmp_path, _model().state_dict(), task="no_such_task")
    with pytest.raises(WeightsError, match="does not exist"):
        _save(tmp_path, _model().state_dict(), shared_files=["encoder.safetensors"])
    with pytest.raises(ValueError, match="not a tensor"):
        _save(tmp_path, {"w": [1, 2, 3]})
    with pytest.raises(ValueError, match="JSON"):
        _save(tmp_path, _model().state_dict(), architecture={"layer": object()})
    with pytest.raises(ValueError, match="plain file name"):
        save_encoder_weights(tmp_path, {"w": torch.ones(1)}, name="../x")


def test_weights_folder_resolution(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    from_env.mkdir()
    monkeypatch.setenv("CMRFM_WEIGHTS", str(from_env))
    assert resolve_weights_dir(explicit) == explicit
    assert resolve_weights_dir() == from_env
    _save(from_env, _model().state_dict())
    assert available_tasks() == [TASK]
    state, _ = load_task_state(None, TASK)
    assert "0.weight" in state

    monkeypatch.delenv("CMRFM_WEIGHTS")
    default = tmp_path / "default"
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS_DIR", default)
    with pytest.raises(WeightsError, match="CMRFM_WEIGHTS") as error:
        resolve_weights_dir()
    assert str(default) in str(error.value) and "default location" in str(error.value)
    default.mkdir()
    assert resolve_weights_dir() == default

    monkeypatch.setenv("CMRFM_WEIGHTS", str(tmp_path / "missing"))
    with pytest.raises(WeightsError, match="environment variable CMRFM_WEIGHTS"):
        resolve_weights_dir()


def test_default_folder_is_the_project_resources():
    assert weights.DEFAULT_WEIGHTS_DIR.parts[-2:] == ("Resources", "Weights")
    assert (weights.DEFAULT_WEIGHTS_DIR.parent.parent / "CMRFoundationLib" / "weights.py").is_file()


def test_manifest_is_plain_json(tmp_path):
    path = _save(tmp_path, _model().state_dict())
    manifest = json.loads(path.read_text())
    assert manifest["library_version"]
    assert manifest["created"].endswith("+00:00")


def test_record_evaluation(tmp_path, no_pickle):
    _save(tmp_path, _model().state_dict(), training={"epochs": np.int64(3)})
    before = sha256_of(tmp_path / f"{TASK}.safetensors")
    results = {"acdc": {"dice": np.float32(0.91), "per_case": np.array([0.9, 0.92]), "hd": float("nan")}}
    path = record_evaluation(tmp_path, TASK, results, split="test")
    manifest = json.loads(path.read_text())  # strict JSON: numpy values converted, NaN -> null
    recorded = manifest["evaluation"]["recorded"]["test"]
    assert recorded["results"]["acdc"]["dice"] == pytest.approx(0.91)
    assert recorded["results"]["acdc"]["per_case"] == [0.9, 0.92] and recorded["results"]["acdc"]["hd"] is None
    assert manifest["evaluation"]["dice"] == 0.5  # what training wrote is kept
    assert manifest["training"]["epochs"] == 3
    record_evaluation(tmp_path, TASK, {"acdc": {"dice": 0.8}}, split="test")
    assert read_manifest(tmp_path, TASK)["evaluation"]["recorded"]["test"]["results"] == {"acdc": {"dice": 0.8}}
    assert sha256_of(tmp_path / f"{TASK}.safetensors") == before
    load_task_state(tmp_path, TASK)  # still loads
