"""Model weights on disk: safetensors files plus one JSON manifest per task.

A weights folder holds ``<task>.json`` for each task it can run, and the safetensors files
those manifests list. A manifest says what the weights are (task, architecture,
pre-processing, labels), where they came from (training, evaluation) and which files make
them up, each with its SHA-256. Several files can be stacked: a shared encoder file
(role "encoder") followed by a per-task file (role "task"); loading merges their state
dicts in order, later files overriding earlier ones. A task saved in one file has the
single role "model". Evaluation results can be added to a manifest later
(``record_evaluation``) without touching the weight files.

Nothing is ever unpickled: tensors are read with safetensors only, and only after the
file's hash matches the manifest. torch and safetensors are imported when weights are
saved or loaded, so listing the available tasks works without them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import __version__
from .files import atomic_write, read_json, write_json
from .preprocess import PreprocessConfig
from .tasks import get_task

FORMAT = "cmrfm-weights"
FORMAT_VERSION = 1
ENV_VAR = "CMRFM_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Weights"

_HASH_CHUNK = 1 << 20  # bytes read at a time when hashing


class WeightsError(ValueError):
    """Weights that cannot be used: missing, corrupt, replaced or of an unknown format."""


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
    """Names of the tasks that have a manifest in the weights folder, sorted."""
    folder = resolve_weights_dir(folder)
    tasks = []
    for path in sorted(folder.glob("*.json")):
        try:
            manifest = read_json(path, "weights manifest")
        except ValueError:
            continue  # not a manifest; read_manifest explains if it is asked for
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            tasks.append(path.stem)
    return tasks


def read_manifest(folder: str | os.PathLike | None, task_name: str) -> dict[str, Any]:
    """The checked manifest of ``task_name`` in the weights folder."""
    folder = resolve_weights_dir(folder)
    path = folder / f"{task_name}.json"
    if not path.is_file():
        tasks = available_tasks(folder)
        raise WeightsError(
            f"no weights for task {task_name!r}: {path} does not exist; "
            f"the folder has weights for: {', '.join(tasks) if tasks else 'no tasks'}"
        )
    manifest = read_json(path, "weights manifest", WeightsError)
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
        _inside_folder(folder, entry["path"], path)
    return manifest


def load_task_state(folder: str | os.PathLike | None, task_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, manifest)`` of a task; floating tensors are float32.

    Each file's SHA-256 is checked against the manifest before it is read. The files'
    state dicts are merged in manifest order, later files overriding earlier keys.
    """
    import torch
    from safetensors.torch import load_file

    folder = resolve_weights_dir(folder)
    manifest = read_manifest(folder, task_name)
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for entry in manifest["files"]:
        path = _inside_folder(folder, entry["path"], folder / f"{task_name}.json")
        if not path.is_file():
            raise WeightsError(f"weights file {path} listed in the manifest of task {task_name!r} is missing")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise WeightsError(
                f"weights file {path} does not match the manifest of task {task_name!r} "
                f"(SHA-256 expected {entry['sha256']}, found {actual}); "
                f"the file may be corrupt or replaced, so it was not loaded"
            )
        for key, tensor in load_file(str(path), device="cpu").items():
            if key in state and state[key].shape != tensor.shape:
                raise WeightsError(
                    f"weights of task {task_name!r}: {key!r} has shape {tuple(state[key].shape)} in "
                    f"{origin[key]} but {tuple(tensor.shape)} in {entry['path']}; the files do not belong together"
                )
            state[key] = tensor.float() if tensor.is_floating_point() else tensor
            origin[key] = entry["path"]
    return state, manifest


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
        path = _inside_folder(folder, str(relative), manifest_path)
        if not path.is_file():
            raise WeightsError(f"shared weights file {path} for task {task_name!r} does not exist")
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
    return path


# -- helpers ----------------------------------------------------------------------------


def _inside_folder(folder: Path, relative: str, manifest_path: Path) -> Path:
    """``folder / relative``, refusing paths that leave the folder (absolute or ``..``)."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts or not candidate.parts:
        raise WeightsError(f"{manifest_path}: file path {relative!r} must be relative and inside the weights folder")
    return folder / candidate


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
