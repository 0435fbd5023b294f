"""Shared fixtures: one synthetic study per test session (generated, then read back)."""

from pathlib import Path

import pytest

from CMRFoundationLib.synthetic.study import load_truth, make_sample_study

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_study(tmp_path_factory) -> Path:
    """A small myocardial-infarction study (6 cine frames) with its ground truth."""
    folder = tmp_path_factory.mktemp("synthetic") / "study"
    make_sample_study(folder, seed=11, pathology="MINF", frames=6)
    return folder


@pytest.fixture(scope="session")
def sample_truth(sample_study) -> dict:
    return load_truth(sample_study)


@pytest.fixture(scope="session")
def sample_stacks(sample_study):
    """(stacks, problems) of the sample study as the reader sees it."""
    from CMRFoundationLib.dicom import read_study

    return read_study(sample_study / "DICOM")
