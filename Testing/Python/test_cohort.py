"""Cohort runs (CMRFoundationLib.cohort, ``cmrfm batch``) on tiny studies: the inputs (folder,
manifest, Slicer DICOM database), the cohort table, the skip/redo/retry rules and the command
on a real Dask LocalCluster.

A tiny study is a 3-slice NIfTI of noise: the analysis reads it, classifies it with the real
models and writes its outputs in about a second (no part finds its series), which is what a
run's bookkeeping needs. The whole-study runs, killed and resumed, are in test_cohort_kill.py.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from CMRFoundationLib import __version__
from CMRFoundationLib.analysis import AnalysisOptions
from CMRFoundationLib.cohort import (
    MARKER,
    TABLE_CSV,
    TABLE_PARQUET,
    CohortError,
    Settings,
    Study,
    StudyListError,
    analyze_one,
    find_studies,
    run_serial,
    weights_sha256,
)
from CMRFoundationLib.cohort.run import LOCK_FILE
from CMRFoundationLib.cohort.studies import DATABASE_FILE, database_files
from CMRFoundationLib.cohort.study import _MODELS
from CMRFoundationLib.cohort.table import CohortTable, analysis_values
from CMRFoundationLib.dicom import write_mr_series
from CMRFoundationLib.stack import SeriesInfo
from CMRFoundationLib.volume_io import read_any, write_volume
from CMRFoundationLib.weights import DEFAULT_WEIGHTS_DIR, approve_folder
from conftest import REPO

CPU = AnalysisOptions(device="cpu")


def tiny_study(path, seed: int = 0):
    rng = np.random.default_rng(seed)
    write_volume((rng.random((3, 24, 24)) * 100).astype(np.float32), np.diag([1.5, 1.5, 8.0, 1.0]), path)
    return path


def read_table(out) -> dict[str, dict]:
    with open(out / TABLE_CSV, newline="", encoding="utf-8") as handle:
        return {row["study"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def manifest(tmp_path):
    """A manifest of two tiny studies (with subject and covariates) and one path that does not exist."""
    folder = tmp_path / "data"
    folder.mkdir()
    tiny_study(folder / "one.nii.gz", 1)
    tiny_study(folder / "two.nii.gz", 2)
    path = folder / "cohort.csv"
    path.write_text("path,subject_id,age,site\none.nii.gz,S1,61,Leeds\ntwo.nii.gz,S2,,Oxford\nmissing.nii.gz,S3,70,Leeds\n")
    return path


# --- the inputs ---------------------------------------------------------------------------------


def test_a_folder_of_studies_is_one_study_per_visible_subfolder(tmp_path):
    for name in ("b visit", "a", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not a study")
    studies = find_studies(tmp_path)
    assert [(s.id, s.source) for s in studies] == [("a", str(tmp_path / "a")), ("b_visit", str(tmp_path / "b visit"))]


def test_a_manifest_gives_paths_subjects_and_covariates(manifest):
    studies = find_studies(manifest)
    assert [s.id for s in studies] == ["one.nii.gz", "two.nii.gz", "missing.nii.gz"]
    assert studies[0].source == str(manifest.parent / "one.nii.gz")  # relative to the manifest
    assert studies[0].subject_id == "S1" and studies[0].covariates == (("age", "61"), ("site", "Leeds"))


def test_manifest_names_that_clash_come_from_the_paths_and_duplicate_ids_are_refused(tmp_path):
    for visit in ("p1/visit2", "p1/visit3"):
        (tmp_path / visit / "DICOM").mkdir(parents=True)
    (tmp_path / "m.csv").write_text("path\np1/visit2/DICOM\np1/visit3/DICOM\n")
    assert [s.id for s in find_studies(tmp_path / "m.csv")] == ["visit2__DICOM", "visit3__DICOM"]
    (tmp_path / "dup.csv").write_text("path,study_id\np1/visit2/DICOM,x\np1/visit3/DICOM,x\n")
    with pytest.raises(StudyListError, match="two studies are named 'x'"):
        find_studies(tmp_path / "dup.csv")
    (tmp_path / "bad.csv").write_text("folder\np1\n")
    with pytest.raises(StudyListError, match="'path' column"):
        find_studies(tmp_path / "bad.csv")


def make_ctk_database(folder, studies: dict[str, tuple[str, list[str]]]) -> None:
    """A Slicer DICOM database (the tables and columns of CTK's dicom-schema.sql that are read):
    StudyInstanceUID -> (PatientID, file names as stored: relative to the folder, or absolute)."""
    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / DATABASE_FILE) as db:
        db.executescript(
            "CREATE TABLE Images (SOPInstanceUID VARCHAR(64) NOT NULL, Filename VARCHAR(1024) NOT NULL, "
            "SeriesInstanceUID VARCHAR(64) NOT NULL, InsertTimestamp VARCHAR(20) NOT NULL, PRIMARY KEY (SOPInstanceUID));"
            "CREATE TABLE Patients (UID INTEGER PRIMARY KEY AUTOINCREMENT, PatientsName VARCHAR(255) NULL, "
            "PatientID VARCHAR(255) NULL, InsertTimestamp VARCHAR(20) NOT NULL);"
            "CREATE TABLE Studies (StudyInstanceUID VARCHAR(64) NOT NULL, PatientsUID INT NOT NULL, "
            "StudyDate DATE NULL, PRIMARY KEY (StudyInstanceUID));"
            "CREATE TABLE Series (SeriesInstanceUID VARCHAR(64) NOT NULL, StudyInstanceUID VARCHAR(64) NOT NULL, "
            "SeriesNumber INT NULL, PRIMARY KEY (SeriesInstanceUID));")
        for study_uid, (patient, files) in studies.items():
            patient_uid = db.execute("INSERT INTO Patients (PatientID, InsertTimestamp) VALUES (?, '')", (patient,)).lastrowid
            db.execute("INSERT INTO Studies VALUES (?, ?, NULL)", (study_uid, patient_uid))
            db.execute("INSERT INTO Series VALUES (?, ?, 1)", (study_uid + ".1", study_uid))
            for i, name in enumerate(files):
                db.execute("INSERT INTO Images VALUES (?, ?, ?, '')", (f"{study_uid}.1.{i}", name, study_uid + ".1"))


def test_a_slicer_dicom_database_is_one_study_per_study_uid_with_its_files(tmp_path):
    database = tmp_path / "SlicerDICOMDatabase"
    make_ctk_database(database, {"1.2.3": ("P1", ["dicom/1.2.3/a.dcm", "/elsewhere/linked.dcm"]),
                                 "1.2.4": ("P2", ["dicom/1.2.4/b.dcm"])})
    studies = find_studies(database)
    assert [(s.id, s.subject_id) for s in studies] == [("1.2.3", "P1"), ("1.2.4", "P2")]
    assert "1.2.3" in studies[0].where and str(database) in studies[0].where
    # copied files are stored relative to the database folder, linked ones with their own path
    assert database_files(database, "1.2.3") == ["/elsewhere/linked.dcm", str(database / "dicom/1.2.3/a.dcm")]


def test_a_study_read_from_files_in_several_folders_is_one_stack(tmp_path):
    """A database study's files can lie anywhere: read as one study, not folder by folder."""
    pixels = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32) * 100
    write_mr_series(tmp_path / "series", pixels, np.diag([1.5, 1.5, 8.0, 1.0]), SeriesInfo(series_number=5))
    files = sorted(str(p) for p in (tmp_path / "series").rglob("*.dcm"))
    for i, path in enumerate(files[:2]):  # half of the files elsewhere, as linked files are
        (tmp_path / f"other{i}").mkdir()
        files[i] = shutil.move(path, tmp_path / f"other{i}" / os.path.basename(path))
    stacks, problems = read_any([*map(str, files), str(tmp_path / "gone.dcm")])
    assert [s.pixels.shape[0] for s in stacks] == [4]
    assert [p.reason for p in problems] == ["path does not exist"]


