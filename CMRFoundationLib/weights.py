"""Model weights on disk: safetensors files plus one JSON manifest per task.

A weights folder holds ``<task>.json`` for each task it can run, and the safetensors files
those manifests list. A manifest says what the weights are (task, architecture,
pre-processing, labels), where they came from (training, evaluation) and which files make
them up, each with its SHA-256. Several files can be stacked: a shared encoder file
(role "encoder") followed by a per-task file (role "task"); loading merges their state
dicts in order, later files overriding earlier ones. A task saved in one file has the
single role "model". Evaluation results can be added to a manifest later
(``record_evaluation``) without touching the weight files.

The folder's index (``weights_index.json``) records the SHA-256 of each of its JSON files
(the manifests, the phenotype classifier), so an edited manifest (other pre-processing,
another architecture) is refused as modified, as a replaced tensor file is by the
manifest's hash. The library's writers (``save_task_weights``, ``record_evaluation``,
``PhenotypeClassifier.save``) keep the index current; ``approve_folder`` (``cmrfm weights
approve FOLDER``) re-creates it for weights a user made or edited and trusts. A site pins
the folder it trusts with the index's SHA-256 in $CMRFM_WEIGHTS_SHA256. The hashes catch
corruption and mix-ups, not a malicious publisher, who can write consistent hashes: see
the README's threat model.

Every weights file is read defensively, whoever wrote it: regular files inside the folder
only (no symbolic links), manifests of bounded size with architecture values in sane
bounds, and the safetensors header parsed here (bounded length, dtypes, shapes and
offsets checked against the file size and against the shapes the architecture needs,
computed on torch's meta device without allocating) before safetensors reads a tensor.
Nothing is ever unpickled. Every problem is one ``WeightsError`` naming the file and the
reason. torch and safetensors are imported when weights are saved or loaded, so listing
the available tasks works without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

from . import __version__
from .files import atomic_write, read_json, write_json
from .preprocess import PreprocessConfig
from .tasks import TASKS, get_task

FORMAT = "cmrfm-weights"
FORMAT_VERSION = 1
ENV_VAR = "CMRFM_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Weights"

_HASH_CHUNK = 1 << 20  # bytes read at a time when hashing

INDEX_FILE = "weights_index.json"
INDEX_FORMAT = "cmrfm-weights-index"
PIN_ENV_VAR = "CMRFM_WEIGHTS_SHA256"  # a site's pin: the SHA-256 of the index it approved

# Bounds that no genuine file comes near, so that a hostile one is refused before it is read.
MAX_JSON_BYTES = 4 << 20  # a manifest is a few kB
MAX_HEADER_BYTES = 16 << 20  # a safetensors header (names, dtypes, shapes) is kB for our models
MAX_PARAMETERS = 1_000_000_000  # ViT-S/8 has 22M; a billion is four GB of float32
# Architecture numbers beyond these are no model this project builds (ViT-B: dim 768, depth 12).
ARCHITECTURE_LIMITS = {"dim": 2048, "depth": 48, "heads": 64, "mlp_ratio": 8, "image_size": 1024, "patch_size": 32,
                       "in_channels": 3, "stage_channels": 1024, "features": 1024, "n_last_blocks": 48, "rank": 256,
                       "alpha": 1024, "drop_path": 1}
SPACING_MM_RANGE = (0.25, 5.0)  # the model grid's pixel size; CMR is acquired at about 1-2 mm
SIZE_RANGE = (32, 1024)  # the model grid, pixels

# safetensors dtypes and their bytes per element (those a state dict of ours can hold).
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


class WeightsError(ValueError):
    """Weights that cannot be used: missing, corrupt, replaced, not approved, out of bounds or of an
    unknown format; the message names the file and the reason."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks (weight files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights_dir(folder: str | os.PathLike | None = None) -> Path:
    """The weights folder: ``folder`` if given, else $CMRFM_WEIGHTS, else the project's
    ``Resources/Weights``. An error, saying how to set it, if that folder does not exist."""
    if folder is not None:
        path, source = Path(folder).expanduser(), "the folder given"
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]).expanduser(), f"the environment variable {ENV_VAR}"
    else:
        path, source = DEFAULT_WEIGHTS_DIR, "the default location"
    if not path.is_dir():
        raise WeightsError(
            f"weights folder {path} (from {source}) does not exist or is not a folder; "
            f"pass the folder explicitly or set the environment variable {ENV_VAR} to the folder "
            f"holding the <task>.json manifests and their .safetensors files"
        )
    return path


