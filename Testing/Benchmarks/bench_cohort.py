"""Benchmark: cohort throughput (studies per hour) of the serial batch script against ``cmrfm batch``
on Dask with 1 and 2 workers, side by side in one run, and the memory of each process.

    python Testing/Benchmarks/bench_cohort.py [--studies 4] [--frames 6] [--passes 2]
        [--cache /tmp/cmrfm_bench] [--out Testing/Benchmarks/results/cohort_cpu.md]

Studies are synthetic (seeds 1..N, ``--frames`` cine frames), generated once into ``--cache``
(not timed). Each configuration is a fresh process over all N studies into an empty output
folder, timed from start to exit (Python start, imports, cluster start, the analyses, the
table), so a person's wait is measured, not a best case:

- ``serial script``: Resources/Scripts/batch_analyze.py with slicer-core (one process, one
  study after another; it also writes each study's Slicer scene and segmentation files);
- ``serial, same outputs``: the same loop (cohort.run_serial) without the Slicer files, i.e.
  the outputs of ``cmrfm analyze``, which is what ``cmrfm batch`` writes;
- ``cmrfm batch --workers 1`` and ``--workers 2``: the embedded LocalCluster.

The configurations run in turn, then again in the reverse order (``--passes 2``), so that a
change in the machine's load weighs on all of them alike; the mean of the passes is reported.
Memory: every process of the run (the client and its Dask workers) is sampled with psutil
every 0.2 s; the largest resident size seen per process is reported (a sampled peak).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).parent / "results" / "cohort_cpu.md"
SCRIPT = REPO / "Resources" / "Scripts" / "batch_analyze.py"


def ensure_studies(cache: Path, n: int, frames: int) -> Path:
    """Folder with N study folders (seeds 1..N), generated once."""
    from CMRFoundationLib.synthetic.study import make_sample_study

    folder = cache / f"cohort_{n}x{frames}frames"
    for seed in range(1, n + 1):
        study = folder / f"seed{seed:03d}"
        if not (study / "DICOM").is_dir():
            partial = folder / f".partial-seed{seed:03d}"
            if partial.exists():
                import shutil

                shutil.rmtree(partial)
            print(f"generating seed {seed} ({frames} frames, not timed) ...", flush=True)
            make_sample_study(partial, seed, frames=frames)
            partial.rename(study)
    studies = folder / "studies"  # a folder of study folders: the DICOM of each
    studies.mkdir(exist_ok=True)
    for seed in range(1, n + 1):
        link = studies / f"seed{seed:03d}"
        if not link.exists():
            link.symlink_to(folder / f"seed{seed:03d}" / "DICOM")
    return studies


def commands(studies: Path, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    batch = [py, "-m", "CMRFoundationLib.cli", "batch", str(studies), str(out), "--device", "cpu", "--no-progress",
             "--dashboard-address", ":0"]
    return {
        "serial script": [py, str(SCRIPT), str(studies), str(out), "--device", "cpu"],
        "serial, same outputs": [py, __file__, "--run-serial", str(studies), str(out)],
        "cmrfm batch --workers 1": [*batch, "--workers", "1"],
        "cmrfm batch --workers 2": [*batch, "--workers", "2"],
    }


def timed(command: list[str]) -> dict:
    """Wall time, exit status and the sampled peak resident memory of every process of the run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    root = psutil.Process(process.pid)
    peaks: dict[int, tuple[str, int]] = {}
    while process.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                with p.oneshot():
                    rss, kind = p.memory_info().rss, _kind(p, root)
                if kind and rss > peaks.get(p.pid, ("", 0))[1]:
                    peaks[p.pid] = (kind, rss)
        except psutil.Error:
            pass  # a process ended while being read
        time.sleep(0.2)
    output = process.communicate()[0]
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{command} failed ({process.returncode}):\n{output[-3000:]}")
    mib = {kind: [rss / 2**20 for k, rss in peaks.values() if k == kind] for kind in ("main", "worker")}
    return {"wall_s": wall, "main_mib": max(mib["main"], default=0.0), "worker_mib": mib["worker"]}


def _kind(process: psutil.Process, root: psutil.Process) -> str:
    if process.pid == root.pid:
        return "main"
    command = " ".join(process.cmdline())
    return "worker" if "spawn_main" in command else ""  # not multiprocessing's resource tracker


def run_serial(studies: str, out: str) -> None:
    from CMRFoundationLib.analysis import AnalysisOptions
    from CMRFoundationLib.cohort import find_studies, run_serial

    result = run_serial(find_studies(studies), out, AnalysisOptions(device="cpu"))
    if result.failed:
        raise SystemExit(1)


