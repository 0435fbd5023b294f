"""Whole-study analysis with the carried model weights on the synthetic sample study.

The carried CPU weights are small, so these tests check the mechanism, not accuracy
(that is the evaluation scripts' job): the right series are found or the disagreement is
flagged, every part ends ok/skipped/failed with a reason, the values are plausible, and
every output file reads back. The measurement tests name the series of each role (as a
user can), so that they test the measurements whatever the classifier says; the
automatic choice is tested on the same classifications with select_series.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from CMRFoundationLib.analysis import (
    FORMAT,
    AnalysisOptions,
    Cancelled,
    NothingToAnalyze,
    OutputFolderError,
    analyze_study,
    write_outputs,
)
from CMRFoundationLib.analysis.classify import guess_from_header
from CMRFoundationLib.analysis.geometry import slice_gap_findings
from CMRFoundationLib.analysis.results import (
    HEADER_DISAGREES,
    IMPLAUSIBLE_VALUE,
    SEGMENTATION_QUALITY,
    SLICE_GAPS,
    UNUSABLE_FILE,
)
from CMRFoundationLib.analysis.select import select_series
from CMRFoundationLib.cli import main as cmrfm
from CMRFoundationLib.dicom import read_dicom_seg, read_measurement_sr
from CMRFoundationLib.stack import ImageStack, SeriesInfo, geometry_matrix
from CMRFoundationLib.volume_io import read_volume
from CMRFoundationLib.weights import resolve_weights_dir

MAIN_SERIES = {("cine", "sax"): "cine_sax", ("cine", "4ch"): "cine_4ch", ("lge", "sax"): "lge_sax"}


def key_of(truth_series: dict) -> str:
    return f"S{truth_series['number']:03d}"


def truth_key(truth: dict, image_type: str, view: str | None = None, description: str = "") -> str:
    return key_of(next(s for s in truth["series"] if s["image_type"] == image_type and view in (None, s["view"])
                       and description in s["description"]))


@pytest.fixture(scope="module")
def run(sample_analysis):
    """The analysis of the sample study with the series named, and its progress calls (conftest)."""
    return sample_analysis


@pytest.fixture(scope="module")
def analysis(run):
    return run[0]


@pytest.fixture(scope="module")
def written(analysis, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "out"
    return out, write_outputs(analysis, out)


# --- classification and selection -----------------------------------------------------------


def test_header_guess_matches_the_protocol(analysis, sample_truth):
    """The header cross-check reads the synthetic protocol's names right (image type and cine view)."""
    truth = {key_of(s): s for s in sample_truth["series"]}
    for record in analysis.series:
        expected = truth[record.key.split("-")[0]]
        guess = record.classification.header
        assert guess.image_type == expected["image_type"], (record.key, guess)
        if expected["image_type"] == "cine":
            assert guess.view == expected["view"], (record.key, guess)


def test_the_sample_study_has_no_implausible_value(analysis):
    """The README's example gains no warning from the plausibility and structure checks (test_plausibility.py)."""
    assert [m.check for m in analysis.measurements if m.check] == []
    assert not [f for f in analysis.flags if f.code in (IMPLAUSIBLE_VALUE, SEGMENTATION_QUALITY)]
    assert analysis.parts["function"].results["structure_problems_at_ed"] == []
    assert not [f for f in analysis.flags if "segmentation is uncertain" in f.message]


def test_pixels_decide_and_disagreements_are_flagged(analysis, sample_truth):
    flagged = {f.series for f in analysis.flags if f.code == HEADER_DISAGREES}
    truth = {key_of(s): s for s in sample_truth["series"]}
    for record in analysis.series:
        series, c = truth[record.key.split("-")[0]], record.classification
        assert c.image_type_source == "pixels" and abs(sum(c.image_type_probabilities.values()) - 1) < 1e-4
        assert (c.view is not None) == (record.stack.n_frames > 1)
        wrong = c.image_type != series["image_type"] or (c.view is not None and c.view != series["view"])
        # The header is right for every sample series, so a wrong pixel class must show as a flag.
        assert wrong == (record.key in flagged), (record.key, c.to_dict())


