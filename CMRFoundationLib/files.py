"""Writing files so that a reader never sees half of one, JSON in and out with errors that
name the file, and output locations checked before the work (writable, with room).
Standard library only: the training code uses it on machines without the library's other
dependencies."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """``write(temp)`` a temporary file in the same folder, then rename it over ``path``, so a
    reader never sees a half-written file (a failed write leaves no temporary behind)."""
    path = Path(path)
    # Not tempfile.mkstemp: its files are private (0600) and would stay so after the rename.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(temp)
        # Some writers (safetensors) create private files; give the usual rw-r--r-- (minus umask).
        os.chmod(temp, 0o666 & ~_current_umask())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any, indent: int = 1) -> Path:
    """``data`` as strict JSON (no NaN), written atomically; a ValueError names the file when
    ``data`` cannot be written as JSON (nothing is written then)."""
    path = Path(path)
    try:
        text = json.dumps(data, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: cannot be written as JSON ({error})") from None
    atomic_write(path, lambda temp: temp.write_text(text + "\n", encoding="utf-8"))
    return path


def read_json(path: str | os.PathLike, what: str, error: type[Exception] = ValueError) -> Any:
    """The JSON in ``path``; an ``error`` naming the file (and ``what`` it should hold) when it
    cannot be read or is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except ValueError as exc:  # also a file that is not UTF-8
        raise error(f"{path}: not valid JSON ({exc})") from None


# errno values of a full disk (EDQUOT: over quota, where the platform has it).
DISK_FULL = {errno.ENOSPC, *([errno.EDQUOT] if hasattr(errno, "EDQUOT") else [])}
MIN_FREE_BYTES = 1 << 20  # a disk with less than this free counts as full


class OutputLocationError(Exception):
    """An output folder that cannot take the results: it cannot be written, or its disk is full."""


def check_output_location(folder: str | os.PathLike, need_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise OutputLocationError unless a file can be created where ``folder`` is (or will be
    created) and its disk has ``need_bytes`` free. A real file is created and removed: the
    permission bits do not tell (root, read-only mounts, access control lists, quotas)."""
    folder = Path(folder)
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        raise OutputLocationError(f"{folder}: cannot be created, {existing} is not a folder")
    probe = existing / f".cmrfm-write-test-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        with open(probe, "xb") as handle:
            handle.write(b"0")
            handle.flush()
            os.fsync(handle.fileno())  # some file systems report a full disk only when data reaches it
    except OSError as error:
        if error.errno in DISK_FULL:
            raise OutputLocationError(_disk_full(folder, existing)) from None
        raise OutputLocationError(f"{folder}: cannot write there ({error.strerror or error}); "
                                  "choose an output folder you can write to") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise OutputLocationError(_disk_full(folder, existing))
    if free < need_bytes:
        raise OutputLocationError(f"{folder}: only {_megabytes(free)} free on its disk, the results need about "
                                  f"{_megabytes(need_bytes)}; free some space or choose another output folder")


def output_error_message(folder: str | os.PathLike, error: BaseException) -> str | None:
    """One line for a write into ``folder`` that failed with ``error`` because of the output
    location (its disk is full, or it can no longer be written); None when the location is fine,
    so the error is something else. Writers outside Python (VTK, ITK) say no more than that
    they failed: the location is probed again to tell."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return _disk_full(folder, _existing_ancestor(Path(folder)))
    try:
        check_output_location(folder)
    except OutputLocationError as problem:
        return str(problem)
    except OSError:  # the location cannot even be examined: say nothing rather than guess
        pass
    return None


def folder_bytes(folder: str | os.PathLike) -> int:
    """The total size of the files under ``folder`` (a file: its size); 0 when unreadable."""
    path = Path(folder)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _disk_full(folder: str | os.PathLike, existing: Path) -> str:
    try:
        free = f" ({_megabytes(shutil.disk_usage(existing).free)} free)"
    except OSError:
        free = ""
    return f"{folder}: no space left on its disk{free}; free some space or choose another output folder"


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where a new folder would be created)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.1f} kB"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
