"""The image stacks behind the series of an analysis.json, found again in the study.

analysis.json names series by key ("S006", "S001-2" for a series' second stack); the
key alone cannot be trusted across readers, so a stack is matched on what the record
says about it: Series Instance UID, shape and slice positions. A DICOM folder (or file
list) is indexed (headers only) and only the matching stacks are loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..dicom import index_study, load_stack
from ..dicom.index import is_file_list
from ..stack import ImageStack
from ..volume_io import read_any


class SeriesNotFound(LookupError):
    """A series of the analysis is not in the given study."""


def stacks_for(records: list[dict], study: str | os.PathLike | Mapping[str, ImageStack]) -> dict[str, ImageStack]:
    """key -> stack for each series record (analysis.json "series" entries)."""
    if isinstance(study, Mapping):
        missing = [r["key"] for r in records if r["key"] not in study]
        if missing:
            raise SeriesNotFound(f"no stack given for series {', '.join(missing)}")
        return {r["key"]: study[r["key"]] for r in records}
    folder = Path(study)
    if folder.is_dir() or is_file_list(folder):
        entries = index_study(folder).stacks
        return {r["key"]: load_stack(_match(r, entries, folder)) for r in records}
    stacks, _ = read_any(folder)
    return {r["key"]: _match(r, stacks, folder) for r in records}


def _match(record: dict, candidates, where):
    """The candidate (StackEntry or ImageStack) that is the record's stack."""
    for candidate in candidates:
        shape = tuple(candidate.shape if hasattr(candidate, "shape") else candidate.pixels.shape)
        if candidate.info.series_uid != record["series_uid"] or shape != tuple(record["shape"]):
            continue
        positions = record.get("slice_positions_mm")
        if positions is None or candidate.slice_positions is None or np.allclose(candidate.slice_positions, positions, atol=0.01):
            return candidate
    raise SeriesNotFound(f"series {record['key']} ({record.get('description')}) of the analysis is not in {where}")
