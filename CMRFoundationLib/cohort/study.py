"""One study of a cohort, as a worker analyses it, and how its output folder becomes final.

    OUT/<study>/analysis.json, measurements.csv, report.html, labels/, dicom/   as `cmrfm analyze`
    OUT/<study>/batch-complete.json    written last: the study's table row, the weights SHA-256
                                       and software version it was analysed with

A study is written into ``OUT/.partial-<study>-<random>``, flushed to disk (fsync), given
its marker and only then renamed to ``OUT/<study>``: a run killed at any moment, even by
a power cut, leaves a study either complete under its name or not there at all (an earlier
result stays until the new one replaces it). Leftover partial folders are removed by the
next run.

A worker process keeps the models it loaded for the next study (``_MODELS``), keyed by
everything that decides them, so a run loads each model once per worker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..analysis import AnalysisOptions, Cancelled, analyze_study, estimated_output_bytes, write_outputs
from ..files import OutputLocationError, check_output_location, output_error_message, read_json, write_json
from ..weights import resolve_weights_dir
from .studies import Study
from .table import DONE, analysis_values

MARKER = "batch-complete.json"
PARTIAL_PREFIX, OLD_PREFIX = ".partial-", ".old-"

_MODELS: dict[tuple, dict] = {}  # this process' loaded models, per (weights, device, batch size)
_MODELS_LOCK = threading.Lock()


class StudyTimeout(Exception):
    """The analysis did not finish within the time allowed to one study."""


@dataclass(frozen=True)
class Settings:
    """How every study of a run is analysed; sent to each worker with each study."""

    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    timeout_s: float | None = None  # per attempt; checked between the analysis' steps
    torch_threads: int | None = None  # None: leave the worker's setting
    outputs: str = "analysis"  # what a finished study folder holds ("analysis+slicer": the Slicer batch)


def weights_sha256(weights_dir=None) -> str:
    """SHA-256 over the weights folder's manifests (each names the SHA-256 of its weight files,
    checked when they are loaded): it changes whenever any model would."""
    folder = resolve_weights_dir(weights_dir)
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.json")):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def read_marker(folder: Path) -> dict | None:
    """The marker of a finished study folder, or None (not finished, or unreadable)."""
    try:
        marker = read_json(folder / MARKER, "batch marker")
    except ValueError:
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("row"), dict) else None


def analyze_one(study: Study, out: str, settings: Settings, attempt: int = 1,
                extra: Callable[[object, Path], None] | None = None) -> dict:
    """Analyse ``study`` into ``OUT/<study.id>``; its table row. Raises on failure, leaving
    nothing behind: OutputLocationError when the output location, not the study, failed.
    ``attempt``: which try this is, for the row. ``extra(analysis, folder)`` writes more files
    into the study's folder before it is final (the Slicer batch: scenes)."""
    start = time.monotonic()
    options = _options_of_this_worker(settings)
    weights = weights_sha256(options.weights_dir)
    with _MODELS_LOCK:
        models = _MODELS.setdefault((weights, options.device, options.batch_size), {})
    step = {"at": "start"}
    deadline = None if settings.timeout_s is None else start + settings.timeout_s

    def too_long() -> bool:
        return deadline is not None and time.monotonic() > deadline

    # Before the work: a full disk would fail every study, which is not theirs to fail (OutputLocationError).
    check_output_location(out, estimated_output_bytes(study.input(), scene=settings.outputs != "analysis"))
    try:
        analysis = analyze_study(study.input(), options, progress=lambda phase, f, message: step.update(at=message),
                                 cancel=too_long, models=models)
    except Cancelled:
        raise StudyTimeout(f"no result within {settings.timeout_s:g} s (stopped at: {step['at']})") from None

    final = Path(out) / study.id
    partial = final.with_name(f"{PARTIAL_PREFIX}{study.id}-{uuid.uuid4().hex[:8]}")
    try:
        write_outputs(analysis, partial)
        if extra is not None:
            extra(analysis, partial)
        row = {"study": study.id, "status": DONE, "failure_reason": "", "attempts": attempt, "seconds": round(time.monotonic() - start, 2),
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "weights_sha256": weights,
               "software_version": __version__,
               **analysis_values(read_json(partial / "analysis.json", "analysis"))}
        _sync(partial)  # every file on disk before the marker says the study is complete
        write_json(partial / MARKER, {"study": study.id, "source": study.where, "weights_sha256": weights,
                                      "software_version": __version__, "outputs": settings.outputs, "row": row})
        _sync(partial)
        publish(partial, final)
    except BaseException as error:
        shutil.rmtree(partial, ignore_errors=True)
        # A full or unwritable output disk (VTK and ITK only say that a write failed): not the study's fault.
        location = output_error_message(out, error) if isinstance(error, Exception) and not isinstance(
            error, OutputLocationError) else None
        if location is not None:
            raise OutputLocationError(location) from None
        raise
    return row


def publish(partial: Path, final: Path) -> None:
    """Rename the complete ``partial`` folder to ``final``, replacing an earlier result there."""
    old = None
    if final.exists():
        old = final.with_name(f"{OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)  # a folder cannot be renamed over a non-empty one
    os.replace(partial, final)
    _sync_folder(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Partial and replaced study folders of an interrupted run."""
    for leftover in [*out.glob(PARTIAL_PREFIX + "*"), *out.glob(OLD_PREFIX + "*")]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _options_of_this_worker(settings: Settings) -> AnalysisOptions:
    """The options with this worker's GPU: with several GPUs, workers spread over them."""
    options = settings.options
    if settings.torch_threads or options.device == "auto":
        import torch

        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        if options.device == "auto" and torch.cuda.device_count() > 1:
            number = _worker_number()
            options = replace(options, device=f"cuda:{number % torch.cuda.device_count()}")
    return options


def _worker_number() -> int:
    try:
        from distributed import get_worker

        name = get_worker().name  # 0, 1, ... in a LocalCluster; any name elsewhere
    except (ImportError, ValueError):
        return 0
    return name if isinstance(name, int) else zlib.crc32(str(name).encode())


def _sync(folder: Path) -> None:
    """fsync every file and folder below ``folder`` (a power cut must not leave empty files)."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _sync_folder(Path(root))


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are journalled anyway
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