def test_the_truth_short_axis_cine_is_chosen_and_choices_are_explained(analysis, sample_truth):
    selection = select_series(analysis.series)  # the automatic choice on the pipeline's classifications
    assert selection["cine_sax"].series == truth_key(sample_truth, "cine", "sax")
    for (image_type, view), role in MAIN_SERIES.items():
        chosen = selection[role].series
        expected = truth_key(sample_truth, image_type, view)
        # Either the right series, or the miss is visible as a header/pixel disagreement.
        assert chosen == expected or any(f.series == expected and f.code == HEADER_DISAGREES for f in analysis.flags)
    for choice in selection.values():
        assert choice.reason
        assert all(a["why_not"] for a in choice.alternatives)
    native = truth_key(sample_truth, "t1", description="native")
    if analysis.record(native).classification.image_type == "t1":  # then it wins over the post-contrast map
        assert selection["t1_map"].series == native


def test_progress_runs_through_the_phases(run):
    _, calls = run
    phases = [c[0] for c in calls]
    fractions = [c[1] for c in calls]
    assert {"read", "classify", "select", "function", "lge_extent", "t2_map"} <= set(phases)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and phases[-1] == "done"


# --- measurements ----------------------------------------------------------------------------


def test_named_series_are_used_and_every_part_runs(analysis, sample_roles):
    for role, number in sample_roles.items():
        assert analysis.selection[role].series == f"S{number:03d}"
        assert analysis.selection[role].reason.startswith(f"chosen by the user (series {number})")
    assert list(analysis.parts) == ["atria", "function", "volume_ratio", "myocardial_segments", "disease", "lge_extent",
                                    "lge_presence", "t1_map", "t2_map"]
    for part in analysis.parts.values():
        assert (part.status, part.reason) == ("ok", None), part.name


def test_ventricular_function_is_complete_and_plausible(analysis, sample_truth):
    part = analysis.parts["function"]
    assert part.status == "ok", part.reason
    results = part.results
    frames = sample_truth["cine"]["frames"]
    assert results["ed_frame"] != results["es_frame"]
    assert len(results["lv_volume_curve_ml"]) == len(results["rv_volume_curve_ml"]) == frames
    assert 0 < results["lv"]["ef_percent"] < 100 and 0 < results["rv"]["ef_percent"] < 100
    assert results["lv"]["edv_ml"] == max(v for v in results["lv_volume_curve_ml"] if v is not None)
    assert results["lv_mass_g"] > 0 and results["bsa_m2"] == pytest.approx(sample_truth["patient"]["bsa_m2"], abs=0.01)
    names = {m.name for m in part.measurements}
    assert {"lv_edv", "lv_esv", "lv_sv", "lv_ef", "lv_mass", "lv_edv_index", "lv_mass_index", "rv_ef", "bsa"} <= names
    (seg,) = [m for m in part.label_maps if m.name == "seg_sax_cine"]
    assert seg.labels.shape == analysis.stack(part.series).pixels.shape
    assert seg.seg_frames == sorted([results["ed_frame"], results["es_frame"]])
    # The 4-chamber cine ends the short-axis slabs at the valve planes.
    long_axis = results["long_axis"]
    assert long_axis["method"].startswith("Simpson's rule with the end slabs clipped"), long_axis
    assert long_axis["ed"]["mitral_mm"] is not None and long_axis["ed"]["lv_apex_mm"] is not None
    depths = long_axis["slice_depths_mm"]
    assert min(depths) - 10 <= long_axis["ed"]["mitral_mm"] <= max(depths) + 10
    assert len(long_axis["four_chamber_frame_of_sax_frame"]) == frames


