"""First use in Slicer (installation.py): which packages are missing, and the offline weights import."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from CMRFoundationLib.installation import REQUIREMENTS, Requirement, import_weights, missing_requirements
from CMRFoundationLib.weights import (
    DEFAULT_WEIGHTS_DIR,
    WeightsError,
    available_tasks,
    read_manifest,
    record_in_index,
    sha256_of,
)

CARRIED_TASKS = available_tasks(DEFAULT_WEIGHTS_DIR)


def test_requirements_met_here_and_missing_ones_say_why():
    assert missing_requirements() == []
    assert REQUIREMENTS[0].module == "torch"  # installed first, so nothing pulls PyPI's default torch build
    assert "monai" not in {r.module for r in REQUIREMENTS}  # training only: Slicer never needs it
    absent = Requirement("no_such_module_cmrfm", "no-such-package", "1.0")
    too_old = Requirement("numpy", "numpy", "999.0")
    assert missing_requirements([absent, too_old]) == [(absent, "not installed"), (too_old, f"version {np.__version__} found")]
    assert too_old.pip_spec == "numpy>=999.0"


@pytest.mark.parametrize(
    "found, minimum, enough",
    [("2.13.0+cpu", "2.0", True), ("2.10", "2.9", True), ("1.10.0", "1.9", True), ("2.0rc1", "2.0", False),
     ("1.9.9", "1.24", False), ("custom-build", "1.0", True)],
)
def test_versions_are_compared_as_pep_440_says(monkeypatch, found, minimum, enough):
    import CMRFoundationLib.installation as installation

    monkeypatch.setattr(installation.importlib.metadata, "version", lambda package: found)
    numpy = Requirement("numpy", "numpy", minimum)
    assert missing_requirements([numpy]) == ([] if enough else [(numpy, f"version {found} found")])


def test_a_weights_folder_is_imported_verified(tmp_path):
    destination = tmp_path / "user" / "Weights"
    assert import_weights(DEFAULT_WEIGHTS_DIR, destination) == CARRIED_TASKS
    for task in CARRIED_TASKS:
        for entry in read_manifest(destination, task)["files"]:
            assert sha256_of(destination / entry["path"]) == entry["sha256"]
    assert not list(destination.glob("*.partial")) and not (destination / "dino_encoder.json").exists()
    imported = destination / "disease_phenotypes.json"  # the phenotype classifier comes with the folder
    assert imported.read_bytes() == (DEFAULT_WEIGHTS_DIR / "disease_phenotypes.json").read_bytes()


def test_one_manifest_imports_its_task_beside_the_others(tmp_path):
    destination = tmp_path / "Weights"
    import_weights(DEFAULT_WEIGHTS_DIR / "seg_lge.json", destination)
    assert available_tasks(destination) == ["seg_lge"]
    assert import_weights(DEFAULT_WEIGHTS_DIR / "disease.json", destination) == ["disease"]
    assert available_tasks(destination) == ["disease", "seg_lge"]


def test_a_zip_of_a_weights_folder_is_imported(tmp_path):
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in ("seg_lge.json", "seg_lge.safetensors", "weights_index.json"):
            handle.write(DEFAULT_WEIGHTS_DIR / name, f"cmrfm-weights/{name}")
    assert import_weights(archive, tmp_path / "Weights") == ["seg_lge"]


def test_a_corrupt_file_imports_nothing(tmp_path):
    source = tmp_path / "download"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, source)
    with open(source / "seg_lge.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(WeightsError, match="seg_lge.safetensors does not match"):
        import_weights(source, tmp_path / "Weights")
    assert not (tmp_path / "Weights").exists()


def test_a_folder_without_manifests_is_refused(tmp_path):
    with pytest.raises(WeightsError, match="no CMRFoundation weights manifest"):
        import_weights(tmp_path, tmp_path / "Weights")


def test_a_file_other_tasks_use_is_never_replaced_by_a_different_one(tmp_path):
    destination = tmp_path / "Weights"
    import_weights(DEFAULT_WEIGHTS_DIR / "seg_lge.json", destination)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(DEFAULT_WEIGHTS_DIR / "disease.safetensors", other / "seg_lge.safetensors")
    manifest = json.loads((DEFAULT_WEIGHTS_DIR / "disease.json").read_text())
    manifest["files"][0].update(path="seg_lge.safetensors", sha256=sha256_of(other / "seg_lge.safetensors"))
    (other / "disease.json").write_text(json.dumps(manifest))
    record_in_index(other, "disease.json")  # approved, so that the import gets as far as the conflict
    with pytest.raises(WeightsError, match="task 'seg_lge'"):
        import_weights(other, destination)
    assert available_tasks(destination) == ["seg_lge"]