def available_tasks(folder: str | os.PathLike | None = None) -> list[str]:
    """Names of the registered tasks that have a manifest in the weights folder, sorted
    (listed, not yet checked: loading checks them)."""
    folder = resolve_weights_dir(folder)
    tasks = []
    for path in sorted(folder.glob("*.json")):
        if path.stem not in TASKS or not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            continue
        try:
            manifest = read_json(path, "weights manifest")
        except ValueError:
            continue  # not a manifest; read_manifest explains if it is asked for
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            tasks.append(path.stem)
    return tasks


def read_manifest(folder: str | os.PathLike | None, task_name: str) -> dict[str, Any]:
    """The checked manifest of ``task_name`` in the weights folder: approved in the folder's
    index, of a registered task with its labels, architecture and pre-processing in bounds."""
    folder = resolve_weights_dir(folder)
    path = folder / f"{task_name}.json"
    if task_name not in TASKS:
        raise WeightsError(f"{path}: {task_name!r} is not a task of this version; known tasks: {', '.join(TASKS)}")
    if not os.path.lexists(path):
        tasks = available_tasks(folder)
        raise WeightsError(
            f"no weights for task {task_name!r}: {path} does not exist; "
            f"the folder has weights for: {', '.join(tasks) if tasks else 'no tasks'}"
        )
    return _check_manifest(folder, task_name, read_approved_json(folder, path.name, "weights manifest"))


def load_task_state(folder: str | os.PathLike | None, task_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, manifest)`` of a task; floating tensors are float32.

    The manifest is checked (``read_manifest``), the tensors its architecture needs are
    worked out without allocating them, and each file is checked against those and
    against its SHA-256 before safetensors reads it. The files' state dicts are merged in
    manifest order, later files overriding earlier keys; together they hold exactly the
    architecture's tensors, so the model loads strictly.
    """
    folder = resolve_weights_dir(folder)
    manifest = read_manifest(folder, task_name)
    return _load_files(folder, manifest), manifest


def _expected_tensors(task_name: str, architecture: Any, manifest_path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], bool]]:
    """``{key: (shape, is_floating)}`` of the state dict that ``architecture`` describes, from
    the model built on torch's meta device (no memory for tensors). A WeightsError naming
    ``manifest_path`` when the architecture is out of bounds or cannot be built."""
    import torch

    from .models import build_from_architecture

    _check_architecture_bounds(architecture, manifest_path)
    try:
        with torch.device("meta"):
            model = build_from_architecture(task_name, architecture)
    except Exception as error:  # any JSON can be in a manifest: every failure is the manifest's
        raise WeightsError(f"{manifest_path}: the model architecture cannot be built ({error})") from None
    state = model.state_dict()
    parameters = sum(tensor.numel() for tensor in state.values())
    if parameters > MAX_PARAMETERS:
        raise WeightsError(f"{manifest_path}: the architecture has {parameters:,} parameters, more than the "
                           f"{MAX_PARAMETERS:,} this version loads; the manifest was edited or is damaged")
    return {key: (tuple(tensor.shape), tensor.is_floating_point()) for key, tensor in state.items()}


# -- the folder index -------------------------------------------------------------------


def read_index(folder: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` of the folder's approved JSON files, from its index; the index
    must match $CMRFM_WEIGHTS_SHA256 when that is set."""
    folder = Path(folder)
    path = folder / INDEX_FILE
    if not os.path.lexists(path):
        raise WeightsError(f"{folder} has no weights index ({INDEX_FILE}), so its manifests cannot be checked; "
                           f"if you trust these weights, approve them with: cmrfm weights approve {folder}")
    data = _read_regular_file(path, MAX_JSON_BYTES, "weights index")
    pin = os.environ.get(PIN_ENV_VAR, "").strip().lower()
    if pin and hashlib.sha256(data).hexdigest() != pin:
        raise WeightsError(f"{path}: its SHA-256 {hashlib.sha256(data).hexdigest()} is not the one pinned in "
                           f"{PIN_ENV_VAR} ({pin}); these are not the weights this site approved")
    index = _json_of(path, data, "weights index")
    files = index.get("files") if isinstance(index, dict) else None
    if (not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(files, dict)
            or not all(isinstance(k, str) and _is_sha256(v) for k, v in files.items())):
        raise WeightsError(f"{path}: not a CMRFoundation weights index (expected \"format\": \"{INDEX_FORMAT}\" "
                           f"and a SHA-256 per file); re-create it with: cmrfm weights approve {folder}")
    return files


