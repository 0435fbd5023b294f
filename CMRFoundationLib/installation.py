"""What a fresh Slicer needs before its first analysis: the Python packages and the weights.

The Slicer module asks the user before installing anything: torch through the PyTorch
extension (the extension's dependency), the rest with ``slicer.util.pip_install`` pinned
by CONSTRAINTS_FILE, the versions CI tests with (test_installation.py checks that the
pins are the ones installed there and cover what they pull in). This part finds what is
missing, says what an install changes, and imports weights that were brought in by hand
(no network), so it is tested in plain Python.

Slicer's own modules import some of these packages. Slicer 5.10 ships pydicom 2.4.4,
which highdicom and the reader cannot use: the install upgrades it to the pinned 3.x,
says so before, and asks for a restart when the session had already imported it. The
pydicom calls of Slicer 5.10's DICOM modules are checked against the pinned pydicom
(test_slicer_pydicom.py, also run inside Slicer by the module's self-test).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement as PipRequirement
from packaging.version import InvalidVersion, Version

from .files import atomic_write, read_json
from .weights import FORMAT, WeightsError, read_manifest, record_in_index, regular_file_in, sha256_of


@dataclass(frozen=True)
class Requirement:
    module: str  # the import name
    package: str  # the pip name
    minimum: str  # the lowest version that works

    @property
    def pip_spec(self) -> str:
        return f"{self.package}>={self.minimum}"


# What inference needs (torch first: the PyTorch extension picks the build that suits the GPU,
# and nothing installed before it may pull PyPI's default torch build as a dependency).
# MONAI is not here: only training (the `train` extra) imports it.
REQUIREMENTS = (
    Requirement("torch", "torch", "2.0"),  # scaled_dot_product_attention
    Requirement("numpy", "numpy", "1.24"),
    Requirement("SimpleITK", "SimpleITK", "2.3"),
    Requirement("pydicom", "pydicom", "3.0"),
    Requirement("highdicom", "highdicom", "0.23"),
    Requirement("safetensors", "safetensors", "0.4"),
    Requirement("PIL", "pillow", "9.1"),  # the report's PNG images
    Requirement("psutil", "psutil", "5.9"),  # cancelling stops the analysis's whole process tree (runner.py)
    # packaging (the version checks here) is not listed: Slicer's own Python ships it (slicer.packaging).
)
# The exact versions the installer may install (pip --constraint), beside the library as in the extension.
CONSTRAINTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "Requirements" / "slicer-constraints.txt"
# Packages Slicer's own modules import, which an install may upgrade; who uses them, for the user to know.
USED_BY_SLICER = {"pydicom": "Slicer's DICOM modules", "numpy": "Slicer", "pillow": "Slicer's DICOM modules",
                  "SimpleITK": "Slicer"}


def missing_requirements(requirements=REQUIREMENTS) -> list[tuple[Requirement, str]]:
    """The requirements not met, in install order, each with why ("not installed", "version 0.3 found")."""
    missing = []
    for requirement in requirements:
        if importlib.util.find_spec(requirement.module) is None:
            missing.append((requirement, "not installed"))
            continue
        try:
            found = importlib.metadata.version(requirement.package)
        except importlib.metadata.PackageNotFoundError:
            continue  # importable but without pip metadata (e.g. Slicer's own SimpleITK build): keep it
        try:
            too_old = Version(found) < Version(requirement.minimum)  # PEP 440: "2.13.0+cpu" is 2.13.0
        except InvalidVersion:
            continue  # a version PEP 440 cannot read (a custom build): keep it, as one without metadata
        if too_old:
            missing.append((requirement, f"version {found} found"))
    return missing


def pins(path: str | os.PathLike = CONSTRAINTS_FILE) -> dict[str, PipRequirement]:
    """Package name (lower case) -> its pin in a constraints file, for this platform (markers evaluated)."""
    found = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = PipRequirement(line)
            if pin.marker is None or pin.marker.evaluate():
                found[pin.name.lower()] = pin
    return found


def pinned_version(package: str) -> str | None:
    pin = pins().get(package.lower())
    return next((spec.version for spec in pin.specifier if spec.operator == "=="), None) if pin else None


def pip_arguments(requirements) -> list[str]:
    """``slicer.util.pip_install``'s arguments (a list: a path may hold spaces) for the requirements, pinned."""
    return pip_arguments_for(r.pip_spec for r in requirements)


def pip_arguments_for(specs) -> list[str]:
    return ["--constraint", str(CONSTRAINTS_FILE), *specs]


def install_plan(missing: list[tuple[Requirement, str]]) -> list[str]:
    """One line per missing requirement for the user to confirm: what is installed, and what an
    upgrade replaces that Slicer itself uses."""
    lines = []
    for requirement, why in missing:
        if requirement.module == "torch":
            lines.append(f"- PyTorch ({requirement.pip_spec}), through the PyTorch extension ({why})")
            continue
        target = pinned_version(requirement.package)
        line = f"- {requirement.package} {target or requirement.pip_spec} ({why})"
        if why != "not installed" and requirement.package in USED_BY_SLICER:
            line += (f": replaces the version {USED_BY_SLICER[requirement.package]} use; checked to work with "
                     "Slicer's own modules (see the README), and Slicer restarts afterwards")
        lines.append(line)
    return lines


