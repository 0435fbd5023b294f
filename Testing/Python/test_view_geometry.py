"""The study's plane geometry corrects cine views the pixels get wrong.

Real long-axis cines from unseen scanners are what the view model misreads (it called
every one "sax"); a long-axis plane stands near 90 degrees to the short-axis stack, so
the geometry rules "sax" out. Checked on the sample study's real DICOM geometry with the
view probabilities set as such a model would give them.
"""

import numpy as np
import pytest

from CMRFoundationLib.analysis.classify import StackClassification, apply_plane_geometry
from CMRFoundationLib.tasks import CINE_VIEWS


def cine_class(**probabilities) -> StackClassification:
    p = {v: probabilities.get(v, 0.01) for v in CINE_VIEWS}
    total = sum(p.values())
    p = {v: x / total for v, x in p.items()}
    return StackClassification("cine", "pixels", view=max(p, key=p.get), view_source="pixels", view_probabilities=p)


@pytest.fixture(scope="module")
def by_number(sample_stacks):
    stacks, _ = sample_stacks
    return {s.info.series_number: s for s in stacks}


def test_a_long_axis_cine_called_sax_becomes_its_best_long_axis_view(by_number):
    sax, four = by_number[6], by_number[4]
    wrong = cine_class(sax=0.8, **{"4ch": 0.12, "2ch": 0.05})
    reference = cine_class(sax=0.9)
    assert apply_plane_geometry([("S006", sax, reference), ("S004", four, wrong)]) == "S006"
    assert wrong.view == "4ch" and wrong.view_source == "pixels + plane geometry"
    assert wrong.view_probabilities["sax"] == 0 and sum(wrong.view_probabilities.values()) == pytest.approx(1)
    assert "short-axis stack S006" in wrong.notes[0]
    assert reference.view == "sax" and not reference.notes


def test_a_plane_parallel_to_the_short_axis_is_not_a_long_axis_view(by_number):
    sax = by_number[6]
    one_slice = type(sax)(sax.pixels[:1], sax.ijk_to_lps, sax.info)  # a single short-axis slice
    wrong = cine_class(**{"2ch": 0.6, "sax": 0.3})
    apply_plane_geometry([("S006", sax, cine_class(sax=0.9)), ("S099", one_slice, wrong)])
    assert wrong.view == "sax"


def test_right_answers_and_studies_without_a_short_axis_stack_are_left_alone(by_number):
    sax, four, two = by_number[6], by_number[4], by_number[3]
    right = cine_class(**{"4ch": 0.7, "sax": 0.2})
    apply_plane_geometry([("S006", sax, cine_class(sax=0.9)), ("S004", four, right)])
    assert right.view == "4ch" and right.view_source == "pixels" and not right.notes
    lonely = cine_class(sax=0.8)
    assert apply_plane_geometry([("S004", four, lonely), ("S003", two, cine_class(sax=0.7))]) is None
    assert lonely.view == "sax" and lonely.view_probabilities["sax"] == pytest.approx(0.8 / (0.8 + 0.05), rel=0.1)
    assert np.isfinite(list(lonely.view_probabilities.values())).all()
