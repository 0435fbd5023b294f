"""Helpers of Training/evaluate_analysis.py (the whole-study evaluation against the truth)."""

import numpy as np
import pytest

import evaluate_analysis as ea


def test_bland_altman_bias_sd_limits_and_mae():
    out = ea.bland_altman([12.0, 8.0, 10.0, np.nan], [10.0, 10.0, 10.0, 10.0])
    assert out["n"] == 3
    assert out["bias"] == pytest.approx(0.0)
    assert out["sd"] == pytest.approx(2.0)  # differences +2, -2, 0 (ddof=1)
    assert out["loa_low"] == pytest.approx(-3.92) and out["loa_high"] == pytest.approx(3.92)
    assert out["mae"] == pytest.approx(4 / 3)
    assert ea.bland_altman([np.nan], [1.0])["n"] == 0


def test_percent_error_and_difference_keep_missing_values_missing():
    assert ea.percent_error(105.0, 100.0) == pytest.approx(5.0)
    assert ea.percent_error(None, 100.0) is None and ea.percent_error(1.0, 0.0) is None
    assert ea.difference(60.0, 63.5) == pytest.approx(-3.5) and ea.difference(None, 1.0) is None


def test_points_go_to_pixels_and_back_through_a_sheared_oblique_grid():
    m = np.eye(4)
    m[:3, :3] = [[1.4, 0.1, 0.5], [0.0, 1.3, 2.0], [0.2, -0.1, 9.0]]
    m[:3, 3] = [-100, 20, 5]
    rc = np.array([[[10.0, 20.0], [np.nan, np.nan]], [[30.5, 40.25], [5.0, 6.0]]])
    lps = ea.rc_to_lps(rc, m)
    assert np.isnan(lps[0, 1]).all()
    assert np.allclose(ea.lps_to_rc(lps, m)[np.isfinite(rc)].reshape(-1), rc[np.isfinite(rc)])
    # slice 1 lies one k step further along the third column
    assert np.allclose(lps[1, 1], m[:3, :3] @ [6.0, 5.0, 1.0] + m[:3, 3])


def test_point_errors_count_missed_and_extra_points():
    truth = np.array([[[0, 0, 0], [10, 0, 0]], [[0, 0, 0], [np.nan] * 3], [[np.nan] * 3, [np.nan] * 3]], float)
    predicted = np.array([[[3, 4, 0], [10, 0, 0]], [[np.nan] * 3, [np.nan] * 3], [[1, 1, 1], [np.nan] * 3]], float)
    out = ea.point_errors(predicted, truth)
    assert out["distances_mm"] == [5.0, 0.0]
    assert (out["missed"], out["extra"], out["max_mm"]) == (1, 1, 5.0)


def test_segment_agreement_and_levels():
    truth = np.array([[[1, 2, 0], [3, 3, 0]]])
    predicted = np.array([[[1, 3, 5], [3, 0, 0]]])
    out = ea.segment_agreement(predicted, truth)
    assert out["pixels"] == 3 and out["agreement"] == pytest.approx(2 / 3)
    assert ea.segment_agreement(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))["agreement"] is None
    assert ea.levels_mismatch(["basal", None, "mid", "apical"], ["basal", "mid", "apical", None]) == [2]


def test_tissue_truth_and_segment_means():
    labels = np.array([[[2, 2, 8], [9, 1, 0]]])
    values = ea.tissue_value_image(labels, {"myocardium": 1000.0, "infarct": 1300.0, "mvo": 1100.0, "blood": 1500.0})
    assert np.isnan(values[0, 1, 1:]).all()
    segments = np.array([[[1, 1, 2], [2, 0, 0]]])
    assert ea.segment_means(values, segments) == {1: 1000.0, 2: 1200.0}


def test_slab_fraction_weights_slices_by_their_slab():
    within = np.ones((2, 1, 2), bool)
    mask = np.array([[[True, True]], [[False, False]]])
    assert ea.slab_fraction(mask, within, np.array([10.0, 30.0])) == pytest.approx(25.0)
    assert ea.slab_fraction(mask, np.zeros_like(within), np.array([1.0, 1.0])) is None
