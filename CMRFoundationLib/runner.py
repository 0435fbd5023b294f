"""Run ``cmrfm analyze`` as a separate process and follow it without blocking.

The Slicer module must not freeze for the minutes an analysis takes, and a crash in
torch must not take Slicer down with it, so the analysis runs as its own process::

    python -m CMRFoundationLib.cli analyze STUDY --out DIR --progress-format json ...

and the caller polls it (in Slicer, from a QTimer)::

    run = AnalysisRun("study/DICOM", "out", device="cpu")
    run.start()
    while run.is_running:
        for event in run.poll():
            print(f"{event.fraction:4.0%} {event.message}")
        time.sleep(0.2)
    run.result          # RunResult: status, exit code, output folder, message (the reason of a failure)

The study is a folder (or one DICOM, NIfTI or NRRD file), as for ``cmrfm analyze``.
Files scattered over a DICOM database are analysed where they are, through a file list
(``CMRFoundationLib.dicom.write_file_list``), never copied.

In Slicer the command runs under the PythonSlicer launcher (``launch``: Slicer's
``slicer.util.launchConsoleProcess``), which starts the real interpreter as its own
child. Terminating the launcher leaves that child running, so ``cancel()`` terminates the
whole process tree (psutil) and kills what is left of it after a grace period; the run
counts as running until every process of the tree has ended. ``kill()`` does it at once,
for when nobody will poll again (Slicer closing). A run cancelled before writing leaves
its output folder as it was; one cancelled while writing leaves ``analysis.json`` with
``"complete": false`` (outputs.py writes that marker first), which the result's message
points out, so it is never taken for a finished analysis.

The runner needs the standard library and psutil, and sits outside ``analysis`` (whose
``__init__`` imports the pipeline, torch included): torch and the models load in the
child process only, never in Slicer's own.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # the folder holding CMRFoundationLib, for the child's PYTHONPATH
STDERR_LINES_KEPT = 200
STREAM_END_WAIT_S = 2.0  # after the process ends, how long its last output may take to arrive
KILL_WAIT_S = 5.0  # how long kill() waits for the killed processes to be gone


@dataclass(frozen=True)
class ProgressEvent:
    fraction: float  # of the whole run, 0..1, never decreasing
    message: str
    phase: str


@dataclass(frozen=True)
class RunResult:
    status: str  # SUCCEEDED, FAILED or CANCELLED
    exit_code: int | None
    out_dir: Path
    message: str  # one line for the user; on failure, the reason
    log: str  # the process's last stderr lines, for the details
    report_html: Path | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


class AnalysisRun:
    """One ``cmrfm analyze`` process: ``start()``, then ``poll()`` until ``is_running`` is False, then ``result``."""

    def __init__(self, study: str | os.PathLike, out_dir: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None,
                 device: str = "auto", lge_n_sd: float = 5.0, series: dict[str, int] | None = None,
                 python: str | None = None, grace_s: float = 5.0,
                 launch: Callable[[list[str]], subprocess.Popen] | None = None) -> None:
        self.study, self.out_dir = Path(study), Path(out_dir)
        self.weights_dir, self.device, self.lge_n_sd = weights_dir, device, lge_n_sd
        self.series = dict(series or {})
        self.python = python or sys.executable  # in Slicer: PythonSlicer
        self.grace_s = grace_s
        # Starts the command and returns its Popen (stdout a text pipe; stderr a pipe, or merged into stdout).
        self.launch = launch or _launch
        self._process: subprocess.Popen | None = None
        self._tree: dict = {}  # pid -> psutil.Process: every process of the run seen since cancel()
        self._lines: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._pending: list[ProgressEvent] = []
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._error_message: str | None = None
        self._report_html: Path | None = None
        self._fraction = 0.0
        self._kill_at: float | None = None
        self._result: RunResult | None = None

    def command(self) -> list[str]:
        command = [self.python, "-m", "CMRFoundationLib.cli", "analyze", str(self.study), "--out", str(self.out_dir),
                   "--device", self.device, "--lge-n-sd", repr(float(self.lge_n_sd)), "--progress-format", "json"]
        if self.weights_dir:
            command += ["--weights", str(self.weights_dir)]
        for role, number in self.series.items():
            command += ["--series", f"{role}={number}"]
        return command

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("this run has already been started; make a new AnalysisRun")
        self._process = self.launch(self.command())
        for name, stream in (("stdout", self._process.stdout), ("stderr", self._process.stderr)):
            if stream is None:  # launchConsoleProcess merges stderr into stdout
                continue
            reader = threading.Thread(target=_read_lines, args=(stream, name, self._lines), daemon=True)
            reader.start()
            self._readers.append(reader)

    @property
    def is_running(self) -> bool:
        """True until the process has ended (after a cancel: every process of its tree)."""
        self._collect()
        return self._process is not None and self._result is None

    @property
    def result(self) -> RunResult | None:
        """The outcome once the process has ended (None while it runs)."""
        self._collect()
        return self._result

    def poll(self) -> list[ProgressEvent]:
        """The progress events that arrived since the last call, in order."""
        self._collect()
        events, self._pending = self._pending, []
        return events

    def cancel(self) -> None:
        """Ask the process tree to stop; what is left of it ``grace_s`` later is killed (checked when polled)."""
        if self._process is None or self._process.poll() is not None or self._kill_at is not None:
            return  # not started, already ended (its exit code settles the result), or already cancelled
        self._kill_at = time.monotonic() + self.grace_s
        for process in self._alive_tree():
            _signal(process, "terminate")

    def kill(self) -> None:
        """Kill the whole process tree now and wait for it to go (for when nobody will poll again)."""
        if self._process is None or self._result is not None:
            return
        import psutil

        self._kill_at = self._kill_at or time.monotonic()
        alive = self._alive_tree()
        for process in alive:
            _signal(process, "kill")
        psutil.wait_procs(alive, timeout=KILL_WAIT_S)
        self._collect()

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> RunResult:
        """Block until the run ends (for scripts and tests); cancel it when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_running:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
            time.sleep(interval)
        return self._result

    def _collect(self) -> None:
        """Take what the process wrote; when it has ended, settle the result."""
        if self._process is None or self._result is not None:
            return
        self._take_lines()
        if self._kill_at is not None:  # cancelled: over once the whole tree has ended
            alive = self._alive_tree()
            if alive and time.monotonic() > self._kill_at:
                for process in alive:
                    _signal(process, "kill")
            if alive or self._process.poll() is None:
                return
        elif self._process.poll() is None:
            return
        for reader in self._readers:
            reader.join(STREAM_END_WAIT_S)
        self._take_lines()
        self._result = self._settle(self._process.returncode)

    def _alive_tree(self) -> list:
        """The run's processes still alive: the launched one, its descendants now, and those seen before
        (a child whose launcher has ended is no longer found below it)."""
        import psutil

        try:
            root = psutil.Process(self._process.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:  # the launched process has ended (and been reaped)
            found = []
        for process in found:
            self._tree.setdefault(process.pid, process)
        alive = []
        for process in self._tree.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.Error:
                continue
        self._process.poll()  # reap the launched process, so that it does not stay a zombie
        return alive

    def _take_lines(self) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            if name == "stderr":
                self._stderr.append(line)
            else:
                self._read_event(line)

    def _read_event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self._stderr.append(line)  # not ours (e.g. a library printing); kept for the log
            return
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "progress":
            self._fraction = max(self._fraction, float(event["fraction"]))
            self._pending.append(ProgressEvent(self._fraction, event["message"], event["phase"]))
        elif kind == "error":
            self._error_message = event["message"]
        elif kind == "done" and event.get("report_html"):
            self._report_html = Path(event["report_html"])

    def _settle(self, exit_code: int) -> RunResult:
        log = "\n".join(self._stderr)
        completeness = analysis_completeness(self.out_dir)
        if self._kill_at is not None:
            message = "analysis cancelled"
            if completeness is False:
                message += (f"; {self.out_dir} holds an incomplete analysis (\"complete\": false): "
                            "analyse again into it, or delete it")
            return RunResult(CANCELLED, exit_code, self.out_dir, message, log)
        if exit_code == 0 and completeness:
            return RunResult(SUCCEEDED, exit_code, self.out_dir, f"analysis written to {self.out_dir}", log,
                             self._report_html)
        if exit_code == 0:
            return RunResult(FAILED, exit_code, self.out_dir,
                             f"the analysis ended without a complete analysis.json in {self.out_dir}", log)
        return RunResult(FAILED, exit_code, self.out_dir, self._failure_reason(exit_code), log)

    def _failure_reason(self, exit_code: int) -> str:
        """The command's own error message, else the last line of a traceback, else how the process ended."""
        if self._error_message:
            return self._error_message
        lines = [line.strip() for line in self._stderr if line.strip()]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        if errors:
            return errors[-1]
        if exit_code < 0:  # POSIX: ended by a signal nobody here sent
            killed = " (out of memory?)" if exit_code == -getattr(signal, "SIGKILL", 9) else ""
            return f"the analysis process was ended by signal {-exit_code}{killed}"
        return lines[-1] if lines else f"the analysis process exited with code {exit_code} and no message"


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The variables the analysis process needs on top of ``base`` (its environment otherwise):
    unbuffered UTF-8 output, and the library importable whatever the interpreter's own paths."""
    python_path = os.pathsep.join(p for p in (str(LIBRARY_ROOT), base.get("PYTHONPATH")) if p)
    return {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONPATH": python_path}


def _launch(command: list[str]) -> subprocess.Popen:
    """Plain Python's launcher: the command with separate stdout and stderr pipes."""
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace", env=dict(os.environ, **child_environment(os.environ)),
        creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console window on Windows


def _signal(process, action: str) -> None:
    """``process.terminate()`` or ``.kill()``, for a process that may have ended meanwhile."""
    import psutil

    try:
        getattr(process, action)()
    except psutil.Error:
        pass


def _read_lines(stream, name: str, sink: queue.Queue) -> None:
    """Forward each line of a pipe (read in a thread: pipes cannot be polled on Windows)."""
    with stream:
        while True:
            try:
                line = stream.readline()
            except UnicodeDecodeError:  # launchConsoleProcess decodes with the locale's encoding
                continue
            if not line:
                return
            sink.put((name, line.rstrip("\r\n")))


def analysis_completeness(out_dir: str | os.PathLike) -> bool | None:
    """True: a finished analysis; False: an interrupted one ("complete": false); None: no analysis.json."""
    try:
        document = json.loads((Path(out_dir) / "analysis.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return isinstance(document, dict) and document.get("complete") is True


def new_output_folder(root: str | os.PathLike, study_name: str, now: datetime | None = None) -> Path:
    """A fresh folder name under ``root`` for one analysis: ``<study name>_<YYYYmmdd-HHMMSS>``."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    return Path(root) / f"{safe_name}_{(now or datetime.now()):%Y%m%d-%H%M%S}"


def parse_series_choices(text: str) -> dict[str, int]:
    """``"cine_sax=6, lge_sax=10"`` -> {"cine_sax": 6, "lge_sax": 10}; the roles themselves are checked by the analysis."""
    choices = {}
    for item in filter(None, (part.strip() for part in re.split(r"[,;\s]+", text))):
        role, _, number = item.partition("=")
        if not role or not number.strip().isdigit():
            raise ValueError(f"series choice {item!r}: expected ROLE=SERIES_NUMBER, e.g. lge_sax=10")
        choices[role.strip()] = int(number)
    return choices
