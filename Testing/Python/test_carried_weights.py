"""The weights the project carries (Resources/Weights): complete, verified, documented, working."""

import numpy as np
import pytest

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.tasks import TASKS
from CMRFoundationLib.weights import (
    DEFAULT_WEIGHTS_DIR,
    INDEX_FILE,
    available_tasks,
    check_folder_approved,
    load_task_state,
    read_index,
    read_manifest,
)


def test_every_task_has_verified_weights_with_a_manifest():
    assert set(available_tasks(DEFAULT_WEIGHTS_DIR)) == set(TASKS)
    total = 0
    for name in TASKS:
        state, manifest = load_task_state(DEFAULT_WEIGHTS_DIR, name)  # checks the SHA-256
        assert manifest["labels"] == list(TASKS[name].labels)
        assert manifest["training"]["sources"] and manifest["training"]["steps"] > 0
        assert manifest["evaluation"]["recorded"]["test"], f"{name}: no test numbers recorded"
        total += sum(f["bytes"] for f in manifest["files"])
    assert total < 50e6  # the CPU set stays small enough to carry in the repository


def test_carried_four_chamber_model_segments_the_sample_study(sample_study, sample_stacks):
    """Not an accuracy measurement (see Training/results): a guard that the carried weights
    are trained ones and that their output lands on the right native pixels."""
    from CMRFoundationLib.synthetic.study import load_label_map

    stacks, _ = sample_stacks
    four_chamber = next(s for s in stacks if s.info.series_number == 4)
    predicted = TaskPredictor.load("seg_4ch_cine", DEFAULT_WEIGHTS_DIR, "cpu").predict_stack(four_chamber).labels
    truth, _ = load_label_map(sample_study, "labels/S004.npz")
    lv_truth = truth == 1  # the phantom's LV blood pool
    lv_predicted = predicted == read_manifest(DEFAULT_WEIGHTS_DIR, "seg_4ch_cine")["labels"].index("lv_blood_pool")
    dice = 2 * (lv_truth & lv_predicted).sum() / (lv_truth.sum() + lv_predicted.sum())
    assert dice > 0.5, dice


def test_every_carried_file_is_approved_in_the_folder_index():
    """A new or retrained set copied into Resources/Weights fails here until it is approved:
    `cmrfm weights approve Resources/Weights` re-creates the index."""
    assert set(read_index(DEFAULT_WEIGHTS_DIR)) == {p.name for p in DEFAULT_WEIGHTS_DIR.glob("*.json")} - {INDEX_FILE}
    assert check_folder_approved(DEFAULT_WEIGHTS_DIR) == DEFAULT_WEIGHTS_DIR


@pytest.mark.parametrize("name", sorted(TASKS))
def test_manifest_names_its_preprocessing_and_architecture(name):
    manifest = read_manifest(DEFAULT_WEIGHTS_DIR, name)
    assert manifest["preprocessing"]["size"] % 8 == 0 and manifest["preprocessing"]["percentile"] == 98.0
    assert manifest["architecture"]["task"] == name
    assert np.all([len(f["sha256"]) == 64 for f in manifest["files"]])


@pytest.mark.parametrize("name, method, size", [("dino_encoder", "DINO", 112), ("mim_hybrid_encoder", "SimMIM", 176)])
def test_carried_encoder_is_verified_and_starts_a_finetuning(name, method, size):
    """The pretrained encoders ship too, so researchers can finetune new tasks from them."""
    import json

    from safetensors.torch import load_file

    from CMRFoundationLib.models import build_model
    from CMRFoundationLib.weights import sha256_of
    from cmrtrain.finetune import load_encoder_weights

    manifest = json.loads((DEFAULT_WEIGHTS_DIR / f"{name}.json").read_text())
    path = DEFAULT_WEIGHTS_DIR / manifest["weights"]
    assert manifest["method"] == method and manifest["n_images"] > 0
    assert sha256_of(path) == manifest["sha256"]
    model = build_model("seg_sax_cine", manifest["encoder_preset"], image_size=size)
    load_encoder_weights(model, path)  # pretrained at another size: the position grid is resized
    shipped, loaded = load_file(str(path)), model.encoder.state_dict()
    assert all(np.array_equal(loaded[k].numpy(), v.float().numpy()) for k, v in shipped.items() if k != "pos_embed")
