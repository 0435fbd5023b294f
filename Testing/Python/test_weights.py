"""Weights on disk: safetensors + manifest round trip, hash checks, stacking, folder lookup."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from CMRFoundationLib import weights
from CMRFoundationLib.models import architecture_of, build_model
from CMRFoundationLib.preprocess import PreprocessConfig
from CMRFoundationLib.tasks import TASKS
from CMRFoundationLib.weights import (
    WeightsError,
    available_tasks,
    load_task_state,
    read_manifest,
    record_evaluation,
    record_in_index,
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


def _model(seed: int = 0, task: str = TASK) -> nn.Module:
    """A small real task model (the architecture a manifest describes is checked on loading)."""
    torch.manual_seed(seed)
    return build_model(task, "hybrid_nano")


def _save(folder, model, task=TASK, state=None, **kwargs):
    return save_task_weights(
        folder,
        task,
        model.state_dict() if state is None else state,
        architecture=kwargs.pop("architecture", architecture_of(model)),
        preprocessing=PreprocessConfig(),
        labels=list(TASKS[task].labels) if task in TASKS else LABELS,
        training=kwargs.pop("training", {"data": "synthetic", "epochs": 1}),
        evaluation={"dice": 0.5},
        **kwargs,
    )


def test_round_trip(tmp_path, no_pickle):
    model = _model()
    state = model.state_dict()
    manifest_path = _save(tmp_path, model)
    assert manifest_path == tmp_path / f"{TASK}.json"

    loaded, manifest = load_task_state(tmp_path, TASK)
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key

    assert manifest["format"] == "cmrfm-weights" and manifest["format_version"] == 1
    assert manifest["task"] == TASK and manifest["labels"] == LABELS
    assert manifest["task_spec"]["kind"] == "segmentation" and manifest["task_spec"]["labels"] == LABELS
    assert manifest["architecture"] == architecture_of(model)
    assert PreprocessConfig.from_dict(manifest["preprocessing"]) == PreprocessConfig()
    assert manifest["training"]["epochs"] == 1 and manifest["evaluation"]["dice"] == 0.5
    [entry] = manifest["files"]
    assert entry["role"] == "model" and entry["path"] == f"{TASK}.safetensors"
    assert entry["sha256"] == sha256_of(tmp_path / entry["path"])
    assert entry["bytes"] == (tmp_path / entry["path"]).stat().st_size
    assert read_manifest(tmp_path, TASK) == manifest
    # Only the manifest, the weights and the folder's index: no temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TASK}.json", f"{TASK}.safetensors", "weights_index.json"]
    assert json.loads((tmp_path / "weights_index.json").read_text())["files"] == {f"{TASK}.json": sha256_of(manifest_path)}


def test_files_are_safetensors(tmp_path):
    _save(tmp_path, _model())
    with safe_open(str(tmp_path / f"{TASK}.safetensors"), framework="pt") as handle:
        assert "head.out.weight" in handle.keys()
        assert handle.metadata()["task"] == TASK


def test_float16_storage_loads_as_float32(tmp_path):
    model = _model()
    state = model.state_dict()
    _save(tmp_path, model, dtype=torch.float16)
    full_size = _save(tmp_path / "full", model)
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
    from safetensors.torch import load_file

    model = _model()
    state = dict(model.state_dict())
    state["tied"] = state["head.out.weight"]  # the same tensor under two names
    state["view"] = state["head.out.weight"][:, :4]  # a non-contiguous view of it
    _save(tmp_path, model, state=state)
    saved = load_file(str(tmp_path / f"{TASK}.safetensors"))
    assert torch.equal(saved["tied"], state["head.out.weight"]) and torch.equal(saved["view"], state["view"])


def test_changed_file_is_refused(tmp_path, no_pickle):
    _save(tmp_path, _model())
    path = tmp_path / f"{TASK}.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt or replaced") as error:
        load_task_state(tmp_path, TASK)
    assert str(path) in str(error.value) and sha256_of(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_weights_file(tmp_path):
    _save(tmp_path, _model())
    (tmp_path / f"{TASK}.safetensors").unlink()
    with pytest.raises(WeightsError, match=rf"{TASK}\.safetensors does not exist"):
        load_task_state(tmp_path, TASK)


def test_missing_manifest_lists_available_tasks(tmp_path):
    _save(tmp_path, _model())
    _save(tmp_path, _model(task="seg_lge"), task="seg_lge")
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
    record_in_index(tmp_path, f"{TASK}.json")  # approved as it is: the manifest's own checks refuse it
    with pytest.raises(WeightsError, match=message):
        read_manifest(tmp_path, TASK)


def test_shared_encoder_and_task_file_stack(tmp_path, no_pickle):
    model = _model()
    state = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    relative, digest = save_encoder_weights(tmp_path, encoder)
    assert relative == "encoder.safetensors" and digest == sha256_of(tmp_path / relative)
    head = {k: v for k, v in state.items() if k.startswith("head.")}
    head["encoder.norm.bias"] = torch.full_like(state["encoder.norm.bias"], 2.0)
    _save(tmp_path, model, state=head, shared_files=[relative])

    loaded, manifest = load_task_state(tmp_path, TASK)
    assert [(f["path"], f["role"]) for f in manifest["files"]] == [
        ("encoder.safetensors", "encoder"),
        (f"{TASK}.safetensors", "task"),
    ]
    assert torch.equal(loaded["encoder.norm.bias"], head["encoder.norm.bias"])  # later file overrides
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != "encoder.norm.bias")

    # A task whose encoder is another size cannot use this encoder file.
    torch.manual_seed(1)
    other = build_model("seg_lge", {**architecture_of(model)["encoder"]["config"], "dim": 96})
    _save(tmp_path, other, task="seg_lge", state={k: v for k, v in other.state_dict().items() if k.startswith("head.")},
          shared_files=[relative])
    with pytest.raises(WeightsError, match=r"encoder.safetensors: tensor 'encoder\.[\w.]+' has shape \(.*48,?\), "
                                           r"the architecture in seg_lge.json needs \(.*96,?\)"):
        load_task_state(tmp_path, "seg_lge")

    # Replacing the shared encoder invalidates every task that uses it.
    save_encoder_weights(tmp_path, {k: torch.zeros_like(v) for k, v in encoder.items()})
    with pytest.raises(WeightsError, match="encoder.safetensors does not match"):
        load_task_state(tmp_path, TASK)


def test_bad_save_arguments(tmp_path):
    with pytest.raises(KeyError, match="unknown task"):
        _save(tmp_path, _model(), task="no_such_task")
    with pytest.raises(WeightsError, match="does not exist"):
        _save(tmp_path, _model(), shared_files=["encoder.safetensors"])
    with pytest.raises(ValueError, match="not a tensor"):
        _save(tmp_path, _model(), state={"w": [1, 2, 3]})
    with pytest.raises(ValueError, match="JSON"):
        _save(tmp_path, _model(), architecture={"layer": object()})
    with pytest.raises(ValueError, match="plain file name"):
        save_encoder_weights(tmp_path, {"w": torch.ones(1)}, name="../x")


def test_weights_folder_resolution(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    from_env.mkdir()
    monkeypatch.setenv("CMRFM_WEIGHTS", str(from_env))
    assert resolve_weights_dir(explicit) == explicit
    assert resolve_weights_dir() == from_env
    _save(from_env, _model())
    assert available_tasks() == [TASK]
    state, _ = load_task_state(None, TASK)
    assert "head.out.weight" in state

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
    path = _save(tmp_path, _model())
    manifest = json.loads(path.read_text())
    assert manifest["library_version"]
    assert manifest["created"].endswith("+00:00")


def test_record_evaluation(tmp_path, no_pickle):
    _save(tmp_path, _model(), training={"epochs": np.int64(3)})
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
