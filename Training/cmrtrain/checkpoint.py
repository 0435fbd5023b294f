"""Training state that survives the end of a session: compact checkpoints and a clean stop.

A CPU run of the CPU-sized encoder takes several sessions, so its checkpoint is committed
to the repository at the end of each one (``Training/checkpoints``) and the next session
resumes from it. To keep that file small, floating tensors are stored in 16 bits: model
weights in float16 (their values sit well inside its range) and optimizer moments in
bfloat16 (Adam's second moments go below float16's smallest normal number, 6e-5, and
would flush to zero). Loading casts them back to the dtype of the live model and
optimizer, so a resumed run continues from weights rounded to float16: a relative change
of at most 5e-4, far below one optimisation step's.

The file is a plain ``torch.save`` of tensors, numbers, strings, lists and dicts, read back
with ``weights_only=True`` (nothing is unpickled but those).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from CMRFoundationLib.files import atomic_write

# Top-level keys of a checkpoint whose tensors are optimizer state (stored as bfloat16).
OPTIMIZER_KEYS = ("optimizer",)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", dtype) if value.is_floating_point() else value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def save_compact(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically (a temp file renamed into place), floats in 16 bits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compact = {
        key: _cast(value, torch.bfloat16 if key in OPTIMIZER_KEYS else torch.float16)
        for key, value in state.items()
    }
    atomic_write(path, lambda temp: torch.save(compact, temp))  # a killed write never leaves half a checkpoint
    return path


def load_compact(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by ``save_compact`` (or any tensors-only ``torch.save``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def float32_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict with float tensors back in float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_resume_settings(saved: Mapping[str, Any], current: Mapping[str, Any], run_control: set[str],
                          path: str | os.PathLike) -> None:
    """Resuming must not silently change the training: every setting but the run-control
    ones (``run_control``: workers, logging, output places) must match the checkpoint's."""
    differing = [key for key in current if key not in run_control and saved.get(key) != current[key]]
    if differing:
        details = "; ".join(f"{key}: {saved.get(key)!r} in the checkpoint, {current[key]!r} now" for key in differing)
        raise SystemExit(f"{path}: cannot resume with different settings ({details})")


class StopRequest:
    """Turns SIGTERM / SIGINT, or a wall-clock budget running out, into a flag the training
    loop checks between steps, so it can write its checkpoint and end cleanly.

    ``max_minutes`` bounds this process's run (None: no bound); a second signal exits at once.
    """

    def __init__(self, max_minutes: float | None = None) -> None:
        self.deadline = None if not max_minutes else time.monotonic() + 60.0 * max_minutes
        self.signalled: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signalled:
            raise KeyboardInterrupt
        self.signalled = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return bool(self.signalled) or (self.deadline is not None and time.monotonic() >= self.deadline)

    @property
    def reason(self) -> str:
        if self.signalled:
            return f"stopped by {self.signalled}"
        return "the time budget (--max-minutes) ran out"
