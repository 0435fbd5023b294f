"""First use in Slicer (installation.py): which packages are missing, what the installer installs
(pinned by its constraints file), and the offline weights import."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from packaging.requirements import Requirement as PipRequirement
from packaging.version import Version

from CMRFoundationLib.installation import (
    CONSTRAINTS_FILE,
    REQUIREMENTS,
    Requirement,
    import_weights,
    install_plan,
    missing_requirements,
    pinned_version,
    pins,
    pip_arguments,
    restart_needed,
)
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


# What Slicer 5.10 ships that the pins may need (Slicer's SuperBuild/External_python-*.cmake at v5.10.0:
# numpy, dicom, pythonqt and extension-manager requirements; SimpleITK 2.5.2 built by External_SimpleITK.cmake).
# The installer must not replace them, but pydicom, which it upgrades on purpose (test_slicer_pydicom.py).
SLICER_5_10 = {"numpy": "2.0.2", "pillow": "11.2.1", "pydicom": "2.4.4", "typing-extensions": "4.14.0",
               "packaging": "25.0", "six": "1.17.0", "requests": "2.32.3", "setuptools": "80.9.0",
               "simpleitk": "2.5.2"}
UPGRADED = {"pydicom"}
# Slicer 5.10's packages that depend on pydicom, and what they accept (their wheel's METADATA).
SLICER_5_10_PYDICOM_USERS = {"dicomweb-client 0.60.0": "pydicom>=2.2"}


def normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_package_the_installer_installs_is_pinned():
    pinned = {normalized(name) for name in pins()}
    for requirement in REQUIREMENTS:
        package = normalized(requirement.package)
        if requirement.module == "torch" or (package in SLICER_5_10 and package not in UPGRADED):
            continue  # the PyTorch extension's, or Slicer's own (which the minimum accepts)
        assert package in pinned, f"{package} is installed unpinned"
        assert Version(pinned_version(package)) >= Version(requirement.minimum)
    for package, version in SLICER_5_10.items():
        minimum = next((r.minimum for r in REQUIREMENTS if normalized(r.package) == package), None)
        assert package in UPGRADED or minimum is None or Version(version) >= Version(minimum), package
    assert "torch" not in pinned  # the PyTorch extension picks the build


def test_pins_are_the_versions_tested_here():
    """CI installs with the constraints file (setup-env.sh): what Slicer gets is what the tests ran with."""
    for name, pin in pins().items():
        assert pin.specifier.contains(importlib.metadata.version(name)), f"{name}: {pin} pinned, " \
            f"{importlib.metadata.version(name)} installed"


def test_what_the_pins_pull_in_is_pinned_or_in_slicer():
    pinned = {normalized(name): pin for name, pin in pins().items()}
    for name in pinned:
        for text in importlib.metadata.requires(name) or []:
            needed = PipRequirement(text)
            if needed.marker is not None and not needed.marker.evaluate({"extra": ""}):
                continue
            package = normalized(needed.name)
            if package in pinned:
                version = pinned_version(package)
            else:
                assert package in SLICER_5_10 and package not in UPGRADED, f"{name} needs {needed}, neither pinned nor in Slicer"
                version = SLICER_5_10[package]
            assert needed.specifier.contains(version, prereleases=True), f"{name} needs {needed}; {version} would be there"
    for user, accepts in SLICER_5_10_PYDICOM_USERS.items():
        assert PipRequirement(accepts).specifier.contains(pinned_version("pydicom")), user


def test_pip_reads_the_constraints_and_finds_them_met():
    """pip itself, offline: the installer's arguments resolve to the installed (pinned) versions, installing nothing."""
    arguments = pip_arguments([r for r in REQUIREMENTS if r.module != "torch"])
    assert arguments[:2] == ["--constraint", str(CONSTRAINTS_FILE)] and CONSTRAINTS_FILE.is_file()
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                             "--report", "-", *arguments], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["install"] == []


def test_the_plan_says_what_an_upgrade_replaces_and_when_slicer_must_restart():
    pydicom = next(r for r in REQUIREMENTS if r.package == "pydicom")
    safetensors = next(r for r in REQUIREMENTS if r.package == "safetensors")
    torch = next(r for r in REQUIREMENTS if r.module == "torch")
    missing = [(torch, "not installed"), (pydicom, "version 2.4.4 found"), (safetensors, "not installed")]
    plan = install_plan(missing)
    assert "PyTorch extension" in plan[0]
    assert f"pydicom {pinned_version('pydicom')}" in plan[1] and "Slicer's DICOM modules" in plan[1]
    assert "replaces" not in plan[2]
    assert restart_needed(missing, {"pydicom": object()}) == ["pydicom"]
    assert restart_needed(missing, {}) == []


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
