"""One analysis of the conftest sample study, shared by the scene-layer tests of every module.

pytest computes a session fixture once per module that defines it, so the analysis (about
15 s on CPU) is cached here instead and each module's fixture returns the cached one.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from CMRFoundationLib.analysis import AnalysisOptions, analyze_study, write_outputs


@cache
def analysed(study: Path, out: Path, roles: tuple[tuple[str, int], ...]):
    """(StudyAnalysis, output folder) of ``study`` analysed on CPU with the series named by role."""
    analysis = analyze_study(study / "DICOM", AnalysisOptions(device="cpu", series=dict(roles)))
    write_outputs(analysis, out)
    return analysis, out


def truth_roles(truth: dict) -> tuple[tuple[str, int], ...]:
    """Role -> series number of the sample study from its ground truth (as test_analysis names them)."""
    def number(image_type, view=None, description=""):
        return next(s["number"] for s in truth["series"] if s["image_type"] == image_type
                    and view in (None, s["view"]) and description in s["description"])

    return (("cine_sax", number("cine", "sax")), ("cine_4ch", number("cine", "4ch")), ("lge_sax", number("lge")),
            ("t1_map", number("t1", description="native")), ("t2_map", number("t2")))
