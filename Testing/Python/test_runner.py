"""The analysis run as a separate process (runner.py), as the Slicer module drives it.

Real ``cmrfm analyze`` processes on the session's sample study (conftest): progress
arrives in order and ends at 1.0 with a finished output, a cancel stops the process
within seconds, and failures come back with their reason. Stand-in "python" scripts
check the kill after the grace period and the reason taken from a traceback.

In Slicer the analysis runs under the PythonSlicer launcher, which starts the
interpreter as its own child; ``launcher`` here is such a process tree (a real wrapper
process that starts the command as its child and does not pass signals on, with stderr
merged into stdout as launchConsoleProcess does), to check that a cancel or kill stops
the analysis itself, not only its launcher.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from CMRFoundationLib.cli import main as cmrfm
from CMRFoundationLib.dicom import index_study, write_file_list
from CMRFoundationLib.runner import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    AnalysisRun,
    analysis_completeness,
    child_environment,
    new_output_folder,
    parse_series_choices,
)

RUN_TIMEOUT_S = 300  # a run takes about 10 s on 2 CPU cores; generous for a loaded machine

posix_only = pytest.mark.skipif(os.name != "posix", reason="stand-in interpreter is a shell script")


@pytest.fixture(scope="module")
def small_study(sample_study) -> Path:
    return sample_study / "DICOM"


def follow(run: AnalysisRun, until=None) -> list:
    """Poll like the module's timer; stop early (returning the events so far) when ``until(event)`` is true."""
    events, deadline = [], time.monotonic() + RUN_TIMEOUT_S
    while run.is_running and time.monotonic() < deadline:
        for event in run.poll():
            events.append(event)
            if until is not None and until(event):
                return events
        time.sleep(0.05)
    events += run.poll()
    return events


def fake_python(folder: Path, script: str) -> str:
    """An executable standing in for the interpreter (it ignores the arguments)."""
    path = folder / "fake_python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


LAUNCHER = """import subprocess, sys
# Like PythonSlicer: the real command runs as this process's child, and a SIGTERM ends this process only.
sys.exit(subprocess.call(sys.argv[1:]))
"""
STAND_IN_ANALYSIS = """import json, os, signal, sys, time
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "w") as handle:
    handle.write(str(os.getpid()))
print(json.dumps({"event": "progress", "phase": "read", "fraction": 0.01, "message": "reading"}), flush=True)
time.sleep(120)
"""


