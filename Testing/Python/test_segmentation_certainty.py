"""Per-image segmentation certainty (inference.segmentation_certainty): shown per slice in
the results and flagged where the model hesitates."""

import copy

import numpy as np

from CMRFoundationLib.analysis import AnalysisOptions, analyze_study
from CMRFoundationLib.analysis import results as r
from CMRFoundationLib.inference import TaskPredictor, segmentation_certainty


def test_certainty_is_the_mean_winning_probability_over_the_labelled_pixels():
    p = np.zeros((2, 3, 2, 2))
    p[0, 0], p[0, 1], p[0, 2] = [[0.9, 0.1], [0.2, 0.2]], [[0.1, 0.6], [0.1, 0.1]], [[0.0, 0.3], [0.7, 0.7]]
    p[1, 0] = 1.0  # background everywhere: nothing to be sure of
    certainty = segmentation_certainty(p)
    assert np.isclose(certainty[0], (0.6 + 0.7 + 0.7) / 3) and np.isnan(certainty[1])


def test_a_slice_with_inverted_contrast_is_flagged_on_its_own(sample_stacks, sample_truth):
    """The sample's short-axis cine with one mid slice's contrast inverted (as if another
    sequence's image had slipped in): the model hesitates there and only there."""
    stacks, _ = sample_stacks
    number = next(s["number"] for s in sample_truth["series"] if s["image_type"] == "cine" and s["view"] == "sax")
    cine = copy.copy(next(s for s in stacks if s.info.series_number == number))
    cine.pixels = cine.pixels.copy()
    k = cine.n_slices // 2
    cine.pixels[k] = cine.pixels[k].max() - cine.pixels[k]
    analysis = analyze_study([cine], AnalysisOptions(device="cpu", series={"cine_sax": number}))
    function = analysis.parts["function"]
    by_frame = function.results["segmentation_certainty"]["by_frame"]
    assert set(by_frame) == {str(function.results["ed_frame"]), str(function.results["es_frame"])}
    ed = by_frame[str(function.results["ed_frame"])]
    assert ed[k] < 0.8 and all(c is None or c >= 0.8 for i, c in enumerate(ed) if i != k)
    flags = [f.message for f in analysis.flags if f.code == r.LOW_CONFIDENCE and "segmentation is uncertain" in f.message]
    assert len(flags) == 1 and f"slice(s) {k + 1} of frame" in flags[0]  # counted from 1


def test_predict_stack_gives_certainty_per_slice_and_frame(sample_stacks):
    stacks, _ = sample_stacks
    lge = next(s for s in stacks if "LGE" in s.info.series_description)
    prediction = TaskPredictor.load("seg_lge", None, "cpu").predict_stack(lge)
    assert prediction.certainty.shape == lge.pixels.shape[:2]
    found = prediction.certainty[np.isfinite(prediction.certainty)]
    assert found.size and ((found > 0.25) & (found <= 1.0)).all()
