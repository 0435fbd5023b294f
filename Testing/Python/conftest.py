"""Shared fixtures: one synthetic study per test session (generated, then read back), and
one analysis of it (on CPU, the series of each role named from its ground truth).

Tests that use the shared analysis are end-to-end: they are marked ``slow`` here, the
others that take seconds (training steps, whole-model inference, analyses in a
subprocess) where they are defined. ``pytest`` runs everything; ``pytest -m "not slow"``
is the quick loop.
"""

from pathlib import Path

import pytest

from CMRFoundationLib.synthetic.study import load_truth, make_sample_study

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
END_TO_END_FIXTURES = {"sample_analysis", "sample_outputs", "distractor_study"}


def pytest_collection_modifyitems(items):
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_study(tmp_path_factory) -> Path:
    """A small myocardial-infarction study (6 cine frames) with its ground truth."""
    folder = tmp_path_factory.mktemp("synthetic") / "study"
    make_sample_study(folder, seed=11, pathology="MINF", frames=6)
    return folder


@pytest.fixture(scope="session")
def distractor_study(tmp_path_factory) -> Path:
    """The sample study with the distractors no part may use (first-pass perfusion, phase-contrast
    flow magnitude and phase, series 12-14); its other series are those of sample_study, bit for bit."""
    folder = tmp_path_factory.mktemp("synthetic") / "distractors"
    make_sample_study(folder, seed=11, pathology="MINF", frames=6, distractors=True)
    return folder


@pytest.fixture(scope="session")
def sample_truth(sample_study) -> dict:
    return load_truth(sample_study)


@pytest.fixture(scope="session")
def sample_stacks(sample_study):
    """(stacks, problems) of the sample study as the reader sees it."""
    from CMRFoundationLib.dicom import read_study

    return read_study(sample_study / "DICOM")


@pytest.fixture(scope="session")
def sample_roles(sample_truth) -> dict[str, int]:
    """Role -> series number of the sample study, from its ground truth (as a user names them)."""

    def number(image_type, view=None, description=""):
        return next(
            s["number"]
            for s in sample_truth["series"]
            if s["image_type"] == image_type and view in (None, s["view"]) and description in s["description"]
        )

    return {
        "cine_sax": number("cine", "sax"),
        "cine_4ch": number("cine", "4ch"),
        "lge_sax": number("lge"),
        "t1_map": number("t1", description="native"),
        "t2_map": number("t2"),
    }


@pytest.fixture(scope="session")
def sample_analysis(sample_study, sample_roles):
    """(StudyAnalysis, its progress calls (phase, fraction, message)) of the sample study on CPU,
    the series named by role so that every part runs whatever the small carried classifier says.
    Shared read-only: a test that changes it copies it first (dataclasses.replace)."""
    from CMRFoundationLib.analysis import AnalysisOptions, analyze_study

    calls = []
    analysis = analyze_study(
        sample_study / "DICOM",
        AnalysisOptions(device="cpu", series=dict(sample_roles)),
        progress=lambda phase, fraction, message: calls.append((phase, fraction, message)),
    )
    return analysis, calls


@pytest.fixture(scope="session")
def sample_outputs(sample_analysis, tmp_path_factory) -> Path:
    """The output folder of the sample analysis (write_outputs), for the tests that only read it
    or load it into a scene; tests of writing write their own."""
    from CMRFoundationLib.analysis import write_outputs

    out = tmp_path_factory.mktemp("sample-analysis") / "out"
    write_outputs(sample_analysis[0], out)
    return out