def launcher(folder: Path, child: list[str] | None = None):
    """A ``launch`` for AnalysisRun that starts the command (or ``child`` instead) under a launcher process."""
    (folder / "launcher.py").write_text(LAUNCHER)

    def launch(command):
        env = dict(os.environ, **child_environment(os.environ))
        return subprocess.Popen([sys.executable, str(folder / "launcher.py"), *(child or command)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    return launch


def stand_in_run(folder: Path, *options: str, grace_s: float = 5.0) -> tuple[AnalysisRun, Path]:
    """(a started run of the stand-in analysis under a launcher, the file its pid is written to)."""
    (folder / "analysis.py").write_text(STAND_IN_ANALYSIS)
    pid_file = folder / "analysis.pid"
    child = [sys.executable, str(folder / "analysis.py"), str(pid_file), *options]
    run = AnalysisRun(folder / "study", folder / "out", grace_s=grace_s, launch=launcher(folder, child))
    run.start()
    follow(run, until=lambda event: event.phase == "read")  # the analysis process is up
    assert run.is_running and pid_file.is_file()
    return run, pid_file


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_stops_the_analysis_under_its_launcher(tmp_path):
    run, pid_file = stand_in_run(tmp_path)
    analysis_pid = int(pid_file.read_text())
    run.cancel()
    follow(run)
    assert run.result.status == CANCELLED
    assert not alive(analysis_pid)


@posix_only  # on Windows terminate() is already a kill
def test_a_cancelled_run_runs_until_its_whole_tree_has_ended(tmp_path):
    """The launcher ends at once; the analysis, which ignores terminate, is killed after the grace period."""
    run, pid_file = stand_in_run(tmp_path, "--ignore-term", grace_s=1.0)
    analysis_pid = int(pid_file.read_text())
    asked = time.monotonic()
    run.cancel()
    time.sleep(0.5)
    assert run.is_running and alive(analysis_pid)  # its launcher has gone, the analysis has not
    follow(run)
    assert 0.9 < time.monotonic() - asked < 6
    assert run.result.status == CANCELLED and not alive(analysis_pid)


def test_kill_ends_the_tree_at_once_without_polling(tmp_path):
    """What the module does when Slicer closes: nobody polls afterwards."""
    run, pid_file = stand_in_run(tmp_path, "--ignore-term", grace_s=60)
    analysis_pid = int(pid_file.read_text())
    run.kill()
    assert not alive(analysis_pid)
    assert not run.is_running and run.result.status == CANCELLED


@pytest.mark.slow
def test_cancel_stops_a_real_analysis_under_its_launcher(small_study, tmp_path):
    run = AnalysisRun(small_study, tmp_path / "out", device="cpu", launch=launcher(tmp_path))
    run.start()
    follow(run, until=lambda event: event.phase == "classify")
    (analysis,) = psutil.Process(run._process.pid).children()  # the interpreter the launcher started
    assert "CMRFoundationLib.cli" in analysis.cmdline()
    run.cancel()
    follow(run)
    assert run.result.status == CANCELLED and not alive(analysis.pid)
    assert analysis_completeness(tmp_path / "out") is not True


@pytest.mark.slow
def test_a_real_analysis_under_its_launcher_reports_progress_and_finishes(small_study, tmp_path):
    """stderr merged into stdout (launchConsoleProcess): the events are still read, the rest is the log."""
    run = AnalysisRun(small_study, tmp_path / "out", device="cpu", launch=launcher(tmp_path))
    run.start()
    events = follow(run)
    assert run.result.status == SUCCEEDED, run.result.message + "\n" + run.result.log
    assert events[-1].fraction == 1.0 and events[-1].phase == "done"


@pytest.fixture(scope="module")
def finished_run(small_study, tmp_path_factory):
    """(run, its progress events) of a whole analysis of the small study."""
    run = AnalysisRun(small_study, tmp_path_factory.mktemp("runner") / "out", device="cpu")
    run.start()
    return run, follow(run)


@pytest.mark.slow
def test_run_reports_progress_in_order_and_writes_the_analysis(finished_run):
    run, events = finished_run
    result = run.result

    assert result.status == SUCCEEDED, result.message + "\n" + result.log
    assert result.exit_code == 0 and result.succeeded
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[0] < 0.1 and fractions[-1] == 1.0
    phases = [e.phase for e in events]
    assert phases[0] == "read" and phases[-1] == "done"
    assert phases.index("classify") < phases.index("function") < phases.index("write")
    assert analysis_completeness(result.out_dir) is True
    assert result.report_html == (result.out_dir / "report.html").resolve() and result.report_html.is_file()
    assert run.poll() == [] and not run.is_running


@pytest.mark.slow
def test_the_finished_run_loads_into_a_scene_as_the_module_does(finished_run, small_study):
    pytest.importorskip("slicer")
    from CMRFoundationLib.scene import load_analysis, new_scene

    scene = new_scene()
    load_analysis(scene, finished_run[0].result.out_dir, small_study)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") > 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") > 0


@pytest.mark.slow
def test_cancel_stops_the_run_quickly_and_leaves_no_finished_analysis(small_study, tmp_path):
    run = AnalysisRun(small_study, tmp_path / "out", device="cpu")
    run.start()
    follow(run, until=lambda event: event.phase == "classify")
    assert run.is_running
    asked = time.monotonic()
    run.cancel()
    follow(run)

    assert time.monotonic() - asked < 3
    assert run.result.status == CANCELLED and run.result.message.startswith("analysis cancelled")
    assert analysis_completeness(tmp_path / "out") is not True


@posix_only
def test_a_process_that_ignores_terminate_is_killed_after_the_grace_period(tmp_path):
    stubborn = fake_python(tmp_path, "trap '' TERM\nexec sleep 60\n")  # sleep inherits the ignored TERM
    run = AnalysisRun(tmp_path / "study", tmp_path / "out", python=stubborn, grace_s=0.5)
    run.start()
    time.sleep(0.3)  # let the shell set its trap
    asked = time.monotonic()
    run.cancel()
    follow(run)
    assert 0.4 < time.monotonic() - asked < 5
    assert run.result.status == CANCELLED


@pytest.mark.slow
@pytest.mark.parametrize("make_input, reason", [
    (lambda folder: folder / "no_such_study", "path does not exist"),
    (lambda folder: folder, "empty folder"),
])
def test_a_bad_study_fails_with_the_folder_and_the_reason(tmp_path, make_input, reason):
    study = make_input(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    run = AnalysisRun(study, tmp_path / "out", device="cpu")
    run.start()
    follow(run)
    assert run.result.status == FAILED and run.result.exit_code == 1
    assert str(study) in run.result.message and reason in run.result.message
    assert not (tmp_path / "out").exists()


@posix_only
def test_a_crash_reports_the_last_line_of_its_traceback(tmp_path):
    crashing = fake_python(tmp_path, "echo 'Traceback (most recent call last):' >&2\n"
                                     "echo 'RuntimeError: CUDA out of memory' >&2\nexit 1\n")
    run = AnalysisRun(tmp_path / "study", tmp_path / "out", python=crashing)
    run.start()
    follow(run)
    assert run.result.status == FAILED and run.result.message == "RuntimeError: CUDA out of memory"
    assert "Traceback" in run.result.log


def test_the_command_carries_every_choice(tmp_path):
    run = AnalysisRun("study", "out", weights_dir="w", device="cuda", lge_n_sd=3, series={"lge_sax": 10})
    command = run.command()
    assert command[:5] == [sys.executable, "-m", "CMRFoundationLib.cli", "analyze", "study"]
    joined = " ".join(command[5:])
    for part in ("--out out", "--device cuda", "--lge-n-sd 3.0", "--progress-format json", "--weights w",
                 "--series lge_sax=10"):
        assert part in joined


def test_json_progress_format_writes_only_events_on_stdout(tmp_path, capsys):
    assert cmrfm(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--progress-format", "json"]) == 1
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["progress", "error"]
    assert events[-1]["exit_code"] == 1 and "path does not exist" in events[-1]["message"]
    assert err.startswith("error: ")


@pytest.mark.slow
def test_database_files_are_read_where_they_are_through_a_file_list(small_study, tmp_path):
    files = sorted(p for p in small_study.rglob("*") if p.is_file())
    listed = write_file_list(files, tmp_path / "study")
    original, from_list = index_study(small_study), index_study(listed)
    assert [s.info.series_uid for s in from_list.stacks] == [s.info.series_uid for s in original.stacks]
    assert {ref[0] for s in from_list.stacks for row in s.frame_refs for ref in row} <= {str(f) for f in files}
    assert list(tmp_path.iterdir()) == [Path(listed)]  # nothing copied or linked
    with pytest.raises(FileNotFoundError, match="1 of 2 files"):
        write_file_list([files[0], tmp_path / "gone.dcm"], tmp_path / "other")
    assert not list(tmp_path.glob("other*"))


def test_output_folder_names_and_series_choices():
    when = datetime(2025, 3, 4, 5, 6, 7)
    assert new_output_folder("/data", "Doe^John / CMR", when) == Path("/data/Doe_John_CMR_20250304-050607")
    assert new_output_folder("/data", "..", when).name == "study_20250304-050607"
    assert parse_series_choices("cine_sax=6, lge_sax=10") == {"cine_sax": 6, "lge_sax": 10}
    assert parse_series_choices("  ") == {}
    with pytest.raises(ValueError, match="ROLE=SERIES_NUMBER"):
        parse_series_choices("lge_sax=ten")
