"""DICOM study reading (headers-only indexing, then pixel loading), MR series writing, and
DICOM SEG / SR results (label maps and measurements) filed under the source study."""

from .index import (
    FILE_LIST_SUFFIX,
    FrameRef,
    StackEntry,
    StudyIndex,
    index_files,
    index_study,
    summarize,
    write_file_list,
)
from .load import StackLoadError, load_stack, read_study
from .seg import read_dicom_seg, write_dicom_seg, write_dicom_seg_cine
from .sr import Measurement, read_measurement_sr, write_measurement_sr
from .write import write_mr_series

__all__ = [
    "FILE_LIST_SUFFIX",
    "FrameRef",
    "Measurement",
    "StackEntry",
    "StackLoadError",
    "StudyIndex",
    "index_files",
    "index_study",
    "load_stack",
    "read_dicom_seg",
    "read_measurement_sr",
    "read_study",
    "summarize",
    "write_dicom_seg",
    "write_dicom_seg_cine",
    "write_file_list",
    "write_measurement_sr",
    "write_mr_series",
]
