"""Bad input is reported, never fatal: every reader returns a list of Problems.

Severities used across the project:

* ``error``: an input that should have been usable could not be used (unreadable or
  corrupt file, image that cannot be placed in space).
* ``warning``: an image was dropped or kept with a caveat (duplicate, odd one out).
* ``info``: a file skipped by design (a DICOMDIR, a structured report, ...).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Problem:
    path: str
    reason: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
