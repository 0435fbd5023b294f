"""Valve planes and apex from the 4-chamber cine, and short-axis slabs ended at them."""

import numpy as np
import pytest

from CMRFoundationLib.measurements import (
    cycle_fractions,
    label_volumes_ml,
    long_axis_bounds,
    matching_frames,
    ventricular_function,
)
from CMRFoundationLib.measurements.volumes import clipped_slab_mm, slice_depths_mm
from CMRFoundationLib.synthetic.study import load_label_map

LV, MYO, LA, RA = 1, 2, 3, 4


def four_chamber_plane(pixel_mm=1.5):
    """A 4-chamber-like plane whose rows run along LPS z (the short-axis normal) upwards.

    Row r sits at z = 60 - r * pixel_mm. LV blood below z = 0 down to z = -60 (apex),
    a 6 mm myocardial cap below it, LA from z = 0 up on the left, RA from z = 0 up on the right.
    """
    rows, cols = 100, 80
    m = np.eye(4)
    m[:3, 0] = [pixel_mm, 0, 0]  # columns along x
    m[:3, 1] = [0, 0, -pixel_mm]  # rows go down in z
    m[:3, 2] = [0, 1, 0]
    m[:3, 3] = [0, 0, 60]
    z = 60 - np.arange(rows)[:, None] * pixel_mm + np.zeros((1, cols))
    x = np.arange(cols)[None, :] * pixel_mm + np.zeros((rows, 1))
    labels = np.zeros((rows, cols), np.uint8)
    labels[(z < 0) & (z >= -66) & (x >= 6) & (x < 60)] = MYO
    labels[(z < 0) & (z >= -60) & (x >= 12) & (x < 54)] = LV
    labels[(z >= 0) & (z < 40) & (x >= 12) & (x < 54)] = LA
    labels[(z >= 0) & (z < 40) & (x >= 66) & (x < 100)] = RA
    return labels, m


def test_valve_planes_and_apices_of_a_drawn_plane():
    labels, m = four_chamber_plane()
    bounds = long_axis_bounds(labels[None], m, np.array([0, 0, 1.0]), lv_blood=LV, lv_myocardium=MYO, la_blood=LA, ra_blood=RA)
    # Pixel centres lie every 1.5 mm; the planes must be found within one pixel of z = 0.
    assert bounds.mitral_mm[0] == pytest.approx(0.0, abs=1.0)
    assert bounds.tricuspid_mm[0] == pytest.approx(0.0, abs=1.0)
    assert bounds.lv_apex_mm[0] == pytest.approx(-60.0, abs=1.5)
    assert bounds.epicardial_apex_mm[0] == pytest.approx(-66.0, abs=1.5)
    assert bounds.warnings == []
    # The axis pointing the other way gives the same planes with the sign flipped.
    flipped = long_axis_bounds(labels[None], m, np.array([0, 0, -1.0]), lv_blood=LV, lv_myocardium=MYO, la_blood=LA, ra_blood=RA)
    assert flipped.lv_apex_mm[0] == pytest.approx(-bounds.lv_apex_mm[0])
    assert flipped.tricuspid_mm[0] == pytest.approx(-bounds.tricuspid_mm[0])


def test_a_frame_without_la_contact_has_no_mitral_plane():
    labels, m = four_chamber_plane()
    no_la = np.where(labels == LA, 0, labels)
    bounds = long_axis_bounds(np.stack([labels, no_la]), m, np.array([0, 0, 1.0]), lv_blood=LV, lv_myocardium=MYO,
                              la_blood=LA, ra_blood=RA)
    assert np.isfinite(bounds.mitral_mm[0]) and np.isnan(bounds.mitral_mm[1])
    assert "frame(s) 2:" in bounds.warnings[0]  # the second frame, counted from 1


def test_slabs_are_clipped_extended_and_dropped_at_the_bounds():
    depth = np.array([0.0, 10.0, 20.0, 30.0])
    slab = np.full(4, 10.0)
    present = np.ones(4, bool)
    # Base cuts the last slab [25, 35] at 27; apex cuts the first [-5, 5] at 2.
    assert clipped_slab_mm(present, depth, slab, 27.0, 2.0).tolist() == [3.0, 10.0, 10.0, 2.0]
    # Base beyond the stack: the outermost slab reaches it; apex beyond: half the gap counts.
    assert clipped_slab_mm(present, depth, slab, 40.0, -9.0).tolist() == [12.0, 10.0, 10.0, 15.0]
    # A slice beyond the valve plane stands for nothing (it shows atrium, not ventricle).
    assert clipped_slab_mm(present, depth, slab, 24.0, None).tolist() == [10.0, 10.0, 9.0, 0.0]
    # The same with depth running the other way (base at the first slice).
    assert clipped_slab_mm(present, -depth, slab, -27.0, -2.0).tolist() == [3.0, 10.0, 10.0, 2.0]
    # No bounds: Simpson's slabs unchanged.
    assert clipped_slab_mm(present, depth, slab, None, np.nan).tolist() == slab.tolist()


