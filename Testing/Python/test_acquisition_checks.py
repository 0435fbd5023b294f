"""Series that are not what we analyse: the acquisition header rules a class out, and such a
series never fills a role on its own (analysis/acquisition.py, analysis/select.py); the
distractor series of the synthetic generator and the real file in ../shared/data as a corpus
where no measurement comes out unflagged."""

import copy
import dataclasses
import html
import re

import numpy as np
import pytest

from CMRFoundationLib.analysis import AnalysisOptions, analyze_study, write_outputs
from CMRFoundationLib.analysis import results as r
from CMRFoundationLib.analysis.acquisition import acquisition_problem, not_analysable
from CMRFoundationLib.analysis.pipeline import NothingToAnalyze
from CMRFoundationLib.dicom import read_study
from CMRFoundationLib.stack import ImageStack, SeriesInfo
from CMRFoundationLib.synthetic.study import load_truth
from conftest import SHARED_DATA

HEART_SAMPLE = SHARED_DATA / "dicom_samples" / "MR-MONO2-8-16x-heart.dcm"


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


def test_a_velocity_encoded_sequence_name_is_flow_magnitude_or_phase():
    magnitude = stack(times=np.arange(20) * 47.5, sequence_name="*fl2d1_v150in", image_type=("ORIGINAL", "PRIMARY", "M"))
    assert "encodes a velocity (VENC 150 cm/s)" in acquisition_problem(magnitude, "cine")
    assert "flow series" in not_analysable(magnitude)
    cine = stack(times=np.arange(20) * 47.5, sequence_name="*tfi2d1_25")
    assert acquisition_problem(cine, "cine") is None and not_analysable(cine) is None
    lge = stack(frames=1, sequence_name="*tfl2d1", scanning_sequence=("GR", "IR"))
    assert not_analysable(lge) is None  # a single frame needs no cardiac cycle
    assert "same trigger delay" in not_analysable(stack(times=np.full(20, 120.0)))


# The series of the study corpus that are not what we analyse, and what their headers say.
DISTRACTORS = {"first-pass perfusion": "same trigger delay", "phase-contrast flow, magnitude": "encodes a velocity",
               "phase-contrast flow, phase (velocity)": "marks phase (velocity) images"}


def distractor_keys(study) -> dict[str, str]:
    """Series key -> what its header says, for the distractors of a synthetic study."""
    return {f"S{s['number']:03d}": DISTRACTORS[s["distractor"]] for s in load_truth(study)["series"] if "distractor" in s}


def test_distractors_give_no_measurement_and_are_named_with_their_header_reason(distractor_study, sample_study, tmp_path):
    """The whole analysis, every series chosen automatically, of the sample study with and without
    the distractors: they fill no role, each is named with what its header says, and the
    measurements of the real series are the same."""
    keys = distractor_keys(distractor_study)
    assert len(keys) == 3
    with_them = analyze_study(distractor_study / "DICOM", AnalysisOptions(device="cpu"))
    without = analyze_study(sample_study / "DICOM", AnalysisOptions(device="cpu"))
    assert not {m.series for m in with_them.measurements} & set(keys)
    assert not {s.series for s in with_them.selection.values()} & set(keys)
    for key, reason in keys.items():
        said = [f.message for f in with_them.flags if f.code == r.SERIES_NOT_USED and f.series == key]
        assert any(reason in message for message in said), (key, said)
        assert reason in with_them.record(key).header_rules_out

    def rows(analysis):
        return sorted((m.section, m.name, m.series, m.segment or 0, m.frame or 0, m.value, m.check or "")
                      for m in analysis.measurements)

    assert rows(with_them) and rows(with_them) == rows(without)
    assert {role: s.series for role, s in with_them.selection.items()} == {role: s.series for role, s in without.selection.items()}

    # The report's series table says it too, beside the header's own description.
    write_outputs(with_them, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for key, reason in keys.items():
        row = re.search(rf"<tr><th>{key}</th>.*?</tr>", page[page.index('<section id="series">'):]).group(0)
        assert html.escape(with_them.stack(key).info.series_description) in row and reason in html.unescape(row)


CORPUS = ["first-pass perfusion", "phase-contrast flow, magnitude", "phase-contrast flow, phase (velocity)",
          "perfusion named as the short-axis cine", "real multi-frame file without geometry"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CORPUS)
def test_corpus_of_series_that_are_not_cines_gives_no_unflagged_measurement(case, distractor_study):
    """Each series of the corpus analysed alone: it gives no measurement, or (named by the user
    against its header) only marked ones; the real file without geometry is refused, naming it."""
    if case == "real multi-frame file without geometry":
        if not HEART_SAMPLE.exists():
            pytest.skip("the shared real-DICOM sample is not on this machine")
        with pytest.raises(NothingToAnalyze, match="MR-MONO2-8-16x-heart.dcm.*ImagePositionPatient"):
            analyze_study(HEART_SAMPLE, AnalysisOptions(device="cpu"))
        return
    truth = load_truth(distractor_study)
    kind = "first-pass perfusion" if case.startswith("perfusion named") else case
    series = next(s for s in truth["series"] if s.get("distractor") == kind)
    stacks, problems = read_study(distractor_study / series["folder"])
    assert problems == []
    named = {"cine_sax": series["number"]} if case.startswith("perfusion named") else {}
    analysis = analyze_study(stacks, AnalysisOptions(device="cpu", series=named))
    unflagged = [(m.name, m.value) for m in analysis.measurements if m.check is None]
    assert unflagged == []
    if named:  # the user's choice runs, and every number it gives says why it is not to be trusted
        assert analysis.measurements and all("not analysable by its header" in m.check for m in analysis.measurements)
        assert any(f.code == r.HEADER_DISAGREES and f.severity == "warning" for f in analysis.flags)
    else:
        said = [f.message for f in analysis.flags if f.code == r.SERIES_NOT_USED]
        assert any(DISTRACTORS[kind] in message for message in said), said
