"""The part registry (analysis/parts): what a part declares is what the pipeline, the
outputs and the clinical rules use; and reading an analysis needs no torch."""

import subprocess
import sys

import numpy as np
import pytest

from CMRFoundationLib.analysis.parts import MEASUREMENTS, PARTS
from CMRFoundationLib.analysis.parts.context import Context, PartSkipped, Shared
from CMRFoundationLib.analysis.parts.ventricular_function import PART as FUNCTION
from CMRFoundationLib.analysis.parts.ventricular_function import lv_volume_gaps, record_lv_volume_gaps
from CMRFoundationLib.analysis.parts.volume_ratio import PART as VOLUME_RATIO
from CMRFoundationLib.analysis.pipeline import PHASE_WEIGHTS
from CMRFoundationLib.analysis.results import OK, PartResult
from CMRFoundationLib.dicom.sr import known_measurements
from CMRFoundationLib.measurements import (
    LongAxisBounds,
    not_a_long_axis_plane,
    partial_volume_slices,
    valve_plane_problem,
)
from CMRFoundationLib.stack import ImageStack, geometry_matrix


def test_reading_an_analysis_imports_no_torch():
    code = ("import sys; import CMRFoundationLib.analysis, CMRFoundationLib.analysis.parts, "
            "CMRFoundationLib.analysis.outputs, CMRFoundationLib.scene.tables; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _part(spec, series="S001") -> PartResult:
    return PartResult(spec.name, spec.title, series=series, units={m.name: m.unit for m in spec.measurements})


def test_a_part_measures_only_what_it_declares_in_the_declared_unit():
    part = _part(VOLUME_RATIO)
    part.measure("rv_lv_edv_ratio", 1.1)
    assert part.measurements[0].unit == MEASUREMENTS["rv_lv_edv_ratio"].unit
    with pytest.raises(ValueError, match="does not declare"):
        part.measure("lv_edv", 100.0)


def test_the_registry_feeds_progress_and_the_sr_codes():
    assert [p.name for p in PARTS] == [name for name in PHASE_WEIGHTS if name not in ("read", "classify", "select")]
    coded = {name for name, spec in MEASUREMENTS.items() if spec.concept is not None}
    assert set(known_measurements()) == coded
    assert known_measurements()["lv_edv"][0].value == "8821-1"  # LOINC Left Ventricular ED Volume


def _context_after_function(lv_edv, rv_edv) -> Context:
    function = next(p for p in PARTS if p.name == "function")
    done = _part(function)
    for name, value in (("lv_edv", lv_edv), ("rv_edv", rv_edv)):
        done.measure(name, value)
    done.status = OK
    return Context(predictors=None, lge_n_sd=5.0, flag=lambda *args: None, shared=Shared(), parts={"function": done})


def test_volume_ratio_part_reads_the_function_parts_volumes():
    part = _part(VOLUME_RATIO)
    VOLUME_RATIO.run(_context_after_function(120.0, 150.0), part, None)
    assert part.measurements[0].value == pytest.approx(1.25)
    with pytest.raises(PartSkipped):
        VOLUME_RATIO.run(_context_after_function(None, 150.0), _part(VOLUME_RATIO), None)


def test_valve_planes_are_refused_off_axis_or_outside_the_stack():
    depths = np.arange(0.0, 80.0, 10.0)  # 8 slices, 10 mm apart
    assert not_a_long_axis_plane(30.0) is not None and not_a_long_axis_plane(85.0) is None
    assert valve_plane_problem(np.array([65.0, 68.0]), depths, 10.0) is None
    assert "outside" in valve_plane_problem(np.array([95.0, 96.0]), depths, 10.0)  # > one slice beyond 70 mm
    assert "no mitral" in valve_plane_problem(np.array([np.nan, np.nan]), depths, 10.0)


def test_lge_slices_past_the_mitral_plane_or_without_blood_pool_are_left_out():
    has_myo = np.array([True, True, True, True])
    has_blood = np.array([False, True, True, True])  # slice 0: an apical cap
    depths = np.array([0.0, 10.0, 20.0, 30.0])  # apex at 0 mm, base towards +
    half_slab = np.full(4, 4.0)
    excluded = partial_volume_slices(has_myo, has_blood, depths, half_slab, mitral_mm=28.0, apex_mm=-5.0)
    assert set(excluded) == {0, 3}  # slice 3's slab reaches 30 + 4 - 28 = 6 mm past the mitral plane
    assert "past the mitral plane" in excluded[3] and "without LV blood pool" in excluded[0]
    assert set(partial_volume_slices(has_myo, has_blood, depths, half_slab, mitral_mm=40.0, apex_mm=-5.0)) == {0}
    # The other way round (base at the low depths): slice 0 is then basal.
    flipped = partial_volume_slices(has_myo, np.ones(4, bool), depths, half_slab, mitral_mm=2.0, apex_mm=40.0)
    assert set(flipped) == {0}


def test_the_report_shows_a_new_part_with_its_declared_label_and_decimals():
    from CMRFoundationLib.analysis.report.page import _measurement_list

    part = _part(VOLUME_RATIO)
    part.measure("rv_lv_edv_ratio", 1.2468)
    html = _measurement_list(None, part)
    assert "RV/LV end-diastolic volume ratio" in html and "1.25" in html and "1.247" not in html


def test_lv_slices_that_add_nothing_at_ed_and_es_are_left_out_and_the_others_noted():
    """Six 10 mm short-axis slices (depth 0 at the apex end): the LV is on slices 1-4 at ED and
    1-3 at ES; the 4-chamber cine puts the mitral plane at 33 mm at ED and 23 mm at ES."""
    stack = ImageStack(np.zeros((6, 2, 8, 8), np.float32), geometry_matrix(np.zeros(3), [1, 0, 0], [0, 1, 0], [1, 1, 10]))
    lv = np.zeros((6, 2, 8, 8), bool)
    lv[1:5, 0, 2:6, 2:6] = True
    lv[1:4, 1, 3:5, 3:5] = True
    bounds = LongAxisBounds(np.array([33.0, 23.0]), np.full(2, np.nan), np.array([5.0, 5.0]), np.full(2, np.nan))
    frames = {"ED": 0, "ES": 1}
    gaps = lv_volume_gaps(lv, stack, bounds, frames)
    assert gaps == {0: {"ED": "no LV blood pool", "ES": "no LV blood pool"},
                    3: {"ES": "beyond the mitral plane of the 4-chamber cine"},
                    4: {"ED": "beyond the mitral plane of the 4-chamber cine", "ES": "no LV blood pool"},
                    5: {"ED": "no LV blood pool", "ES": "no LV blood pool"}}
    part = _part(FUNCTION)
    record_lv_volume_gaps(part, gaps, frames)
    assert part.results["left_out_slices"] == {
        "0": "no LV blood pool at ED and ES",
        "4": "beyond the mitral plane of the 4-chamber cine at ED; no LV blood pool at ES",
        "5": "no LV blood pool at ED and ES"}
    assert part.results["slice_findings"] == {
        "3": ["in the LV volume at ED only (beyond the mitral plane of the 4-chamber cine at ES)"]}
