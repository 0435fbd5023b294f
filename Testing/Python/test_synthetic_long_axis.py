"""Long-axis cines of the synthetic studies look like planned scans, and their labels stay exact."""

import numpy as np
import pytest

from CMRFoundationLib.dicom import read_study
from CMRFoundationLib.synthetic.appearance import SEQUENCES, CineLook
from CMRFoundationLib.synthetic.phantom import HeartPhantom, Tissue, labels_from_tissue, sample_parameters
from CMRFoundationLib.synthetic.study import _stack_centres, load_label_map, plan_series, render_stack

LONG_AXIS = ("2ch", "3ch", "4ch")
HEART_LABELS = (1, 2, 3, 4, 5, 6)  # ventricles and atria


def _plans(seed):
    phantom = HeartPhantom(sample_parameters(seed))
    return phantom, plan_series(phantom, np.random.default_rng([seed, 1]), 6)


def _long_axis_stacks(plans):
    return {p.view: p.stacks[0] for p in plans if p.view in LONG_AXIS and p.image_type == "cine"}


def test_long_axis_field_of_view_is_planned_around_the_heart():
    shares, angles, rectangular = [], [], 0
    for seed in range(6):
        phantom, plans = _plans(seed)
        apex = -phantom.axes[2]
        for view, stack in _long_axis_stacks(plans).items():
            m = stack.ijk_to_lps
            labels = labels_from_tissue(phantom.tissue(_stack_centres(stack)[0], 0.0))
            rows, cols = np.nonzero(np.isin(labels, HEART_LABELS))
            # The heart (apex to atrial roof) takes about half the field of view ...
            share = max(np.ptp(rows), np.ptp(cols)) / max(stack.rows, stack.cols)
            assert 0.33 <= share <= 0.65, (seed, view, share)
            shares.append(share)
            # ... and sits near its middle, a little off centre as an operator leaves it.
            centre = np.array([(rows.min() + rows.max()) / 2 / stack.rows, (cols.min() + cols.max()) / 2 / stack.cols])
            assert np.all(np.abs(centre - 0.5) < 0.2), (seed, view, centre)
            rectangular += stack.rows < 0.95 * stack.cols
            # Where the apex points on the screen (0 = up, clockwise positive).
            angles.append(np.degrees(np.arctan2(apex @ m[:3, 0], -(apex @ m[:3, 1]))))
    assert np.mean(shares) > 0.42
    assert rectangular >= 3  # fields of view cut to the chest occur
    # The display differs between "scanners": the apex does not always point up.
    assert np.std(angles) > 30 and np.mean(np.abs(angles) > 25) > 0.2


def test_long_axis_planning_is_deterministic_per_seed():
    def matrices(seed):
        return [s.ijk_to_lps for s in _long_axis_stacks(_plans(seed)[1]).values()]

    for a, b in zip(matrices(7), matrices(7)):
        np.testing.assert_array_equal(a, b)
    assert not any(np.allclose(a, b) for a, b in zip(matrices(7), matrices(8)))
    assert CineLook.draw(7) == CineLook.draw(7) and CineLook.draw(7) != CineLook.draw(8)


def test_cine_look_varies_contrast_noise_and_shading_between_studies():
    looks = [CineLook.draw(seed) for seed in range(20)]
    for name in ("myocardium_gain", "noise_gain", "shading_power", "blur_px"):
        values = np.array([getattr(look, name) for look in looks])
        assert values.max() / values.min() > 1.3, name
    table = SEQUENCES["bssfp"].table(np.random.default_rng(0), jitter=0)
    contrast = [look.table(table)[Tissue.LV_MYOCARDIUM] / look.table(table)[Tissue.LV_BLOOD] for look in looks]
    assert max(contrast) - min(contrast) > 0.1


@pytest.fixture(scope="module")
def four_chamber_render():
    """The 4-chamber plane of seed 11 at end-diastole, noise-free, plain and with its cine look."""
    phantom, plans = _plans(11)
    stack = _long_axis_stacks(plans)["4ch"]
    table = SEQUENCES["bssfp"].table(np.random.default_rng(0), jitter=0)
    look = CineLook.draw(11)
    plain, labels = render_stack(phantom, stack, 8.0, [0.0], table)
    styled, styled_labels = render_stack(phantom, stack, 8.0, [0.0], look.table(table), look)
    chest = phantom.chest_tissue(_stack_centres(stack))
    return plain[0, 0], styled[0, 0], labels[0, 0], styled_labels[0, 0], chest[0]