def code_version() -> str:
    """This checkout's commit (cmrtrain.provenance names the checkout cmrtrain is installed from)."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--", "CMRFoundationLib")
    return f"commit {git('rev-parse', '--short', 'HEAD')}" + (" with uncommitted library changes" if changed else "")


def others_busy() -> list[str]:
    """The other processes using the CPU now (name and %), to record what the runs competed with."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in mine]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(1.0)
    busy = []
    for p in procs:
        try:
            percent = p.cpu_percent(None)
        except psutil.Error:
            continue
        if percent >= 20:
            command = " ".join(p.info["cmdline"] or [])[:90]
            busy.append(f"{percent:.0f}% {command}")
    return busy


def report(args, n: int, runs: dict[str, list[dict]], load: list[float], busy: list[list[str]]) -> str:
    import torch

    names = list(runs)
    mean = {name: statistics.mean(r["wall_s"] for r in runs[name]) for name in names}
    base = mean["serial script"]
    lines = [
        "# Cohort throughput benchmark (CPU): serial batch script against `cmrfm batch` on Dask",
        "",
        f"Produced by `{' '.join(['python Testing/Benchmarks/bench_cohort.py', *args.argv])}`.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}",
        f"- Machine: {psutil.cpu_count()} logical cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"device cpu; code {code_version()}",
        f"- Studies: {n} synthetic studies (seeds 1..{n}, {args.frames} cine frames, 13 stacks each), DICOM.",
        f"- **Load caveat**: the machine was shared while the benchmark ran: a model training in the background, "
        f"and at times other test runs (1-minute load average {min(load):.1f} to {max(load):.1f} at the starts of the "
        "runs, where 2.0 would be both cores busy; other processes taking 20% of a core or more, sampled at the start "
        "of each run, are listed below). The configurations ran in turn and in alternating order to share the load "
        "alike, but it was not constant: read the ratios as indicative and the absolute rates as lower than on an "
        "idle machine.",
        f"- Each configuration ran {len(runs[names[0]])} time(s) (order reversed each pass); wall time is from the "
        "process start to its exit, the mean of the passes.",
        "",
        "| configuration | wall s per pass | mean wall s | studies per hour | vs serial script |",
        "|---|---|---:|---:|---:|",
    ]
    for name in names:
        walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs[name])
        lines.append(f"| {name} | {walls} | {mean[name]:.0f} | {3600 * n / mean[name]:.0f} | {base / mean[name]:.2f}x |")
    lines += ["", "Memory (sampled peak resident size, MiB; the largest of the passes):", "",
              "| configuration | main process | per Dask worker |", "|---|---:|---|"]
    for name in names:
        main = max(r["main_mib"] for r in runs[name])
        workers = max((r["worker_mib"] for r in runs[name]), key=lambda w: max(w, default=0))
        lines.append(f"| {name} | {main:.0f} | {', '.join(f'{w:.0f}' for w in sorted(workers)) or '-'} |")
    lines += [
        "",
        "Reading it: the serial script also writes a Slicer scene and segmentation files per study, which "
        "`cmrfm batch` does not (its outputs are those of `cmrfm analyze`); \"serial, same outputs\" is the same "
        "one-process loop without them, the fair baseline for the engine. A worker process holds the models and one "
        "study at a time; `cmrfm batch` sizes its embedded cluster by that (one worker per core as far as memory "
        "allows 2 GB each). With a training taking its share of the 2 cores, a second worker has less idle CPU to "
        "use than on an idle machine.",
        "",
        "Other processes busy at the start of each run (CPU % of one core, command):",
        "",
        *[f"- run {i + 1}: " + ("; ".join(b) if b else "none") for i, b in enumerate(busy)],
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-serial", nargs=2, metavar=("STUDIES", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "cmrfm_bench"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.run_serial:
        run_serial(*args.run_serial)
        return 0
    args.argv = sys.argv[1:] if argv is None else argv
    studies = ensure_studies(Path(args.cache), args.studies, args.frames)
    runs: dict[str, list[dict]] = {}
    load, busy = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.passes):
            names = list(commands(studies, Path(tmp)))
            for name in names if p % 2 == 0 else names[::-1]:
                out = Path(tmp) / f"pass{p}-{name.replace(' ', '_').replace(',', '')}"
                load.append(os.getloadavg()[0])
                busy.append(others_busy())
                result = timed(commands(studies, out)[name])
                runs.setdefault(name, []).append(result)
                print(f"pass {p + 1}: {name}: {result['wall_s']:.1f} s, main {result['main_mib']:.0f} MiB, workers "
                      f"{[round(w) for w in result['worker_mib']]} MiB", flush=True)
    runs = {name: runs[name] for name in commands(studies, Path("."))}
    text = report(args, args.studies, runs, load, busy)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