# --- the table ----------------------------------------------------------------------------------


def test_table_keeps_implausible_values_out_of_their_columns_and_counts_flags():
    """A cohort's averages must not take in a number the analysis flagged: listed apart."""
    document = {"study": {"study_uid": "1.2"}, "measurements": [
        {"name": "lv_ef", "value": 99.6, "segment": None, "check": "outside the plausible 5-90 %"},
        {"name": "lv_edv", "value": 150.0, "segment": None, "check": None},
        {"name": "wall_thickness", "value": 7.5, "segment": 3, "check": None},
    ], "flags": [{"severity": "warning", "code": "implausible_value"}, {"severity": "error", "code": "part_not_done"},
                 {"severity": "warning", "code": "implausible_value"}, {"severity": "info", "code": "series_not_used"}]}
    values = analysis_values(document)
    assert "lv_ef" not in values and values["implausible"] == "lv_ef=99.6"
    assert values["lv_edv"] == 150.0 and values["wall_thickness_seg03"] == 7.5 and values["study_uid"] == "1.2"
    assert (values["errors"], values["warnings"]) == (1, 2)
    assert values["quality_flags"] == "implausible_value; part_not_done"


def test_table_csv_and_parquet_hold_the_same_rows_typed(tmp_path, manifest):
    pq = pytest.importorskip("pyarrow.parquet")
    table = CohortTable(tmp_path, find_studies(manifest))
    table.update({"study": "one.nii.gz", "status": "done", "attempts": 1, "seconds": 2.5, "analysed_in_this_run": True,
                  "lv_edv": 150.25, "wall_thickness_seg03": 7.5})
    table.update({"study": "missing.nii.gz", "status": "failed", "failure_reason": "NothingToAnalyze: gone", "attempts": 3})
    table.write()
    rows = read_table(tmp_path)
    parquet = pq.read_table(tmp_path / TABLE_PARQUET)
    assert parquet.column_names == list(next(iter(rows.values())))
    assert [r["status"] for r in rows.values()] == ["done", "pending", "failed"]
    by_study = {r["study"]: r for r in parquet.to_pylist()}
    assert by_study["one.nii.gz"]["lv_edv"] == float(rows["one.nii.gz"]["lv_edv"]) == 150.25
    assert by_study["one.nii.gz"]["wall_thickness_seg03"] == 7.5 and by_study["two.nii.gz"]["lv_edv"] is None
    assert by_study["missing.nii.gz"]["failure_reason"] == rows["missing.nii.gz"]["failure_reason"] == "NothingToAnalyze: gone"
    assert by_study["one.nii.gz"]["age"] == 61.0 and by_study["two.nii.gz"]["age"] is None  # a numeric covariate
    assert by_study["one.nii.gz"]["site"] == "Leeds"
    assert parquet.schema.field("lv_edv").metadata == {b"unit": b"ml"}
    assert parquet.schema.field("attempts").type == "int64" and parquet.schema.field("analysed_in_this_run").type == "bool"