def restart_needed(missing: list[tuple[Requirement, str]], modules) -> list[str]:
    """The packages an install upgrades that are already imported (``modules``: sys.modules): this
    process keeps the old version until Slicer restarts."""
    return [r.package for r, why in missing if why != "not installed" and r.module in modules]


def import_weights(source: str | os.PathLike, destination: str | os.PathLike) -> list[str]:
    """Copy verified weights into the folder ``destination``; the names of the tasks imported.

    ``source``: a weights folder, one task's manifest (``<task>.json``, its files beside
    it), or a .zip of a weights folder. Every file is checked against its manifest's
    SHA-256 before anything is copied, so a corrupt or partial download changes nothing;
    a file that other tasks in ``destination`` use is never replaced by a different one.
    Manifests are written last, so ``destination`` never lists a task whose files are
    missing. Task manifests (format "cmrfm-weights") and their files are imported, and from a
    folder its phenotype disease classifier (``disease_phenotypes.json``) when it reads back.
    """
    source = Path(source)
    if source.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory() as unpacked:
            with zipfile.ZipFile(source) as archive:
                archive.extractall(unpacked)  # extractall drops absolute paths and ".." parts
            try:
                return import_weights(_manifest_folder(Path(unpacked), source), destination)
            except WeightsError as error:  # it names the unpacked copy, which is gone by now
                raise WeightsError(f"{source} (unpacked): {error}") from None
    folder, tasks = (source.parent, [source.stem]) if source.is_file() else (source, _manifest_names(source))
    if not tasks:
        raise WeightsError(f"{source} holds no CMRFoundation weights manifest (<task>.json of format \"{FORMAT}\")")
    manifests = {task: read_manifest(folder, task) for task in tasks}
    files = {entry["path"]: entry["sha256"] for manifest in manifests.values() for entry in manifest["files"]}
    for path, sha256 in files.items():
        try:
            regular_file_in(folder, path, folder)  # a regular file, not a link to elsewhere
        except WeightsError as error:
            raise WeightsError(f"{error}; nothing was imported") from None
        if sha256_of(folder / path) != sha256:
            raise WeightsError(f"{folder / path} does not match its manifest's SHA-256 (corrupt or replaced); "
                               "nothing was imported")
    destination = Path(destination)
    _check_no_conflict(destination, files, set(tasks))
    destination.mkdir(parents=True, exist_ok=True)
    for path, sha256 in files.items():
        target = destination / path
        if not (target.is_file() and sha256_of(target) == sha256):
            _copy_atomically(folder / path, target)
    for task in tasks:
        _copy_atomically(folder / f"{task}.json", destination / f"{task}.json")
    record_in_index(destination, *(f"{task}.json" for task in tasks))  # checked above: approved as imported
    # A folder's disease classifier on phenotypes (a checked JSON file, not task weights) comes along.
    from .models.phenotype_classifier import FILE_NAME as PHENOTYPE_FILE  # needs numpy: imported on use
    from .models.phenotype_classifier import PhenotypeClassifier

    if source.is_dir() and (folder / PHENOTYPE_FILE).is_file():
        try:
            PhenotypeClassifier.load(folder)
        except ValueError as error:
            raise WeightsError(f"{error}; the task weights were imported, the classifier was not") from None
        _copy_atomically(folder / PHENOTYPE_FILE, destination / PHENOTYPE_FILE)
        record_in_index(destination, PHENOTYPE_FILE)
    return sorted(tasks)


def _manifest_names(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.json")):
        try:
            if read_json(path, "weights manifest").get("format") == FORMAT:
                names.append(path.stem)
        except (ValueError, AttributeError):
            continue  # not a manifest (e.g. the DINO encoder's training record)
    return names


def _manifest_folder(root: Path, archive: Path) -> Path:
    """The one folder of an unpacked archive that holds the manifests (the root or a subfolder)."""
    folders = {path.parent for path in root.rglob("*.json") if path.parent.is_dir() and _manifest_names(path.parent)}
    if len(folders) != 1:
        raise WeightsError(f"{archive} must hold one weights folder with <task>.json manifests; "
                           f"found {len(folders)} folders with manifests")
    return folders.pop()


def _check_no_conflict(destination: Path, files: dict[str, str], tasks: set[str]) -> None:
    """Refuse to replace a file that a task staying in ``destination`` needs with a different one."""
    if not destination.is_dir():
        return
    for task in set(_manifest_names(destination)) - tasks:
        for entry in read_manifest(destination, task)["files"]:
            if entry["path"] in files and files[entry["path"]] != entry["sha256"]:
                raise WeightsError(f"importing would replace {destination / entry['path']}, which task {task!r} "
                                   f"in {destination} needs; import the whole weights folder, or into a new folder")


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda temp: shutil.copyfile(source, temp))
