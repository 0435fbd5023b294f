"""The batch script over a folder of studies: a run killed midway, then resumed.

One flow (the analyses are the slow part): the script runs in a subprocess with plain
Python over two studies and a broken folder and is killed (SIGKILL) as soon as the first
study is complete; the re-run (in-process) must skip the finished study, redo the
interrupted one, record the broken one as failed and keep going. The script runs the
library's cohort code in one process (CMRFoundationLib.cohort.run_serial), adding the
Slicer files to each study.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("slicer")

from CMRFoundationLib.analysis import AnalysisOptions  # noqa: E402
from CMRFoundationLib.cohort import MARKER, TABLE_CSV  # noqa: E402
from CMRFoundationLib.cohort.study import PARTIAL_PREFIX  # noqa: E402
from CMRFoundationLib.scene import read_markups, read_scene_bundle, read_segmentation  # noqa: E402
from CMRFoundationLib.scene.batch import run_batch  # noqa: E402
from conftest import REPO  # noqa: E402

pytestmark = pytest.mark.slow  # two whole analyses, one of them in a subprocess

SCRIPT = REPO / "Resources" / "Scripts" / "batch_analyze.py"


@pytest.fixture(scope="module")
def batch(sample_study, tmp_path_factory):
    """(studies folder, output folder, state after the kill, outcomes of the re-run)."""
    studies = tmp_path_factory.mktemp("studies")
    for name in ("a_study", "b_study"):
        shutil.copytree(sample_study / "DICOM", studies / name)
    (studies / "c_broken").mkdir()
    (studies / "c_broken" / "image.dcm").write_bytes(b"not a DICOM file")
    out = tmp_path_factory.mktemp("batch") / "out"

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # this checkout's library, not an installed one
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(studies), str(out), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while not (out / "a_study" / MARKER).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0].decode()[-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # in the middle of the second study
    process.wait()
    killed = {"entries": sorted(p.name for p in out.iterdir()), "a_marker": (out / "a_study" / MARKER).stat().st_mtime_ns}

    messages = []
    rows = run_batch(studies, out, AnalysisOptions(device="cpu"), progress=messages.append)
    return studies, out, killed, rows, messages


def test_the_killed_run_left_no_half_study(batch):
    _, _, killed, _, _ = batch
    assert "a_study" in killed["entries"] and "b_study" not in killed["entries"]


def test_the_rerun_skips_the_finished_study_and_completes_the_rest(batch):
    _, out, killed, rows, messages = batch
    by_study = {row["study"]: row for row in rows}
    assert list(by_study) == ["a_study", "b_study", "c_broken"]
    assert by_study["a_study"]["status"] == "done" and not by_study["a_study"]["analysed_in_this_run"]
    assert (out / "a_study" / MARKER).stat().st_mtime_ns == killed["a_marker"]  # not redone
    assert "3 studies: 1 done before (skipped), 2 to analyse" in messages[0]
    assert by_study["b_study"]["status"] == "done" and by_study["b_study"]["analysed_in_this_run"]
    assert by_study["c_broken"]["status"] == "failed" and "NothingToAnalyze" in by_study["c_broken"]["failure_reason"]
    assert not [p for p in out.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    assert not (out / "c_broken").exists()  # a failed study leaves nothing, so the next run tries again


def test_cohort_table_has_status_measurements_and_reasons(batch):
    _, out, _, _, _ = batch
    with open(out / TABLE_CSV, newline="") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"a_study", "b_study", "c_broken"}
    for name in ("a_study", "b_study"):
        document = json.loads((out / name / "analysis.json").read_text())
        lv_ef = next(m["value"] for m in document["measurements"] if m["name"] == "lv_ef")
        assert rows[name]["status"] == "done" and float(rows[name]["lv_ef"]) == pytest.approx(lv_ef, rel=1e-12)
        assert rows[name]["failure_reason"] == ""
    assert rows["a_study"]["analysed_in_this_run"] == "no" and rows["b_study"]["analysed_in_this_run"] == "yes"
    assert rows["c_broken"]["status"] == "failed" and rows["c_broken"]["failure_reason"] and rows["c_broken"]["lv_ef"] == ""


@pytest.mark.parametrize("study", ["a_study", "b_study"])
def test_each_study_has_its_scene_segmentations_landmarks_csv_and_report(batch, study):
    _, out, _, _, _ = batch
    folder = out / study
    for name in ("measurements.csv", "report.html", "analysis.json", "scene.mrb", MARKER):
        assert (folder / name).is_file(), name
    segs = sorted((folder / "slicer").glob("*.seg.nrrd"))
    assert any("seg_sax_cine_frame" in p.name for p in segs) and any("seg_lge" in p.name for p in segs)
    scene = read_scene_bundle(folder / "scene.mrb")
    for path in segs:
        assert read_segmentation(scene, path).GetSegmentation().GetNumberOfSegments() >= 2
    (markups,) = (folder / "slicer").glob("*.mrk.json")
    assert read_markups(scene, markups).GetNumberOfControlPoints() > 0
    assert scene.GetFirstNodeByClass("vtkMRMLTableNode") is not None
    assert scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode") is not None