# --- one study on a worker ------------------------------------------------------------------------


def test_a_worker_loads_each_model_once_for_all_its_studies(tmp_path):
    first = analyze_one(Study("one", str(tiny_study(tmp_path / "one.nii.gz", 1))), str(tmp_path), Settings(CPU))
    models = next(cached for key, cached in _MODELS.items() if key[0] == first["weights_sha256"] and key[1] == "cpu")
    loaded = dict(models)
    assert {"image_type", "cine_view"} <= set(loaded)
    analyze_one(Study("two", str(tiny_study(tmp_path / "two.nii.gz", 2))), str(tmp_path), Settings(CPU))
    assert all(models[task] is predictor for task, predictor in loaded.items())  # the same objects: not loaded again
    document = json.loads((tmp_path / "two" / "analysis.json").read_text())
    assert set(document["weights"]["tasks"]) == {"image_type", "cine_view"}  # what this study used, nothing else
    marker = json.loads((tmp_path / "two" / MARKER).read_text())
    assert marker["weights_sha256"] == weights_sha256(None) and marker["software_version"] == __version__
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_a_study_over_its_time_is_retried_then_failed_with_the_reason_and_nothing_written(tmp_path):
    tiny = tiny_study(tmp_path / "slow.nii.gz")
    messages = []
    result = run_serial([Study("slow", str(tiny))], tmp_path / "out", CPU, retries=2, timeout_s=1e-6,
                        log=messages.append)
    (row,) = result.rows
    assert row["status"] == "failed" and row["attempts"] == 3
    assert row["failure_reason"].startswith("StudyTimeout: no result within 1e-06 s")
    assert sum("slow: attempt" in m for m in messages) == 3 and "trying again" in messages[-3]
    assert not (tmp_path / "out" / "slow").exists()
    assert read_table(tmp_path / "out")["slow"]["status"] == "failed"


