"""Output locations that cannot take the results: unwritable folders and full disks.

Each is refused with one clear line before the work where it can be known (a real file is
created to probe, the free space is compared with an estimate), and a disk that fills up
while writing ends in the same one line, the outputs left marked incomplete and completed
by a re-run. A full disk is simulated (the free space reported, or a write failing with
ENOSPC as the system reports it); an unwritable folder is real.
"""

import csv
import errno
import json
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest

import CMRFoundationLib.analysis as analysis_package
from CMRFoundationLib import files
from CMRFoundationLib.analysis import AnalysisOptions, StudyAnalysis
from CMRFoundationLib.analysis import outputs as outputs_module
from CMRFoundationLib.cli import main as cmrfm
from CMRFoundationLib.files import OutputLocationError, check_output_location

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def no_analysis(monkeypatch):
    """The analysis must not start: the output location is refused before it."""

    def never(*args, **kwargs):
        raise AssertionError("the analysis started although the output location cannot take its results")

    monkeypatch.setattr(analysis_package, "analyze_study", never)


def _full_disk(monkeypatch, free=0, failing_write=False):
    """The disk reports ``free`` bytes; with ``failing_write`` a write of data fails with ENOSPC too."""
    real = shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: Usage(real(path).total, real(path).total, free))
    if failing_write:
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(files.os, "fsync", fsync)


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_the_probe_leaves_nothing_behind(tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    check_output_location(tmp_path / "new" / "out", need_bytes=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]  # not even the folder: created when written


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder in which no file can be created: chmod for a user; for root, whom permission
    bits do not stop, the immutable attribute (chattr +i, Linux), else the test is skipped."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if getattr(os, "geteuid", lambda: 1)() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    else:
        pytest.skip("running as root, whom permission bits do not stop, and chattr +i is not available")
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            yield folder
        else:
            pytest.skip("this file system lets anyone write into the folder")
    finally:
        undo()


def test_an_unwritable_output_folder_is_refused_before_the_work(read_only_folder, tmp_path, capsys, no_analysis):
    out = read_only_folder / "out"
    assert cmrfm(["analyze", str(tmp_path), "--out", str(out), "--progress-format", "json"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert f"error: {out}: cannot write there" in captured.err
    [event] = [json.loads(line) for line in captured.out.splitlines()]  # the error event, no progress
    assert event["event"] == "error" and event["exit_code"] == 2
    assert list(read_only_folder.iterdir()) == []


@pytest.mark.parametrize("failing_write", [False, True], ids=["no_free_space", "write_fails_with_ENOSPC"])
def test_a_full_disk_is_refused_before_the_work(tmp_path, monkeypatch, capsys, no_analysis, failing_write):
    _full_disk(monkeypatch, free=1000, failing_write=failing_write)
    assert cmrfm(["analyze", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'out'}: no space left on its disk" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_too_little_space_for_the_estimate_is_refused_before_the_work(tmp_path, monkeypatch, capsys, no_analysis):
    study = tmp_path / "study"
    study.mkdir()
    with open(study / "image.dcm", "wb") as handle:
        handle.truncate(40_000_000)  # outputs about half of it, and 16 MB more
    _full_disk(monkeypatch, free=30_000_000)
    assert cmrfm(["analyze", str(study), "--out", str(tmp_path / "out")]) == 2
    assert "only 30 MB free on its disk, the results need about 36 MB" in _one_error(capsys)


def test_cmrfm_predict_refuses_a_full_disk_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from CMRFoundationLib.inference import TaskPredictor

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although its results cannot be written")

    monkeypatch.setattr(TaskPredictor, "load", never)
    _full_disk(monkeypatch)
    assert cmrfm(["predict", "seg_lge", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no space left on its disk" in _one_error(capsys)


def _fill_up_while_writing(monkeypatch, error):
    """The disk fills up when measurements.csv is written: ``error`` is what the writer raises."""

    def write_csv(rows, path):
        _full_disk(monkeypatch)
        raise error

    monkeypatch.setattr(outputs_module, "_write_csv", write_csv)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("vtkNRRDWriter: failed to write")],  # as VTK and ITK say it
                         ids=["ENOSPC", "writer_without_errno"])
def test_a_disk_that_fills_up_while_writing_gives_one_line_and_a_resumable_state(tmp_path, monkeypatch, capsys,
                                                                                 error):
    out = tmp_path / "out"
    monkeypatch.setattr(analysis_package, "analyze_study",
                        lambda *args, **kwargs: StudyAnalysis(str(tmp_path), AnalysisOptions()))
    _fill_up_while_writing(monkeypatch, error)
    assert cmrfm(["analyze", str(tmp_path), "--out", str(out), "--progress-format", "json"]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert f"{out}: no space left on its disk" in captured.err and "run again to complete it" in captured.err
    [event] = [json.loads(line) for line in captured.out.splitlines()]
    assert event["event"] == "error" and event["exit_code"] == 1
    assert json.loads((out / "analysis.json").read_text())["complete"] is False  # never taken for a finished one

    monkeypatch.undo()  # space freed: the same command completes the folder
    monkeypatch.setattr(analysis_package, "analyze_study",
                        lambda *args, **kwargs: StudyAnalysis(str(tmp_path), AnalysisOptions()))
    assert cmrfm(["analyze", str(tmp_path), "--out", str(out)]) == 0
    assert json.loads((out / "analysis.json").read_text())["complete"] is True


def test_the_marker_of_an_interrupted_analysis_is_never_half_written(tmp_path, monkeypatch):
    """A full disk at the very first write leaves no empty analysis.json, which would make the
    folder look like someone else's and be refused on the re-run."""
    def no_room(path, *args, **kwargs):  # as on a full disk: the file is created, its text does not fit
        open(path, "w").close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_room)
    with pytest.raises(OSError):
        outputs_module.write_outputs(StudyAnalysis(str(tmp_path), AnalysisOptions()), tmp_path / "out")
    assert not (tmp_path / "out" / "analysis.json").exists()
    monkeypatch.undo()
    outputs_module.check_output_folder(tmp_path / "out")  # still ours to write into


def test_a_batch_stops_with_one_message_when_the_disk_fills_up(tmp_path, monkeypatch):
    """Study a is done, the disk fills up while the scene of b is saved (VTK reports no reason):
    the batch stops with the disk's message, a is kept, b leaves no partial folder, c is not
    started, and a re-run once there is room does b and c."""
    from CMRFoundationLib.cohort import study as cohort_study
    from CMRFoundationLib.scene import batch
    from CMRFoundationLib.scene.files import SceneFileError

    studies = tmp_path / "studies"
    for name in ("a", "b", "c"):
        (studies / name).mkdir(parents=True)
    out = tmp_path / "out"
    analysed = []

    def analyse(study, options, **kwargs):
        analysed.append(Path(study).name)
        return StudyAnalysis(str(study), AnalysisOptions())

    def save_bundle(scene, path):
        if ".partial-b-" in str(path):
            _full_disk(monkeypatch)
            raise SceneFileError(f"{path}: the scene could not be written as a data bundle")
        Path(path).write_bytes(b"scene")

    monkeypatch.setattr(cohort_study, "analyze_study", analyse)
    monkeypatch.setattr(batch, "save_scene_bundle", save_bundle)
    with pytest.raises(OutputLocationError, match=r"no space left on its disk.*the batch stopped at b \(2 of 3\)"):
        batch.run_batch(studies, out, AnalysisOptions(device="cpu"), progress=lambda message: None)
    assert analysed == ["a", "b"]  # b not retried: the disk, not the study, failed
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a", "cohort.csv", "cohort.parquet"]
    assert (out / "a" / cohort_study.MARKER).is_file()
    rows = {row["study"]: row for row in csv.DictReader(open(out / "cohort.csv", encoding="utf-8"))}
    assert rows["b"]["status"] == "failed" and "no space left on its disk" in rows["b"]["failure_reason"]
    assert rows["c"]["status"] == "pending"

    monkeypatch.undo()
    monkeypatch.setattr(cohort_study, "analyze_study", analyse)
    monkeypatch.setattr(batch, "save_scene_bundle", lambda scene, path: Path(path).write_bytes(b"scene"))
    rows = batch.run_batch(studies, out, AnalysisOptions(device="cpu"), progress=lambda message: None)
    assert [(r["study"], r["status"], r["analysed_in_this_run"]) for r in rows] == [
        ("a", "done", False), ("b", "done", True), ("c", "done", True)]


def test_a_batch_into_a_place_that_cannot_be_a_folder_is_refused_before_any_study(tmp_path):
    from CMRFoundationLib.scene import batch

    (tmp_path / "studies" / "a").mkdir(parents=True)
    (tmp_path / "a file").write_text("not a folder")
    with pytest.raises(OutputLocationError, match="is not a folder"):
        batch.run_batch(tmp_path / "studies", tmp_path / "a file" / "out", progress=lambda message: None)
