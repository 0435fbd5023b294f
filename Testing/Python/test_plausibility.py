"""A number no heart can have is flagged wherever it is shown and kept out of the DICOM SR."""

import copy
import csv
import dataclasses
import json

import numpy as np
import pytest

from CMRFoundationLib.analysis import AnalysisOptions, analyze_study, write_outputs
from CMRFoundationLib.analysis import results as r
from CMRFoundationLib.analysis.parts import MEASUREMENTS
from CMRFoundationLib.dicom.sr import read_measurement_sr
from CMRFoundationLib.measurements import plausibility


def test_every_declared_measurement_has_a_plausible_range():
    assert [name for name, spec in MEASUREMENTS.items() if spec.plausible is None] == []


@pytest.mark.parametrize("value, plausible", [(99.6, False), (60.0, True), (4.0, False), (90.0, True)])
def test_ejection_fraction_range(value, plausible):
    problem = plausibility.EJECTION_FRACTION.problem(value, "%", "LV ejection fraction")
    assert (problem is None) == plausible
    if not plausible:
        assert f"LV ejection fraction {value:g} %" in problem and "5-90 %" in problem


def test_native_t1_limits_follow_the_field_strength():
    # 1600 ms is amyloid-high at 3 T but no myocardium at 1.5 T; unknown field: the wide limits.
    assert plausibility.NATIVE_T1.problem(1600, "ms", "Native T1", 3.0) is None
    assert "at 1.5 T" in plausibility.NATIVE_T1.problem(1600, "ms", "Native T1", 1.5)
    assert plausibility.NATIVE_T1.problem(1600, "ms", "Native T1", None) is None
    assert plausibility.NATIVE_T1.problem(400, "ms", "Native T1", None) is not None


@pytest.fixture(scope="module")
def heavy_patient(sample_stacks, sample_truth, tmp_path_factory):
    """The sample study's short-axis cine alone, its header saying 900 kg: a BSA of 6.6 m2 that
    no patient has, and indexed volumes that follow it."""
    stacks, _ = sample_stacks
    number = next(s["number"] for s in sample_truth["series"] if s["image_type"] == "cine" and s["view"] == "sax")
    cine = copy.copy(next(s for s in stacks if s.info.series_number == number))
    cine.info = dataclasses.replace(cine.info, patient_weight=900.0, patient_size=1.75)
    analysis = analyze_study([cine], AnalysisOptions(device="cpu", series={"cine_sax": number}))
    out = tmp_path_factory.mktemp("implausible") / "out"
    return analysis, write_outputs(analysis, out), out


def test_implausible_values_are_marked_and_flagged(heavy_patient):
    analysis, _, _ = heavy_patient
    rows = {m.name: m for m in analysis.measurements if m.segment is None}
    assert rows["bsa"].value > 6 and "Body surface area" in rows["bsa"].check
    assert rows["lv_edv_index"].check is not None or rows["lv_edv"].value / rows["bsa"].value >= 25
    assert rows["lv_ef"].check is None  # EF does not depend on the header
    flagged = [f for f in analysis.flags if f.code == r.IMPLAUSIBLE_VALUE]
    assert any(f.severity == "warning" and "Body surface area" in f.message for f in flagged)
    assert analysis.to_dict()["measurements"][0].keys() >= {"check"}


def test_csv_report_and_sr_show_or_leave_out_the_implausible_value(heavy_patient):
    analysis, written, out = heavy_patient
    with open(written["measurements_csv"], newline="", encoding="utf-8") as handle:
        csv_rows = {row["name"]: row for row in csv.DictReader(handle) if not row["segment"]}
    assert "outside the plausible" in csv_rows["bsa"]["check"] and csv_rows["lv_ef"]["check"] == ""
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Not plausible" in report and "not plausible</span>" in report
    assert "No errors or warnings" not in report
    in_sr = {m["name"] for m in read_measurement_sr(written["dicom_sr"])}
    assert "bsa" not in in_sr and "lv_ef" in in_sr


def sax_slices(stacks, truth, keep: slice):
    """The sample study's short-axis cine cut to the slices ``keep``, as if that were all the scanner wrote."""
    number = next(s["number"] for s in truth["series"] if s["image_type"] == "cine" and s["view"] == "sax")
    cine = next(s for s in stacks if s.info.series_number == number)
    first = range(cine.n_slices)[keep][0]
    cut = copy.copy(cine)
    cut.pixels = cine.pixels[keep]
    cut.ijk_to_lps = cine.ijk_to_lps.copy()
    cut.ijk_to_lps[:3, 3] = cine.ijk_to_lps_points([0, 0, first])[0]
    cut.slice_positions = None if cine.slice_positions is None else cine.slice_positions[keep]
    cut.sources = None if cine.sources is None else cine.sources[keep]
    cut.sop_instance_uids = None if cine.sop_instance_uids is None else cine.sop_instance_uids[keep]
    return cut, number


def test_a_stack_that_misses_the_apex_gives_flagged_volumes(sample_stacks, sample_study, sample_truth):
    """Only the basal slices of the cine (the truth's LV is largest at the last slices): the
    structural check says the stack ends before the apex, and every volume carries that."""
    truth_lv = (np.load(sample_study / "ground_truth" / "labels" / "S006.npz")["labels"][:, 0] == 1).sum(axis=(1, 2))
    base = int(np.argmax(truth_lv))
    keep = slice(base - 3, None) if base > len(truth_lv) / 2 else slice(0, base + 4)
    cut, number = sax_slices(sample_stacks[0], sample_truth, keep)
    analysis = analyze_study([cut], AnalysisOptions(device="cpu", series={"cine_sax": number}))
    flags = [f for f in analysis.flags if f.code == r.SEGMENTATION_QUALITY]
    assert flags and "ends before the apex" in flags[0].message and flags[0].severity == "warning"
    function = [m for m in analysis.measurements if m.section == "function" and m.name != "bsa"]
    assert function and all("structural check" in m.check for m in function)


def test_a_single_short_axis_slice_gives_no_volumes(sample_stacks, sample_truth):
    cut, number = sax_slices(sample_stacks[0], sample_truth, slice(6, 7))
    analysis = analyze_study([cut], AnalysisOptions(device="cpu", series={"cine_sax": number}))
    assert analysis.parts["function"].status == r.SKIPPED
    assert "single short-axis slice gives no volumes" in analysis.parts["function"].reason
    assert not [m for m in analysis.measurements if m.section == "function"]


def test_cohort_table_keeps_implausible_values_out_of_their_columns(heavy_patient):
    """A cohort's averages must not take in a flagged number: the cohort table lists it apart."""
    from CMRFoundationLib.cohort.table import analysis_values

    analysis, written, out = heavy_patient
    document = json.loads(written["analysis_json"].read_text(encoding="utf-8"))
    ef = next(m for m in document["measurements"] if m["name"] == "lv_ef")
    ef["check"] = "LV ejection fraction 99.6 % is outside the plausible 5-90 %"  # as the perfusion series gave
    values = analysis_values(document)
    implausible = dict(item.split("=") for item in values["implausible"].split("; "))
    assert "lv_ef" not in values and implausible["lv_ef"] == f"{ef['value']:.6g}" and "lv_edv" in values