def test_rerun_skips_finished_studies_and_redoes_them_when_the_weights_change(tmp_path):
    studies = [Study(name, str(tiny_study(tmp_path / f"{name}.nii.gz", i))) for i, name in enumerate(("a", "b"))]
    out = tmp_path / "out"
    run_serial(studies, out, CPU, log=lambda m: None)
    stamps = {s.id: (out / s.id / MARKER).stat().st_mtime_ns for s in studies}

    messages = []
    again = run_serial(studies, out, CPU, log=messages.append)
    assert (again.done_before, again.done) == (2, 0) and "2 done before (skipped), 0 to analyse" in messages[0]
    assert {s.id: (out / s.id / MARKER).stat().st_mtime_ns for s in studies} == stamps
    assert [r["analysed_in_this_run"] for r in again.rows] == [False, False]

    weights = tmp_path / "weights"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, weights)
    manifest = json.loads((weights / "cine_view.json").read_text())
    (weights / "cine_view.json").write_text(json.dumps({**manifest, "note": "retrained"}))
    approve_folder(weights)  # as after training: the changed folder is trusted
    messages = []
    redone = run_serial(studies, out, AnalysisOptions(device="cpu", weights_dir=weights), log=messages.append)
    assert redone.done == 2 and all(r["weights_sha256"] == weights_sha256(weights) for r in redone.rows)
    assert any(m.startswith("2 of them were analysed with other settings") and "weights_sha256" in m for m in messages)


def test_one_run_per_output_folder(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running batch holds it
        with pytest.raises(CohortError, match="another batch run is writing into"):
            run_serial([], out, CPU)


# --- cmrfm batch on a LocalCluster ----------------------------------------------------------------


@pytest.mark.slow  # two runs of the command, each starting a LocalCluster whose worker loads torch and models
def test_cmrfm_batch_runs_a_manifest_on_dask_and_a_rerun_retries_only_what_failed(manifest, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "CMRFoundationLib.cli", "batch", str(manifest), str(out), "--device", "cpu",
               "--workers", "1", "--dashboard-address", ":0", "--table-interval", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # a study failed
    assert "3 studies: 0 done before (skipped), 3 to analyse" in done.stderr
    assert "Dask: 1 worker(s), 1 thread(s); dashboard: http://" in done.stderr
    assert "3/3" in done.stderr and "done 2, failed 1" in done.stderr  # the progress bar's last state
    rows = read_table(out)
    assert [rows[s]["status"] for s in ("one.nii.gz", "two.nii.gz", "missing.nii.gz")] == ["done", "done", "failed"]
    assert rows["missing.nii.gz"]["attempts"] == "3" and "NothingToAnalyze" in rows["missing.nii.gz"]["failure_reason"]
    assert rows["one.nii.gz"]["subject_id"] == "S1" and rows["one.nii.gz"]["site"] == "Leeds"
    assert rows["one.nii.gz"]["software_version"] == __version__ and len(rows["one.nii.gz"]["weights_sha256"]) == 64
    for name in ("one.nii.gz", "two.nii.gz"):
        assert {"analysis.json", "measurements.csv", "report.html", MARKER} <= {p.name for p in (out / name).iterdir()}
    stamp = (out / "one.nii.gz" / MARKER).stat().st_mtime_ns

    again = subprocess.run(command + ["--no-progress"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert again.returncode == 1 and "3 studies: 2 done before (skipped), 1 to analyse" in again.stderr
    assert (out / "one.nii.gz" / MARKER).stat().st_mtime_ns == stamp
    assert read_table(out)["one.nii.gz"]["analysed_in_this_run"] == "no"


def test_cmrfm_batch_refuses_an_input_that_is_no_study_list(tmp_path):
    done = subprocess.run([sys.executable, "-m", "CMRFoundationLib.cli", "batch", str(tmp_path / "nothing"),
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "neither a folder of studies" in done.stderr


def test_the_in_process_run_needs_no_dask_tqdm_or_pyarrow(tmp_path):
    """The Slicer batch runs in Slicer's Python, which has none of them: the table is then a CSV alone."""
    tiny = tiny_study(tmp_path / "one.nii.gz")
    code = ("import sys\n"
            "for name in ('dask', 'distributed', 'tqdm', 'pyarrow'):\n"
            "    sys.modules[name] = None  # as if not installed: importing it raises ImportError\n"
            "from CMRFoundationLib.analysis import AnalysisOptions\n"
            "from CMRFoundationLib.cohort import Study, run_serial\n"
            f"result = run_serial([Study('one', {str(tiny)!r})], {str(tmp_path / 'out')!r}, AnalysisOptions(device='cpu'))\n"
            "assert result.done == 1, result.rows\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_table(tmp_path / "out")["one"]["status"] == "done" and not (tmp_path / "out" / TABLE_PARQUET).exists()
