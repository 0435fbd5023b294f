"""A cohort run on whole studies, killed and resumed (``cmrfm batch``, CMRFoundationLib.cohort).

One flow, as the analyses are the slow part. Studies, from a manifest: a tiny one (a NIfTI of
noise, analysed in a second), the sample study and a broken folder.

1. ``cmrfm batch`` (its embedded LocalCluster, one worker) is killed with SIGKILL as soon as
   the cohort table shows the first study done; its workers must die with it and no study
   may stand half-written under its name.
2. The re-run goes to an existing Dask cluster (``scheduler=``, a LocalCluster the test
   starts) and one of its workers is killed with SIGKILL while it analyses a study: Dask
   gives the study to a worker again and the run completes. The finished study is skipped,
   the broken one is retried, then recorded as failed, and the table holds every study.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

distributed = pytest.importorskip("distributed")

from CMRFoundationLib.analysis import AnalysisOptions  # noqa: E402
from CMRFoundationLib.cohort import MARKER, TABLE_CSV, TABLE_PARQUET, find_studies, run_cohort  # noqa: E402
from conftest import REPO  # noqa: E402
from test_cohort import tiny_study  # noqa: E402

pytestmark = pytest.mark.slow  # two whole-study analyses, one of them interrupted


def table(out) -> dict[str, dict]:
    try:
        with open(out / TABLE_CSV, newline="", encoding="utf-8") as handle:
            return {row["study"]: row for row in csv.DictReader(handle)}
    except FileNotFoundError:
        return {}


def wait_for(condition, seconds: float, what: str, process=None):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{process.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def runs(sample_study, tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies")
    tiny_study(folder / "a.nii.gz")
    (folder / "c_broken").mkdir()
    (folder / "c_broken" / "image.dcm").write_bytes(b"not a DICOM file")
    studies = folder / "manifest.csv"
    studies.write_text(f"path,study_id\na.nii.gz,a_study\n{sample_study / 'DICOM'},b_study\nc_broken,c_broken\n")
    out = tmp_path_factory.mktemp("cohort") / "out"

    # 1. The client killed mid-run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    client = subprocess.Popen([sys.executable, "-m", "CMRFoundationLib.cli", "batch", str(studies), str(out),
                               "--device", "cpu", "--workers", "1", "--table-interval", "0",
                               "--dashboard-address", ":0", "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    wait_for(lambda: table(out).get("a_study", {}).get("status") == "done", 600, "finished study in the table", client)
    workers = psutil.Process(client.pid).children(recursive=True)
    client.send_signal(signal.SIGKILL)
    client.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    killed = {"entries": sorted(p.name for p in out.iterdir()), "workers": len(workers), "alive": alive,
              "a_marker": (out / "a_study" / MARKER).stat().st_mtime_ns, "table": table(out)}

    # 2. The re-run on an existing cluster, one of whose workers is killed while it analyses.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as watcher:
        result = {}
        run = threading.Thread(target=lambda: result.update(run=run_cohort(
            find_studies(studies), out, AnalysisOptions(device="cpu"), scheduler=cluster.scheduler_address,
            table_interval_s=0, progress=False)))
        run.start()

        def analysing_b():
            return next((worker for worker, keys in watcher.processing().items()
                         if any(key[1] == "b_study" for key in keys)), None)

        worker = wait_for(analysing_b, 300, "worker analysing b_study")
        time.sleep(2)  # into the analysis
        pid = watcher.run(os.getpid, workers=[worker])[worker]
        b_done_at_kill = (out / "b_study").exists()
        os.kill(pid, signal.SIGKILL)
        run.join(timeout=600)
        assert not run.is_alive(), "the run did not finish after a worker was killed"
    return out, killed, {"pid": pid, "b_done_at_kill": b_done_at_kill}, result["run"]


def test_killing_the_client_kills_its_workers_and_leaves_no_half_study(runs):
    out, killed, _, _ = runs
    assert killed["workers"] >= 1 and killed["alive"] == []
    studies = [name for name in killed["entries"] if not name.startswith(".") and name not in (TABLE_CSV, TABLE_PARQUET)]
    assert "a_study" in studies and "b_study" not in studies
    # the table was written as the study finished, before the run was killed
    assert killed["table"]["a_study"]["status"] == "done" and killed["table"]["b_study"]["status"] == "pending"


def test_a_worker_killed_mid_study_and_the_run_still_completes(runs):
    out, _, kill, result = runs
    assert not kill["b_done_at_kill"] and not psutil.pid_exists(kill["pid"])
    by_study = {row["study"]: row for row in result.rows}
    assert by_study["b_study"]["status"] == "done" and by_study["b_study"]["analysed_in_this_run"]
    assert (out / "b_study" / MARKER).is_file()


def test_the_rerun_skips_the_finished_study_and_records_the_broken_one(runs):
    out, killed, _, result = runs
    assert (result.done_before, result.done, result.failed) == (1, 1, 1)
    by_study = {row["study"]: row for row in result.rows}
    assert not by_study["a_study"]["analysed_in_this_run"]
    assert (out / "a_study" / MARKER).stat().st_mtime_ns == killed["a_marker"]  # not redone
    broken = by_study["c_broken"]
    assert broken["status"] == "failed" and broken["attempts"] == 3 and "NothingToAnalyze" in broken["failure_reason"]
    assert not (out / "c_broken").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith((".partial-", ".old-"))]


def test_the_cohort_table_has_every_study_measurement_and_provenance(runs):
    pq = pytest.importorskip("pyarrow.parquet")
    out, _, _, _ = runs
    rows = table(out)
    parquet = {row["study"]: row for row in pq.read_table(out / TABLE_PARQUET).to_pylist()}
    assert list(rows) == list(parquet) == ["a_study", "b_study", "c_broken"]
    for name in ("a_study", "b_study"):  # a_study has no measurement: the parts found no series in its noise
        document = json.loads((out / name / "analysis.json").read_text())
        marker = json.loads((out / name / MARKER).read_text())
        for m in document["measurements"]:
            column = m["name"] if m["segment"] is None else f"{m['name']}_seg{m['segment']:02d}"
            if not m["check"]:
                assert float(rows[name][column]) == pytest.approx(m["value"], rel=1e-12), column
                assert parquet[name][column] == pytest.approx(m["value"], rel=1e-12), column
        assert rows[name]["status"] == "done" and rows[name]["failure_reason"] == ""
        assert rows[name]["weights_sha256"] == marker["weights_sha256"] and len(marker["weights_sha256"]) == 64
        assert rows[name]["software_version"] == document["software"]["version"]
        assert rows[name]["study_uid"] == document["study"]["study_uid"]
        warnings = sum(f["severity"] == "warning" for f in document["flags"])
        assert int(rows[name]["warnings"]) == parquet[name]["warnings"] == warnings
    assert rows["c_broken"]["lv_ef"] == "" and parquet["c_broken"]["lv_ef"] is None