def read_approved_json(folder: str | os.PathLike, name: str, what: str) -> Any:
    """The JSON of ``folder/name``, a regular file whose SHA-256 the folder's index records."""
    folder = Path(folder)
    index = read_index(folder)
    path = regular_file_in(folder, name, folder / INDEX_FILE)
    data = _read_regular_file(path, MAX_JSON_BYTES, what)
    if name not in index:
        raise WeightsError(f"{path} is not in the folder's index ({INDEX_FILE}), so it was not approved; "
                           f"if you trust it, approve the folder with: cmrfm weights approve {folder}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != index[name]:
        raise WeightsError(f"{path} was modified after the weights were approved (SHA-256 {actual}, the index "
                           f"records {index[name]}); restore the original, or if you made this change and trust it, "
                           f"approve it with: cmrfm weights approve {folder}")
    return _json_of(path, data, what)


def record_in_index(folder: str | os.PathLike, *names: str) -> Path:
    """Record the current SHA-256 of ``folder/<name>`` for each name in the folder's index
    (created if absent), leaving the other entries as they are; what the library's writers
    call after writing a manifest. Returns the index path."""
    folder = Path(folder)
    files = read_index(folder) if os.path.lexists(folder / INDEX_FILE) else {}
    for name in names:
        path = regular_file_in(folder, name, folder / INDEX_FILE)
        files[name] = hashlib.sha256(_read_regular_file(path, MAX_JSON_BYTES, "weights file")).hexdigest()
    return _write_index(folder, files)


def approve_folder(folder: str | os.PathLike) -> list[str]:
    """Check every JSON file of a weights folder and record them all in a new index; the
    names approved. For weights a user made or edited and trusts (``cmrfm weights approve``).

    Each task manifest is checked in full (its files, hashes and tensor shapes), the
    phenotype classifier is read back; on any problem nothing is approved and the
    WeightsError lists them all.
    """
    from .models.phenotype_classifier import FILE_NAME as PHENOTYPE_FILE  # numpy: imported on use
    from .models.phenotype_classifier import PhenotypeClassifier

    folder = resolve_weights_dir(folder)
    hashes, problems = {}, []
    for path in sorted(folder.glob("*.json")):
        if path.name == INDEX_FILE:
            continue
        try:
            regular_file_in(folder, path.name, folder)
            raw = _read_regular_file(path, MAX_JSON_BYTES, "JSON file")
            hashes[path.name] = hashlib.sha256(raw).hexdigest()  # what was checked is what is approved
            data = _json_of(path, raw, "JSON file")
            if isinstance(data, dict) and data.get("format") == FORMAT:
                _load_files(folder, _check_manifest(folder, path.stem, data))
            elif path.name == PHENOTYPE_FILE:
                PhenotypeClassifier.from_dict(data, path)
        except (WeightsError, ValueError) as error:
            problems.append(str(error))
    if problems:
        raise WeightsError(f"{folder} was not approved (its index is unchanged): " + "; ".join(problems))
    if not hashes:
        raise WeightsError(f"{folder} holds no JSON files to approve")
    _write_index(folder, hashes)
    return sorted(hashes)


def check_folder_approved(folder: str | os.PathLike | None = None) -> Path:
    """The weights folder, once its index is read and every task manifest and the phenotype
    classifier in it are as approved; a WeightsError otherwise. JSON files only, so cheap:
    run before an analysis, which would otherwise go on without the refused models."""
    from .models.phenotype_classifier import FILE_NAME as PHENOTYPE_FILE

    folder = resolve_weights_dir(folder)
    read_index(folder)
    for task in available_tasks(folder):
        read_manifest(folder, task)
    if os.path.lexists(folder / PHENOTYPE_FILE):
        read_approved_json(folder, PHENOTYPE_FILE, "phenotype classifier")
    return folder


def index_sha256(folder: str | os.PathLike) -> str:
    """The SHA-256 of the folder's index: the value a site pins in $CMRFM_WEIGHTS_SHA256."""
    path = Path(folder) / INDEX_FILE
    return hashlib.sha256(_read_regular_file(path, MAX_JSON_BYTES, "weights index")).hexdigest()


def save_encoder_weights(
    folder: str | os.PathLike, state_dict: Mapping[str, Any], name: str = "encoder", dtype: Any = None
) -> tuple[str, str]:
    """Write a shared encoder file ``FOLDER/<name>.safetensors``; returns (relative path, sha256).

    Pass the path to ``save_task_weights(..., shared_files=[path])`` of each task using it.
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"encoder weights name must be a plain file name, got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    relative = f"{name}.safetensors"
    _write_safetensors(folder / relative, state_dict, dtype, {"format": FORMAT, "role": "encoder"})
    return relative, sha256_of(folder / relative)


def save_task_weights(
    folder: str | os.PathLike,
    task_name: str,
    state_dict: Mapping[str, Any],
    *,
    architecture: Mapping[str, Any],
    preprocessing: PreprocessConfig | Mapping[str, Any],
    labels: Iterable[str],
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    dtype: Any = None,
    shared_files: Iterable[str] = (),
) -> Path:
    """Write ``FOLDER/<task>.safetensors`` and the manifest ``FOLDER/<task>.json``; returns the manifest path.

    ``dtype`` (e.g. ``torch.float16``) stores floating tensors at that precision;
    loading gives float32 again. ``shared_files`` are files already in the folder (e.g.
    from ``save_encoder_weights``), listed before the task file with role "encoder".
    ``architecture``, ``training`` and ``evaluation`` are stored as given (JSON).
    """
    spec = get_task(task_name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / f"{task_name}.json"
    if isinstance(preprocessing, PreprocessConfig):
        preprocessing = preprocessing.to_dict()
    preprocessing = PreprocessConfig.from_dict(dict(preprocessing)).to_dict()  # checked

    files = []
    for relative in shared_files:
        path = regular_file_in(folder, str(relative), manifest_path)
        files.append({"path": str(relative), "sha256": sha256_of(path), "bytes": path.stat().st_size, "role": "encoder"})
    task_file = f"{task_name}.safetensors"
    _write_safetensors(folder / task_file, state_dict, dtype, {"format": FORMAT, "task": task_name})
    files.append(
        {
            "path": task_file,
            "sha256": sha256_of(folder / task_file),
            "bytes": (folder / task_file).stat().st_size,
            "role": "task" if files else "model",
        }
    )

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task_name,
        "task_spec": dataclasses.asdict(spec),
        "architecture": dict(architecture),
        "preprocessing": preprocessing,
        "labels": [str(label) for label in labels],
        "training": dict(training or {}),
        "evaluation": dict(evaluation or {}),
        "files": files,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "library_version": __version__,
    }
    _write_manifest(manifest_path, manifest)
    record_in_index(folder, manifest_path.name)  # the library wrote it: approved as written
    return manifest_path


def record_evaluation(
    folder: str | os.PathLike | None, task_name: str, results: Mapping[str, Any], *, split: str | None = None
) -> Path:
    """Store evaluation ``results`` (e.g. per data source) in the task's manifest.

    They go under ``evaluation["recorded"][split]`` with the date, replacing an earlier
    record of the same split and keeping what training wrote. The weight files and their
    hashes are untouched. Returns the manifest path.
    """
    folder = resolve_weights_dir(folder)
    manifest = read_manifest(folder, task_name)
    evaluation = manifest.get("evaluation") if isinstance(manifest.get("evaluation"), dict) else {}
    evaluation.setdefault("recorded", {})[split or "unspecified"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": dict(results),
    }
    manifest["evaluation"] = evaluation
    path = folder / f"{task_name}.json"
    _write_manifest(path, manifest)
    record_in_index(folder, path.name)
    return path


# -- helpers ----------------------------------------------------------------------------


def _check_manifest(folder: Path, task_name: str, manifest: Any) -> dict[str, Any]:
    """``manifest`` (the JSON of ``folder/<task_name>.json``) if it is a well-formed manifest
    of that registered task; a WeightsError naming the file and the reason otherwise."""
    path = folder / f"{task_name}.json"
    if task_name not in TASKS:
        raise WeightsError(f"{path}: {task_name!r} is not a task of this version; known tasks: {', '.join(TASKS)}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a CMRFoundation weights manifest (expected \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = " (written by a newer version; update the extension)" if newer else ""
        raise WeightsError(
            f"weights manifest {path} has format_version {version!r}; this version reads {FORMAT_VERSION}{hint}"
        )
    if manifest.get("task") != task_name:
        raise WeightsError(f"weights manifest {path} is for task {manifest.get('task')!r}, not {task_name!r}")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise WeightsError(f"weights manifest {path} lists no files")
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)):
            raise WeightsError(f"weights manifest {path}: each file needs a \"path\" and a \"sha256\", got {entry!r}")
        _relative_path(entry["path"], path)
        if not _is_sha256(entry["sha256"]):
            raise WeightsError(f"weights manifest {path}: {entry['sha256']!r} is not a SHA-256 (64 hex digits)")
    labels = list(TASKS[task_name].labels)
    if manifest.get("labels") != labels:
        raise WeightsError(f"{path}: labels {manifest.get('labels')!r} are not those of task {task_name!r} in this "
                           f"version ({', '.join(labels)}); the weights would be read with the wrong names")
    architecture = manifest.get("architecture")
    if not isinstance(architecture, dict) or architecture.get("task") != task_name:
        raise WeightsError(f"{path}: the model architecture must be a description of a {task_name} model, "
                           f"got {str(architecture)[:200]}")
    _check_preprocessing(path, manifest.get("preprocessing"))
    return manifest


def _check_preprocessing(path: Path, preprocessing: Any) -> None:
    try:
        config = PreprocessConfig.from_dict(dict(preprocessing))
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{path}: pre-processing {preprocessing!r} is not valid ({error})") from None
    (low_mm, high_mm), (low_px, high_px) = SPACING_MM_RANGE, SIZE_RANGE
    if not (low_mm <= config.spacing_mm <= high_mm and low_px <= config.size <= high_px):
        raise WeightsError(f"{path}: pre-processing to {config.spacing_mm:g} mm pixels on a {config.size} px grid is "
                           f"outside what models are trained with ({low_mm:g}-{high_mm:g} mm, {low_px}-{high_px} px); "
                           "the manifest was edited or is damaged")


def _check_architecture_bounds(architecture: Any, manifest_path: str | os.PathLike) -> None:
    """Refuse numbers that would build a model too large to hold before anything is built."""

    def walk(value: Any, key: str, depth: int) -> None:
        if depth > 8:
            raise WeightsError(f"{manifest_path}: the model architecture is nested too deeply")
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, str(name), depth + 1)
        elif isinstance(value, list):
            for item in value:
                walk(item, key, depth + 1)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            limit = ARCHITECTURE_LIMITS.get(key)
            if not math.isfinite(value) or value < 0 or (limit is not None and value > limit):
                bound = f" (0 to {limit})" if limit is not None else ""
                raise WeightsError(f"{manifest_path}: architecture value {key} = {value!r} is out of bounds{bound}; "
                                   "the manifest was edited or is damaged")

    if not isinstance(architecture, dict):
        raise WeightsError(f"{manifest_path}: the model architecture must be a JSON object")
    walk(architecture, "architecture", 0)


def _load_files(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The merged, checked state dict of a checked manifest's files."""
    task_name = manifest["task"]
    manifest_path = folder / f"{task_name}.json"
    expected = _expected_tensors(task_name, manifest["architecture"], manifest_path)
    state: dict[str, Any] = {}
    for entry in manifest["files"]:
        path = regular_file_in(folder, entry["path"], manifest_path)
        for key, tensor in _read_tensor_file(path, entry["sha256"], expected, manifest_path).items():
            state[key] = tensor.float() if tensor.is_floating_point() else tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise WeightsError(f"{manifest_path}: its files lack {len(missing)} tensor(s) that its architecture needs "
                           f"({shown}); the files do not belong to this model")
    return state


def _read_tensor_file(path: Path, sha256: str, expected: dict[str, tuple[tuple[int, ...], bool]],
                      manifest_path: Path) -> dict[str, Any]:
    """The tensors of one safetensors file, read only after its size and header are checked
    against the architecture and its SHA-256 against the manifest."""
    # At most 8 bytes per element (float64), plus the header: a larger file is not these tensors.
    limit = 8 + MAX_HEADER_BYTES + 8 * sum(math.prod(shape) for shape, _ in expected.values())
    size = path.stat().st_size
    if size > limit:
        raise WeightsError(f"{path}: {size:,} bytes, more than the {limit:,} that the tensors of the architecture "
                           f"in {manifest_path.name} can take; it was not read")
    with _open_regular(path, limit, "weights file") as handle:
        size = os.fstat(handle.fileno()).st_size
        for key, (dtype, shape) in _safetensors_header(path, handle, size).items():
            if key not in expected:
                raise WeightsError(f"{path}: tensor {key!r} is not part of the model that {manifest_path.name} "
                                   "describes; the file belongs to another model or task")
            want, floating = expected[key]
            if shape != want:
                raise WeightsError(f"{path}: tensor {key!r} has shape {shape}, the architecture in "
                                   f"{manifest_path.name} needs {want}; the file belongs to another model or task")
            if (dtype in _FLOAT_DTYPES) != floating:
                raise WeightsError(f"{path}: tensor {key!r} is {dtype}, the architecture needs "
                                   f"{'floating-point' if floating else 'integer'} values")
        handle.seek(0)
        data = handle.read(size)  # now known to be the architecture's tensors and one header
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise WeightsError(
            f"weights file {path} does not match the manifest of task {manifest_path.stem!r} "
            f"(SHA-256 expected {sha256}, found {actual}); "
            f"the file may be corrupt or replaced, so it was not loaded"
        )
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as error:  # checked above; anything left is still the file's fault
        raise WeightsError(f"{path}: safetensors cannot read it ({error})") from None


def _safetensors_header(path: Path, handle: BinaryIO, size: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{key: (dtype, shape)}`` from the header of a safetensors file of ``size`` bytes open
    at its start, parsed here and checked against the file (safetensors' format: an 8-byte
    little-endian header length, the JSON header, then the tensors' bytes back to back)."""
    if size < 8:
        raise WeightsError(f"{path}: {size} bytes, too short to be a safetensors file")
    length = int.from_bytes(handle.read(8), "little")
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise WeightsError(f"{path}: not a safetensors file (it would have a {length:,}-byte header in "
                           f"{size:,} bytes); a pickle or another format renamed .safetensors is refused")
    try:
        header = json.loads(handle.read(length).decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        header = None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise WeightsError(f"{path}: its safetensors metadata must map names to strings")
    end_of_data = size - 8 - length
    tensors, spans = {}, []
    for key, info in header.items():
        if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}):
            raise WeightsError(f"{path}: tensor {key!r} has a malformed header entry {str(info)[:100]}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            raise WeightsError(f"{path}: tensor {key!r} has dtype {dtype!r}, which weights files do not use")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_count(n) for n in shape)):
            raise WeightsError(f"{path}: tensor {key!r} has an invalid shape {str(shape)[:100]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)
                and offsets[0] <= offsets[1] <= end_of_data):
            raise WeightsError(f"{path}: tensor {key!r} has data offsets {str(offsets)[:100]} outside the file's "
                               f"{end_of_data:,} bytes of tensor data")
        needed = math.prod(shape) * _DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != needed:
            raise WeightsError(f"{path}: tensor {key!r} ({dtype}, shape {shape}) needs {needed:,} bytes, "
                               f"its data offsets span {offsets[1] - offsets[0]:,}")
        tensors[key] = (dtype, tuple(shape))
        spans.append(offsets)
    position = 0  # safetensors writes the tensors back to back: no gaps, no overlaps, nothing after
    for begin, end in sorted(spans):
        if begin != position:
            raise WeightsError(f"{path}: tensor data overlaps or leaves gaps; not a file safetensors wrote")
        position = end
    if position != end_of_data:
        raise WeightsError(f"{path}: the tensors end at byte {position:,} of {end_of_data:,} bytes of data")
    return tensors


def _relative_path(relative: str, referrer: Path) -> Path:
    """``relative`` as a path, refusing one that leaves the folder (absolute or ``..``)."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts or not candidate.parts:
        raise WeightsError(f"{referrer}: file path {relative!r} must be relative and inside the weights folder")
    return candidate


def regular_file_in(folder: Path, relative: str, referrer: Path) -> Path:
    """``folder / relative`` if it is a regular file inside the folder: not a symbolic link
    (which could point anywhere, e.g. /etc/passwd), a device or a FIFO (reading which never ends)."""
    path = folder / _relative_path(relative, referrer)
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise WeightsError(f"{path} does not exist (listed in {referrer})") from None
    if stat.S_ISLNK(mode):
        raise WeightsError(f"{path} is a symbolic link; a weights folder may hold regular files only "
                           "(copy the file in instead)")
    if not stat.S_ISREG(mode):
        raise WeightsError(f"{path} is not a regular file; a weights folder may hold regular files only")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise WeightsError(f"{path} lies outside the weights folder {folder} (through a symbolic link); "
                           "a weights folder may hold regular files only")
    return path


@contextlib.contextmanager
def _open_regular(path: Path, limit: int, what: str) -> Iterator[BinaryIO]:
    """``path`` open for reading if it is a regular file of at most ``limit`` bytes; any
    OSError on the way becomes a WeightsError naming it."""
    # O_NOFOLLOW and O_NONBLOCK: a file swapped for a link or a FIFO since it was checked is refused, not waited on.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        with os.fdopen(os.open(path, flags), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise WeightsError(f"{path} is not a regular file; a weights folder may hold regular files only")
            if info.st_size > limit:
                raise WeightsError(f"{path}: {info.st_size:,} bytes, more than a {what} can be ({limit:,}); not read")
            yield handle
    except OSError as error:
        raise WeightsError(f"{path}: cannot read the {what} ({error.strerror or error})") from None


def _read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refusing more than ``limit`` bytes."""
    with _open_regular(path, limit, what) as handle:
        return handle.read(limit)  # a file grown since it was checked is cut short, and then fails its hash


def _json_of(path: Path, data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise WeightsError(f"{path}: not valid JSON ({str(error)[:200]}); expected a {what}") from None


def _write_index(folder: Path, files: Mapping[str, str]) -> Path:
    index = {"format": INDEX_FORMAT, "format_version": 1, "files": dict(sorted(files.items()))}
    return write_json(folder / INDEX_FILE, index, indent=1)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as plain numbers and lists, tuples as lists,
    paths as strings and NaN/inf as null (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return json_ready(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_json(path, json_ready(manifest), indent=2)


def _write_safetensors(path: Path, state_dict: Mapping[str, Any], dtype: Any, metadata: dict[str, str]) -> None:
    import torch
    from safetensors.torch import save_file

    if not state_dict:
        raise ValueError(f"refusing to write {path}: the state dict is empty")
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        # A private contiguous copy: safetensors refuses tensors sharing memory (tied weights).
        tensors[key] = value.contiguous().clone()
    atomic_write(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))
