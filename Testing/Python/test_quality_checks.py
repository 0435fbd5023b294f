"""Structural checks of a short-axis segmentation (measurements/quality.py): each catches
the impossible anatomy it names, and real expert labels pass."""

import numpy as np
import pytest

from CMRFoundationLib.measurements.aha import guess_basal_end
from CMRFoundationLib.measurements.quality import short_axis_problems
from conftest import SHARED_DATA

LV, MYO, RV = 1, 2, 3


def heart(slices: int = 8, size: int = 96) -> np.ndarray:
    """A short-axis stack from base (slice 0) to apex: LV blood in a closed myocardial ring,
    the RV against the septum, all narrowing towards an apex that the stack covers."""
    rows, cols = np.mgrid[:size, :size]
    labels = np.zeros((slices, size, size), np.uint8)
    for k in range(slices):
        scale = 1.0 - 0.11 * k
        r_blood, r_epi = 16 * scale, 24 * scale
        d = np.hypot(rows - 48, cols - 52)
        labels[k][d <= r_epi] = MYO
        labels[k][d <= r_blood] = LV
        if k < slices - 2:  # the RV stops short of the apex
            d_rv = np.hypot(rows - 48, cols - (52 - r_epi - 6 * scale))
            labels[k][(d_rv <= 10 * scale) & (labels[k] == 0)] = RV
    return labels


def problems(labels, **kwargs):
    """The problems' texts, each ending in "!" when it invalidates the volumes."""
    found = short_axis_problems(labels, 1.5, lv_blood=LV, lv_myocardium=MYO, rv_blood=RV,
                                basal_end=kwargs.pop("basal_end", "first"), **kwargs)
    return [p.text + ("!" if p.invalidates_volumes else "") for p in found]


def test_a_normal_heart_passes():
    assert problems(heart()) == []


def test_too_few_slices_through_the_lv():
    found = problems(heart()[:2])
    assert len(found) == 1 and "found on 2 short-axis slice(s)" in found[0] and found[0].endswith("!")


def test_an_open_myocardium_is_found_on_its_slice():
    labels = heart()
    ring = labels[3]
    ring[(ring == MYO) & (np.arange(96)[None, :] > 52)] = 0  # half the ring gone
    found = problems(labels)
    assert len(found) == 1 and "does not close" in found[0] and "slice(s) 4 (" in found[0]  # counted from 1
    assert not found[0].endswith("!")  # one slice of six: worth a look, the volumes stand
    (problem,) = short_axis_problems(labels, 1.5, lv_blood=LV, lv_myocardium=MYO, rv_blood=RV, basal_end="first")
    assert problem.slices == (3,) and problem.finding == "myocardium not closed around the LV blood pool"
    for k in (1, 2, 4):
        labels[k][(labels[k] == MYO) & (np.arange(96)[None, :] > 52)] = 0
    (found,) = problems(labels)
    assert "slice(s) 2, 3, 4, 5 (" in found and found.endswith("!")  # most of the ventricle: the volumes fall


def test_the_end_slices_may_open():
    """The outflow tract opens the ring at the base, partial volume at the apical cap."""
    for end in (0, 7):
        labels = heart()
        labels[end][(labels[end] == MYO) & (np.arange(96)[None, :] > 52)] = 0
        assert problems(labels) == [], end


def test_an_rv_away_from_the_septum():
    labels = heart()
    labels[2][labels[2] == RV] = 0
    labels[2][5:15, 80:90] = RV  # far corner: 30+ mm from the myocardium
    found = problems(labels)
    assert len(found) == 1 and "RV blood pool lies more than 10 mm" in found[0] and "slice(s) 3:" in found[0]


def test_a_stack_that_stops_before_the_apex():
    found = problems(heart()[:3])  # the three basal slices: the LV still wide on the last one
    assert len(found) == 1 and "ends before the apex" in found[0] and found[0].endswith("!")


def test_expert_acdc_labels_pass():
    """ACDC expert labels (Bernard et al. 2018; labels 1 RV, 2 myocardium, 3 LV): the checks
    must not fire on real anatomy (1 of 174 ED/ES volumes flags a stack ending before the apex)."""
    files = sorted((SHARED_DATA / "acdc").glob("patient*_E?.npz"))
    if not files:
        pytest.skip("ACDC data not present (../shared/data/acdc)")
    flagged = []
    for f in files:
        labels = np.load(f)["label"]
        base = guess_basal_end(labels, lv_blood=3, lv_myocardium=2, rv_blood=1)
        if short_axis_problems(labels, 1.5, lv_blood=3, lv_myocardium=2, rv_blood=1, basal_end=base):
            flagged.append(f.name)
    assert len(flagged) <= 0.02 * len(files), flagged
