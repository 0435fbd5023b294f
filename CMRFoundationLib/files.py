"""Writing files so that a reader never sees half of one, and JSON in and out with errors that
name the file. Standard library only: the training code uses it on machines without the
library's other dependencies."""

from __future__ import annotations

import json
import os
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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