def test_aha_segments_wall_thickness_and_disease(analysis):
    segments = analysis.parts["myocardial_segments"]
    assert segments.status == "ok", segments.reason
    thickness = segments.results["wall_thickness"]["segments"]
    assert {s["segment"] for s in thickness} == set(range(1, 17))
    assert all(0 < s["mean_mm"] < 40 for s in thickness)
    assert segments.results["insertion_points"] and segments.results["frame"] == analysis.parts["function"].results["ed_frame"]
    disease = analysis.parts["disease"]
    assert disease.status == "ok", disease.reason
    assert disease.results["class"] in ("NOR", "DCM", "HCM", "MINF", "RV")
    assert sum(disease.results["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # The class comes from the phenotypes measured on this study's own segmentation.
    assert disease.results["method"].startswith("phenotypes")
    assert any(line.startswith("Disease class (phenotypes") for line in analysis.summary_lines())
    function = analysis.parts["function"].results
    lv_ef = function["lv"]["ef_percent"]
    phenotypes = disease.results["phenotypes"]
    assert 0 < phenotypes["lv_ef"] < 1 and 0 < phenotypes["lv_myocardium_edv_ratio"] < 3
    if lv_ef is not None:  # slice-summed ratio vs the valve-plane-clipped EF of the function part
        assert abs(100 * phenotypes["lv_ef"] - lv_ef) < 15


def test_maps_and_atria(analysis):
    for name, low, high in (("t1_map", 500, 2000), ("t2_map", 20, 150)):
        part = analysis.parts[name]
        assert low < part.results["values"]["global"]["mean"] < high
        assert part.results["insertion_points_source"].startswith("carried over from the short-axis cine")
        assert {m.segment for m in part.measurements} - {None} <= set(range(1, 17))
    atria = analysis.parts["atria"]
    assert atria.results["la"]["max"]["area_cm2"] > 0
    assert atria.results["ed_frame"] != atria.results["es_frame"]


def test_lge_extent_and_presence(analysis):
    extent = analysis.parts["lge_extent"]
    assert extent.results["insertion_points_source"].startswith("carried over from the short-axis cine")
    assert extent.results["extent"]["n_sd"] == 5
    assert 0 <= extent.results["extent"]["enhanced_percent"] <= 100
    assert {m.segment for m in extent.measurements} - {None} <= set(range(1, 17))
    (labels,) = [m for m in extent.label_maps if m.name == "seg_lge"]
    assert labels.label_names[-1] == "enhanced_myocardium"
    presence = analysis.parts["lge_presence"]
    assert presence.results["class"] in ("absent", "present")
    assert sum(presence.results["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_lge_without_a_cine_runs_the_landmark_model_on_the_lge_stack(sample_stacks, sample_roles):
    number = sample_roles["lge_sax"]
    lge = [s for s in sample_stacks[0] if s.info.series_number == number]
    analysis = analyze_study(lge, AnalysisOptions(device="cpu", series={"lge_sax": number}))
    assert analysis.source == "stacks" and analysis.parts["function"].status == "skipped"
    extent = analysis.parts["lge_extent"]
    if extent.status == "ok":
        assert extent.results["insertion_points_source"].startswith("rv_insertion model on this stack")
        assert "base guessed from this stack" in extent.results["insertion_points_source"]
    else:  # too few confident landmarks on LGE: said so, and the rest still ran
        assert extent.status == "failed" and "AHA segments cannot be placed" in extent.reason
    assert analysis.parts["lge_presence"].status == "ok"


# --- outputs ----------------------------------------------------------------------------------


def test_json_and_csv_read_back(analysis, written):
    out, paths = written
    document = json.loads((out / "analysis.json").read_text())
    assert (document["format"], document["format_version"]) == (FORMAT, 1)
    assert {"study", "series", "selection", "parts", "measurements", "flags", "weights", "outputs"} <= set(document)
    assert document["parts"]["function"]["results"]["lv_volume_curve_ml"]
    with open(paths["measurements_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["section", "name", "value", "unit", "series", "segment", "frame", "check"]
    assert len(rows) == len(analysis.measurements) == len(document["measurements"])
    ef = next(r for r in rows if r["name"] == "lv_ef")
    assert float(ef["value"]) == pytest.approx(analysis.value("lv_ef"), rel=1e-5)
    assert any(r["segment"].startswith("AHA ") for r in rows)


def test_label_maps_are_in_the_series_geometry(analysis, written):
    out, paths = written
    sax_key = analysis.parts["function"].series
    volume = read_volume(out / "labels" / f"{sax_key}_seg_sax_cine.nii.gz")
    stack = analysis.stack(sax_key)
    assert volume.pixels.shape == stack.pixels.shape
    np.testing.assert_allclose(volume.ijk_to_lps, stack.ijk_to_lps, atol=1e-3)
    np.testing.assert_array_equal(volume.pixels, analysis.parts["function"].label_maps[0].labels)
    for path in paths["label_maps"]:
        part_series = path.name.split("_")[0]
        assert read_volume(path).pixels.shape[0] == analysis.stack(part_series).n_slices


def test_dicom_seg_and_sr_read_back(analysis, written):
    _, paths = written
    assert paths["dicom_seg"] and paths["dicom_sr"] is not None
    sax_key = analysis.parts["function"].series
    sax = analysis.stack(sax_key)
    sax_segs = [p for p in paths["dicom_seg"] if p.parent.name == f"{sax_key}_seg_sax_cine"]
    assert len(sax_segs) == 2  # end-diastole and end-systole
    for path in paths["dicom_seg"]:
        seg = pydicom.dcmread(path)
        source = analysis.stack(path.parent.name.split("_")[0])
        assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.info.series_uid
    segs = [pydicom.dcmread(p) for p in sax_segs]
    assert len({s.SeriesInstanceUID for s in segs}) == 1 and all(s.StudyInstanceUID == sax.info.study_uid for s in segs)
    function = analysis.parts["function"]
    (labels,) = function.label_maps[:1]
    back = read_dicom_seg(sax_segs[0].parent, sax, labels.label_names)
    for frame in labels.seg_frames:
        np.testing.assert_array_equal(back[:, frame], labels.labels[:, frame])
    back = read_measurement_sr(paths["dicom_sr"])
    ef = next(m for m in back if m["name"] == "lv_ef")
    assert ef["value"] == pytest.approx(analysis.value("lv_ef")) and ef["unit"] == "%"
    assert any(m["name"] == "wall_thickness" and m["segment"] for m in back)


def test_rewriting_replaces_a_previous_analysis_but_keeps_other_files(analysis, tmp_path):
    out = tmp_path / "out"
    write_outputs(analysis, out)
    stale = out / "labels" / "S099_old.nii.gz"
    stale.write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    write_outputs(analysis, out)
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "analysis.json").read_text())["format"] == FORMAT


# --- a damaged study, missing weights, the CLI --------------------------------------------------


@pytest.fixture(scope="module")
def damaged(sample_study, sample_truth, sample_roles, sample_stacks, tmp_path_factory):
    """The sample study without its LGE series, with a truncated file where a short-axis slice was,
    analysed through the CLI with weights that lack the 4-chamber segmentation and the phenotype
    disease classifier."""
    root = tmp_path_factory.mktemp("damaged")
    study = root / "DICOM"
    lge_folder = next(s["folder"] for s in sample_truth["series"] if s["image_type"] == "lge")
    shutil.copytree(sample_study / "DICOM", study, ignore=shutil.ignore_patterns(Path(lge_folder).name))
    roles = sample_roles
    sax = next(s for s in sample_stacks[0] if s.info.series_number == roles["cine_sax"])
    files = [study / Path(path).relative_to(sample_study / "DICOM") for path, _ in sax.sources[5]]
    for path in files[1:]:
        path.unlink()
    broken = files[0]
    broken.write_bytes(broken.read_bytes()[:-200])

    weights = root / "weights"
    shutil.copytree(resolve_weights_dir(None), weights,
                    ignore=shutil.ignore_patterns("seg_4ch_cine.*", "disease_phenotypes.json"))
    out = root / "out"
    # The cines are named (the LGE is left to the classifier): this tests damage, not the classifier.
    status = cmrfm(["analyze", str(study), "--out", str(out), "--weights", str(weights), "--device", "cpu",
                    "--series", f"cine_sax={roles['cine_sax']}", "--series", f"cine_4ch={roles['cine_4ch']}"])
    return status, out, str(broken)


@pytest.mark.slow
def test_damaged_study_completes_with_the_broken_file_named_and_lge_skipped(damaged):
    status, out, broken = damaged
    assert status == 0
    document = json.loads((out / "analysis.json").read_text())
    assert any(p["path"] == broken and "truncated" in p["reason"] for p in document["problems"])
    assert any(f["code"] == UNUSABLE_FILE and broken in f["message"] for f in document["flags"])
    for name in ("lge_extent", "lge_presence"):
        assert document["parts"][name]["status"] == "skipped"
        assert "no short-axis LGE" in document["parts"][name]["reason"]
    assert document["parts"]["function"]["status"] == "ok"
    assert any(f["code"] == SLICE_GAPS for f in document["flags"])  # the short-axis slice lost with the broken file


@pytest.mark.slow
def test_missing_task_weights_skip_only_that_part(damaged):
    status, out, _ = damaged
    document = json.loads((out / "analysis.json").read_text())
    atria = document["parts"]["atria"]
    assert atria["status"] == "skipped" and "no usable weights for the seg_4ch_cine model" in atria["reason"]
    assert "seg_4ch_cine" not in document["weights"]["tasks"]
    assert document["parts"]["myocardial_segments"]["status"] == "ok"
    # Without the phenotype classifier the disease class is the image model's, and says so.
    disease = document["parts"]["disease"]
    assert disease["status"] == "ok" and disease["results"]["method"] == "image model"
    assert any("no usable phenotype classifier" in note for note in disease["notes"])


def test_cli_writes_outputs_and_refuses_a_foreign_folder(damaged, tmp_path, capsys):
    status, out, _ = damaged
    assert (out / "measurements.csv").is_file() and list((out / "labels").glob("*.nii.gz"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("do not touch")
    capsys.readouterr()
    assert cmrfm(["analyze", str(tmp_path), "--out", str(foreign)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.docx"]
    with pytest.raises(OutputFolderError):
        write_outputs(None, foreign)


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NothingToAnalyze, match="no image stack could be read from .*empty"):
        analyze_study(empty)
    assert cmrfm(["analyze", str(empty), "--out", str(tmp_path / "out")]) == 1
    assert "no image stack" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cancel_stops_between_steps(sample_stacks):
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) >= 3  # read, first stack classified, then stop

    with pytest.raises(Cancelled, match="cancelled"):
        analyze_study(sample_stacks[0], AnalysisOptions(device="cpu"), cancel=cancel)
    assert len(asked) == 3


# --- small pieces --------------------------------------------------------------------------------


def test_header_guess_rules():
    def guess(frames=1, **header):
        return guess_from_header(SeriesInfo(**header), frames)

    cine = guess(25, series_description="SA_tfisp_retro")
    assert (cine.image_type, cine.view) == ("cine", "sax")
    assert guess(1, series_description="cine_4ch").image_type is None  # one frame is no cine
    assert guess(1, protocol_name="ShMOLLI_192i").image_type == "t1"
    assert guess(1, image_type=("DERIVED", "PRIMARY", "T2 MAP")).image_type == "t2"
    assert guess(1, series_description="sax", inversion_time=300.0, scanning_sequence=("GR", "IR")).image_type == "lge"
    assert guess(1, series_description="PSIR_4ch").view == "4ch"
    assert guess(1, series_description="series 12").image_type is None


def test_slices_keep_their_true_position_when_one_is_missing(sample_stacks, sample_roles):
    """Insertion points move between stacks through patient space, so a missing slice must not shift the rest."""
    number = sample_roles["cine_sax"]
    full = next(s for s in sample_stacks[0] if s.info.series_number == number)
    keep = [k for k in range(full.n_slices) if k != 6]
    gappy = ImageStack(full.pixels[keep], full.ijk_to_lps, full.info, slice_positions=full.slice_positions[keep])
    np.testing.assert_allclose(gappy.slice_origins_lps(), full.slice_origins_lps()[keep], atol=1e-6)
    points = np.full((full.n_slices, 1, 2), 20.0)  # (row, col) 20, 20 in every slice
    np.testing.assert_allclose(gappy.pixel_points_to_lps(points[keep]), full.pixel_points_to_lps(points)[keep], atol=1e-6)
    on_the_grid = full.ijk_to_lps_points([[20, 20, k] for k in range(full.n_slices)])
    np.testing.assert_allclose(full.pixel_points_to_lps(points)[:, 0], on_the_grid, atol=1e-3)


def test_slice_gaps_are_found():
    def stack(positions):
        grid = geometry_matrix(np.zeros(3), [1, 0, 0], [0, 1, 0], np.ones(3) * 8)
        return ImageStack(np.zeros((len(positions), 1, 4, 4)), grid, slice_positions=np.array(positions, float))

    assert slice_gap_findings(stack([0, 8, 16, 24])) == []
    (missing,) = slice_gap_findings(stack([0, 8, 24, 32]))
    assert "slices 2 and 3" in missing and "1 slice(s) missing" in missing  # the 2nd and 3rd, counted from 1
    (extra,) = slice_gap_findings(stack([0, 8, 10, 16, 24]))
    assert "extra or repeated" in extra