def _interior(mask, steps=3):
    inside = mask.copy()
    for _ in range(steps):
        for axis in (0, 1):
            inside &= np.roll(inside, 1, axis) & np.roll(inside, -1, axis)
    return inside


def test_the_look_changes_pixels_never_labels(four_chamber_render):
    plain, styled, labels, styled_labels, _ = four_chamber_render
    np.testing.assert_array_equal(labels, styled_labels)
    assert {1, 2, 5, 6} <= set(np.unique(labels).tolist())  # LV blood and myocardium, LA, RA
    # Texture: the plain phantom's blood pool is flat, a real one (flow, trabeculae) is not.
    blood = _interior(labels == 1)
    blood &= plain == plain[blood].max()  # not the papillary muscles (labelled blood, rendered muscle)
    assert blood.sum() > 100
    assert styled[blood].std() > 0.015 * styled[blood].mean()


def test_four_chamber_labels_overlay_the_rendered_anatomy(four_chamber_render):
    _, styled, labels, _, _ = four_chamber_render

    def contrast(label):
        return styled[label == 1].mean() - styled[label == 2].mean()

    aligned = contrast(labels)
    for shift in [(1, 0), (-1, 0), (0, 1), (0, -1), (2, 2)]:
        assert contrast(np.roll(labels, shift, axis=(0, 1))) < aligned, shift


def test_lungs_are_dark_with_bright_vessels(four_chamber_render):
    _, styled, labels, _, chest = four_chamber_render
    outside_heart = labels == 0
    lung = _interior((chest == Tissue.LUNG) & outside_heart, 1)
    vessels = (chest == Tissue.VESSEL) & outside_heart
    assert lung.sum() > 0.05 * lung.size  # the lungs are in the field of view
    assert 0 < vessels.sum() < 0.3 * (lung.sum() + vessels.sum())
    myocardium = styled[_interior(labels == 2, 1)].mean()
    assert styled[lung].mean() < 0.4 * myocardium
    assert styled[vessels].mean() > 3 * styled[lung].mean()


def test_study_long_axis_cines_read_back_with_their_labels(sample_study, sample_truth):
    """The written 4-chamber cine (noise, coil shading, rotation) still shows its labels."""
    series = next(s for s in sample_truth["series"] if s["view"] == "4ch")
    labels, matrix = load_label_map(sample_study, series["stacks"][0]["label_file"])
    (stack,), _ = read_study(sample_study / series["folder"])
    np.testing.assert_allclose(stack.ijk_to_lps, matrix, atol=1e-3)
    image, label = stack.pixels[0, 0], labels[0, 0]
    blood, myocardium = image[_interior(label == 1, 1)].mean(), image[_interior(label == 2, 1)].mean()
    assert blood > 1.5 * myocardium


def test_the_heart_rests_on_the_diaphragm_between_the_lungs():
    for seed in range(5):
        phantom = HeartPhantom(sample_parameters(seed))
        X, Z = phantom.axes[0], phantom.axes[2]
        # The lowest point of the heart at end-diastole, on a 3 mm grid around it.
        grid = (
            np.stack(np.meshgrid(*(np.arange(-120, 121, 3.0),) * 3, indexing="ij"), -1).reshape(-1, 3) + phantom.origin
        )
        heart = grid[np.isin(phantom.heart_tissue(grid, 0.0), HEART_LABELS)]
        lowest = heart[np.argmin(heart[:, 2])]
        # Under it: the diaphragm and the abdomen (liver, stomach), no lung.
        below = phantom.chest_tissue(lowest + np.outer(np.arange(6, 40, 2.0), [0, 0, -1]))
        assert not np.isin(below, (Tissue.LUNG, Tissue.VESSEL)).any(), (seed, below)
        assert np.isin(below, (Tissue.LIVER, Tissue.SOFT_TISSUE)).mean() > 0.5, (seed, below)
        # Beside the LV's lateral wall at mid-cavity: lung within a few millimetres.
        mid = phantom.origin - 0.5 * phantom.lv_c_ed * Z
        line = mid - np.outer(np.arange(0, 120, 1.0), X)
        outside = np.flatnonzero(phantom.heart_tissue(line, 0.0) == 0)
        lung = np.isin(phantom.chest_tissue(line[outside]), (Tissue.LUNG, Tissue.VESSEL))
        assert lung[:5].any(), seed
