"""Series that are not what we analyse: the acquisition header rules a class out, and such a
series never fills a role on its own (analysis/acquisition.py, analysis/select.py)."""

import copy
import dataclasses

import numpy as np

from CMRFoundationLib.analysis import AnalysisOptions, analyze_study
from CMRFoundationLib.analysis import results as r
from CMRFoundationLib.analysis.acquisition import acquisition_problem
from CMRFoundationLib.stack import ImageStack, SeriesInfo


def stack(frames=20, times=None, heart_rate=60.0, **info) -> ImageStack:
    pixels = np.zeros((3, frames, 8, 8), np.float32)
    return ImageStack(pixels, np.eye(4), SeriesInfo(heart_rate=heart_rate, **info), frame_times=times,
                      sources=[[("x.dcm", None)] * frames] * 3)


def test_a_cine_through_one_heart_cycle_passes():
    assert acquisition_problem(stack(times=np.arange(20) * 47.5), "cine") is None  # 950 ms at 60 per minute
    assert acquisition_problem(stack(times=None), "cine") is None  # a header that says nothing rules nothing out


def test_perfusion_repeats_one_trigger_delay():
    problem = acquisition_problem(stack(times=np.full(20, 120.0)), "cine")
    assert "same trigger delay" in problem and "perfusion" in problem


def test_a_dynamic_series_spanning_many_heart_cycles():
    problem = acquisition_problem(stack(frames=60, times=np.arange(60) * 900.0), "cine")  # 54 s
    assert "span 54.0 s, 54 heart cycles at 60 per minute" in problem
    assert "longer than any heart cycle" in acquisition_problem(
        stack(frames=60, times=np.arange(60) * 900.0, heart_rate=None), "cine")


def test_phase_contrast_images_are_flow_whatever_the_class():
    flow = stack(times=np.arange(20) * 47.5, image_type=("ORIGINAL", "PRIMARY", "P", "ND"))
    assert "a flow series" in acquisition_problem(flow, "cine")


def test_lge_needs_an_inversion():
    gradient_echo = stack(frames=1, scanning_sequence=("GR",))
    assert "no inversion recovery" in acquisition_problem(gradient_echo, "lge")
    assert acquisition_problem(stack(frames=1, scanning_sequence=("GR", "IR")), "lge") is None
    assert acquisition_problem(stack(frames=1, scanning_sequence=("GR",), inversion_time=300.0), "lge") is None


def test_a_perfusion_like_series_gives_no_function(sample_stacks, sample_truth):
    """The sample's short-axis cine with the timing of a perfusion series (one frame per
    heartbeat for its frames): the pixels say short-axis cine, the header rules it out, so
    no EF is measured and a warning says why."""
    stacks, _ = sample_stacks
    number = next(s["number"] for s in sample_truth["series"] if s["image_type"] == "cine" and s["view"] == "sax")
    perfusion = copy.copy(next(s for s in stacks if s.info.series_number == number))
    perfusion.frame_times = np.arange(perfusion.n_frames) * 1000.0
    perfusion.info = dataclasses.replace(perfusion.info, heart_rate=60.0)
    analysis = analyze_study([perfusion], AnalysisOptions(device="cpu"))
    record = analysis.series[0]
    assert (record.classification.image_type, record.classification.view) == ("cine", "sax")  # the pixels are fooled
    assert analysis.selection["cine_sax"].series is None
    assert analysis.parts["function"].status == r.SKIPPED
    assert not [m for m in analysis.measurements if m.section == "function"]
    warnings = [f.message for f in analysis.flags if f.code == r.SERIES_NOT_USED and f.severity == "warning"]
    assert any("heart cycles at 60 per minute" in message for message in warnings), warnings
