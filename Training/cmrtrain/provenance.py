"""Which code produced a recorded result (kept light: benchmarks import it before timing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The commit of the working tree and whether the library has uncommitted changes (results depend on them)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "CMRFoundationLib"], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in changed if line.strip()]
    return f"commit {commit}" + (f" with uncommitted library changes in {', '.join(changed)}" if changed else "")
