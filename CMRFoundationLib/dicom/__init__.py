"""DICOM study reading (headers-only indexing, then pixel loading) and MR series writing."""

from .index import FrameRef, StackEntry, StudyIndex, index_study, summarize
from .load import StackLoadError, load_stack, read_study
from .write import write_mr_series

__all__ = [
    "FrameRef",
    "StackEntry",
    "StackLoadError",
    "StudyIndex",
    "index_study",
    "load_stack",
    "read_study",
    "summarize",
    "write_mr_series",
]