def test_truncated_ellipsoid_volume_is_right_only_with_the_valve_plane():
    """Half-ellipsoid cavity (semi-axes 25, 25, 70 mm) cut flat at z = 0, slices every 10 mm."""
    a, c, pixel, spacing = 25.0, 70.0, 0.5, 10.0
    truth_ml = 2 / 3 * np.pi * a * a * c / 1000
    depths = np.arange(-71.0, 10.0, spacing)  # the top LV slice 1 mm below the base: its slab overshoots 4 mm
    r, col = np.mgrid[:120, :120]
    x, y = (col - 59.5) * pixel, (r - 59.5) * pixel
    labels = np.zeros((len(depths), 1, 120, 120), np.uint8)
    for k, z in enumerate(depths):
        if -c < z <= 0:
            labels[k, 0] = (x**2 + y**2) <= a * a * (1 - (z / c) ** 2)
    m = np.diag([pixel, pixel, spacing, 1.0])
    m[2, 3] = depths[0]
    assert slice_depths_mm(len(depths), m).tolist() == pytest.approx(depths.tolist())
    simpson = label_volumes_ml(labels, 1, m)[0]
    corrected = label_volumes_ml(labels, 1, m, base_mm=[0.0], apex_mm=[-c])[0]
    assert simpson / truth_ml - 1 > 0.05
    assert corrected == pytest.approx(truth_ml, rel=0.03)


def test_frames_match_by_their_place_in_the_cycle():
    assert cycle_fractions(5, np.array([100.0, 300, 500, 700, 900])).tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    lax = cycle_fractions(4, None)  # no trigger times: evenly spread
    assert lax.tolist() == [0, 0.25, 0.5, 0.75]
    # 0.95 is nearer to the next cycle's start (frame 0) than to 0.75.
    assert matching_frames(np.array([0, 0.2, 0.4, 0.6, 0.95]), lax).tolist() == [0, 1, 2, 2, 0]


def test_synthetic_study_volumes_with_the_truth_four_chamber(sample_study, sample_truth):
    def series(view):
        return next(s for s in sample_truth["series"] if s["view"] == view and s["image_type"] == "cine")

    sax_labels, sax_m = load_label_map(sample_study, series("sax")["stacks"][0]["label_file"])
    four_labels, four_m = load_label_map(sample_study, series("4ch")["stacks"][0]["label_file"])
    normal = np.cross(sax_m[:3, 0], sax_m[:3, 1])
    normal /= np.linalg.norm(normal)
    # Phantom label values: 1 LV, 2 myocardium (8, 9 infarct, MVO), 3 RV, 5 LA, 6 RA.
    bounds = long_axis_bounds(four_labels[0], four_m, normal, lv_blood=1, lv_myocardium=(2, 8, 9), la_blood=5, ra_blood=6)
    frames = matching_frames(cycle_fractions(sax_labels.shape[1], None), cycle_fractions(four_labels.shape[1], None))
    result = ventricular_function(sax_labels, sax_m, lv_blood=1, lv_myocardium=(2, 8, 9), rv_blood=3,
                                  long_axis=bounds.for_frames(frames))
    lv, rv = sample_truth["lv"], sample_truth["rv"]
    # Seed 11 (8 mm slices): LV EDV/ESV -1.2/-1.3 %, RV +1.1/+0.4 %, EF within 0.4 points.
    assert result.lv.edv_ml == pytest.approx(lv["edv_ml"], rel=0.03)
    assert result.lv.esv_ml == pytest.approx(lv["esv_ml"], rel=0.03)
    assert result.rv.edv_ml == pytest.approx(rv["edv_ml"], rel=0.03)
    assert result.rv.esv_ml == pytest.approx(rv["esv_ml"], rel=0.03)
    assert result.lv.ef_percent == pytest.approx(100 * lv["ef"], abs=1.5)
    assert result.rv.ef_percent == pytest.approx(100 * rv["ef"], abs=1.5)
    assert result.lv_mass_g == pytest.approx(lv["mass_g"], rel=0.04)
