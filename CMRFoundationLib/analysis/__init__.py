"""Whole-study analysis: from a CMR study folder to measurements, label maps, DICOM SEG and SR.

    analysis = analyze_study("study/DICOM", AnalysisOptions(lge_n_sd=5))
    write_outputs(analysis, "out")

Modules: options (AnalysisOptions), classify (image type and view of every stack),
select (which series each part reads), parts (the analysis steps), pipeline
(analyze_study), results (StudyAnalysis and its JSON), outputs (the files).
"""

from .options import AnalysisOptions
from .outputs import OutputFolderError, check_output_folder, estimated_output_bytes, is_analysis_folder, write_outputs
from .pipeline import Cancelled, NothingToAnalyze, analyze_study
from .results import FORMAT, FORMAT_VERSION, StudyAnalysis
from .select import ROLE_NAMES

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ROLE_NAMES",
    "AnalysisOptions",
    "Cancelled",
    "NothingToAnalyze",
    "OutputFolderError",
    "StudyAnalysis",
    "analyze_study",
    "check_output_folder",
    "estimated_output_bytes",
    "is_analysis_folder",
    "write_outputs",
]
