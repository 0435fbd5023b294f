"""Benchmark: the whole-study analysis (``analyze_study`` + ``write_outputs``), time per phase and peak memory.

    python Testing/Benchmarks/bench_analyze.py [--frames 6,12,25,40] [--repeats 3] [--device cpu]
        [--cache /tmp/cmrfm_bench] [--out Testing/Benchmarks/results/analyze_cpu.md]

The issue's targets: the README example study (``cmrfm example``: seed EXAMPLE_SEED, 25 cine
frames) analysed on a 2-core CPU in at most 60 s with peak memory under 3 GB. The same seed
is also generated with other frame counts (``--frames``) to show how time grows with the
number of images. Studies are generated once into ``--cache`` (not timed).

Every run is a fresh Python process (so each peak resident memory, ``ru_maxrss``, is its
own) that imports the library, then runs ``analyze_study`` and ``write_outputs`` into a
temporary folder. Phases come from the progress callback (read, classify, select, then
one per analysis part) and from timing ``TaskPredictor.load`` / ``predict_images`` inside
the worker (benchmark instrumentation only, the library is unchanged), which splits each
part into model time ("segment": loading and running the model) and the rest ("measure").
Reported phases: index (read and index the DICOM), classify (image type and view of every
stack, and series selection), segment, measure, write, plus the process start (Python,
torch and library import) that a command-line user also waits for.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()  # before the heavy imports: the worker's process start is timed from here

REPO = Path(__file__).resolve().parents[2]

from cmrtrain.provenance import code_version  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "analyze_cpu.md"
TARGET_S, TARGET_GB = 60.0, 3.0


# --- worker: one analysis in this process ----------------------------------------------------------


def profiled_worker(study: str, device: str, threads: int | None, top: int) -> dict:
    """``worker`` under cProfile: the functions with the most cumulative and own time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(worker, study, device, threads)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        if filename.startswith("<frozen") or name in ("<built-in method builtins.exec>", "<built-in method builtins.__import__>"):
            continue  # the import machinery: first-use imports show up under the importing function instead
        where = filename.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        rows.append({"function": f"{where}:{line}({name})", "calls": calls, "own_s": own, "cumulative_s": cumulative})
    result["profile_cumulative"] = sorted(rows, key=lambda r: -r["cumulative_s"])[:top]
    result["profile_own"] = sorted(rows, key=lambda r: -r["own_s"])[:top]
    return result


def worker(study: str, device: str, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from CMRFoundationLib import inference
    from CMRFoundationLib.analysis import AnalysisOptions, analyze_study, write_outputs

    imported = time.perf_counter()
    model_time: list[tuple[str, float, float, str]] = []  # (task, start, end, what)

    original_predict, original_load = inference.TaskPredictor.predict_images, inference.TaskPredictor.load.__func__

    def timed_predict(self, images, spacing, progress=None):
        t0 = time.perf_counter()
        try:
            return original_predict(self, images, spacing, progress)
        finally:
            model_time.append((self.task.name, t0, time.perf_counter(), f"infer {len(images)}"))

    def timed_load(cls, task, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original_load(cls, task, *args, **kwargs)
        finally:
            model_time.append((getattr(task, "name", task), t0, time.perf_counter(), "load"))

    inference.TaskPredictor.predict_images = timed_predict
    inference.TaskPredictor.load = classmethod(timed_load)

    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    analysis = analyze_study(study, AnalysisOptions(device=device), progress=lambda phase, f, m: marks.append((phase, time.perf_counter())))
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        written = write_outputs(analysis, Path(tmp) / "analysis")
        t2 = time.perf_counter()
        n_files = sum(1 for p in (Path(tmp) / "analysis").rglob("*") if p.is_file())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # Phase intervals from the progress marks (a phase lasts until the next mark).
    phases: dict[str, float] = {}
    bounds = [(phase, start) for phase, start in marks] + [("end", t1)]
    intervals = []
    for (phase, start), (_, end) in zip(bounds, bounds[1:]):
        if phase == "done":
            continue
        phases[phase] = phases.get(phase, 0.0) + end - start
        intervals.append((phase, start, end))
    model_in_phase: dict[str, float] = {}
    for _task, a, b, _ in model_time:
        for phase, start, end in intervals:
            overlap = min(b, end) - max(a, start)
            if overlap > 0:
                model_in_phase[phase] = model_in_phase.get(phase, 0.0) + overlap
    part_phases = [p for p in phases if p not in ("read", "classify", "select")]
    segment = sum(model_in_phase.get(p, 0.0) for p in part_phases)
    images = sum(int(r.stack.pixels.shape[0] * r.stack.pixels.shape[1]) for r in analysis.series)
    per_task: dict[str, dict] = {}
    for task, a, b, what in model_time:
        entry = per_task.setdefault(task, {"load_s": 0.0, "infer_s": 0.0, "images": 0})
        if what == "load":
            entry["load_s"] += b - a
        else:
            entry["infer_s"] += b - a
            entry["images"] += int(what.split()[1])
    return {
        "study": study,
        "images": images,
        "stacks": len(analysis.series),
        "cine_frames": max(int(r.stack.pixels.shape[1]) for r in analysis.series),
        "startup_s": imported - START,
        "analyze_s": t1 - t0,
        "write_s": t2 - t1,
        "total_s": t2 - t0,
        "phases_s": phases,
        "model_s_in_phase": model_in_phase,
        "summary_s": {
            # the classifier models are loaded before the first "classify" mark: count them as classify
            "index": phases.get("read", 0.0) - model_in_phase.get("read", 0.0),
            "classify": phases.get("classify", 0.0) + phases.get("select", 0.0) + model_in_phase.get("read", 0.0),
            "segment": segment,
            "measure": sum(phases[p] for p in part_phases) - segment,
            "write": t2 - t1,
        },
        "per_task": per_task,
        "parts": {name: part.status for name, part in analysis.parts.items()},
        "files_written": n_files,
        "label_maps": len(written["label_maps"]),
        "peak_rss_mb": peak_kb / 1024,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(inference.choose_device(device)),
        "cuda": torch.cuda.is_available(),
    }


# --- driver -----------------------------------------------------------------------------------


def ensure_study(cache: Path, seed: int, frames: int) -> Path:
    """The study of ``seed`` with ``frames`` cine frames in the cache (generated once)."""
    from CMRFoundationLib.synthetic.study import load_truth, make_sample_study

    folder = cache / f"seed{seed}_frames{frames}"
    try:
        truth = load_truth(folder)
        if truth["seed"] == seed and truth["cine"]["frames"] == frames:
            return folder
    except (OSError, ValueError, KeyError):
        pass
    if folder.exists():
        raise SystemExit(f"{folder} exists but is not the study of seed {seed} with {frames} frames; remove it")
    print(f"generating seed {seed} with {frames} frames into {folder} (not timed) ...", flush=True)
    partial = cache / f".partial_{folder.name}"
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    make_sample_study(partial, seed, frames=frames)
    partial.rename(folder)
    return folder


def run_worker(study: Path, device: str, threads: int | None, profile: int = 0) -> dict:
    command = [sys.executable, __file__, "--worker", str(study / "DICOM"), "--device", device, "--profile", str(profile)]
    if threads:
        command += ["--threads", str(threads)]
    wall0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - wall0
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def median_run(runs: list[dict]) -> dict:
    """The run of median total time, with the medians of every phase and the max peak memory."""
    ordered = sorted(runs, key=lambda r: r["total_s"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["median"] = {key: statistics.median(r["summary_s"][key] for r in runs) for key in runs[0]["summary_s"]}
    for key in ("total_s", "analyze_s", "startup_s", "process_wall_s"):
        chosen["median"][key] = statistics.median(r[key] for r in runs)
    chosen["median"]["phases_s"] = {p: statistics.median(r["phases_s"].get(p, 0.0) for r in runs) for p in runs[0]["phases_s"]}
    chosen["all_totals_s"] = [r["total_s"] for r in runs]
    chosen["max_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return chosen


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(args, example_frames: int, results: dict[int, dict], gpu: dict | None, load_before: str,
           profile: dict | None = None) -> str:
    import numpy as np

    from CMRFoundationLib.cli import EXAMPLE_SEED

    example = results[example_frames]
    m = example["median"]
    total, peak_gb = m["total_s"], example["max_peak_rss_mb"] / 1024
    end_to_end = m["process_wall_s"]
    lines = [
        "# Whole-study analysis benchmark (CPU)",
        "",
        f"Produced by `{' '.join(['python Testing/Benchmarks/bench_analyze.py', *args.argv])}`.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {example['torch']}",
        f"- Device: {example['device']}; torch threads: {example['torch_threads']}; batch size 16 (AnalysisOptions default); "
        "weights: Resources/Weights (the shipped CPU weights)",
        f"- Code: {code_version()}",
        f"- Load before the runs: {load_before}",
        f"- Every run is a fresh process; times are the median of {args.repeats} run(s), peak memory the largest "
        "`ru_maxrss` of the runs.",
        f"- GPU: {'none on this machine (torch sees no CUDA device), so no GPU figure' if gpu is None else 'see below'}.",
        "",
        f"## {'The README example' if example_frames == 25 else 'The study'} (seed {EXAMPLE_SEED}, {example_frames} cine "
        f"frames, {example['stacks']} stacks, {example['images']} images)",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        f"| analysis (analyze_study + write_outputs) <= {TARGET_S:.0f} s | {total:.1f} s | {'yes' if total <= TARGET_S else '**no**'} |",
        f"| the whole process (Python start, imports, analysis, write, exit), as `cmrfm analyze` | {end_to_end:.1f} s | "
        f"{'yes' if end_to_end <= TARGET_S else '**no**'} |",
        f"| peak resident memory < {TARGET_GB:.0f} GB | {example['max_peak_rss_mb']:.0f} MB | {'yes' if peak_gb < TARGET_GB else '**no**'} |",
        "",
        f"Runs (analysis s): {', '.join(f'{t:.1f}' for t in example['all_totals_s'])}.",
        "",
        "| phase | seconds (median) | share |",
        "|---|---:|---:|",
        f"| process start (Python, torch, library import; not in the analysis time) | {m['startup_s']:.1f} | - |",
    ]
    for key, title in (("index", "index (read the DICOM, build the stacks)"),
                       ("classify", "classify (image type and view of every stack; series selection)"),
                       ("segment", "segment (model loading and inference in the parts)"),
                       ("measure", "measure (everything else in the parts: volumes, AHA, LGE, maps, input recipes)"),
                       ("write", "write (JSON, CSV, NIfTI label maps, DICOM SEG and SR)")):
        lines.append(f"| {title} | {m[key]:.1f} | {100 * m[key] / total:.0f}% |")
    lines += [f"| **total** | **{total:.1f}** | 100% |", "", "Per progress phase (median s; of it, model load + inference):", "",
              "| progress phase | seconds | of it model |", "|---|---:|---:|"]
    for phase, seconds in m["phases_s"].items():
        lines.append(f"| {phase} | {seconds:.2f} | {example['model_s_in_phase'].get(phase, 0.0):.2f} |")
    lines += ["", "Per model (the median run): load and inference seconds, images run.", "",
              "| task | load s | inference s | images | ms per image |", "|---|---:|---:|---:|---:|"]
    for task, e in sorted(example["per_task"].items(), key=lambda kv: -kv[1]["infer_s"]):
        per = 1000 * e["infer_s"] / e["images"] if e["images"] else 0.0
        lines.append(f"| {task} | {e['load_s']:.2f} | {e['infer_s']:.2f} | {e['images']} | {per:.1f} |")

    frames = sorted(results)
    x = np.array([results[f]["images"] for f in frames], dtype=float)
    y = np.array([results[f]["median"]["total_s"] for f in frames])
    lines += ["", "## How time grows with the number of images", "",
              f"The same patient (seed {EXAMPLE_SEED}) generated with {', '.join(map(str, frames))} cine frames: the 5 cine "
              "series grow with the frames, the other series (localizer, HASTE, LGE, maps) stay.", "",
              "| cine frames | images | index s | classify s | segment s | measure s | write s | analysis s | peak MB |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in frames:
        r = results[f]["median"]
        lines.append(f"| {f} | {results[f]['images']} | {r['index']:.1f} | {r['classify']:.1f} | {r['segment']:.1f} | "
                     f"{r['measure']:.1f} | {r['write']:.1f} | {r['total_s']:.1f} | {results[f]['max_peak_rss_mb']:.0f} |")
    if len(frames) >= 2:
        slope, intercept = np.polyfit(x, y, 1)
        mem = np.array([results[f]["max_peak_rss_mb"] for f in frames])
        mem_slope, mem_intercept = np.polyfit(x, mem, 1)
        lines += ["", f"Least-squares line: analysis time = {intercept:.1f} s + {1000 * slope:.1f} ms x images; "
                  f"peak memory = {mem_intercept:.0f} MB + {1000 * mem_slope:.0f} MB per 1000 images. At that rate the "
                  f"{TARGET_S:.0f} s target is reached at about {max(0.0, (TARGET_S - intercept) / slope):.0f} images."]
    if gpu is not None:
        lines += ["", "## GPU", "", f"Device {gpu['device']}: analysis {gpu['median']['total_s']:.1f} s "
                  f"(segment {gpu['median']['segment']:.1f} s), peak host memory {gpu['max_peak_rss_mb']:.0f} MB."]
    if profile is not None:
        lines += ["", "## Where the time goes (one extra run of the same study under cProfile)", "",
                  f"cProfile slows Python code down, so these seconds are larger than above (this run: "
                  f"{profile['total_s']:.1f} s); read them as proportions.", "",
                  "Most cumulative time (a function and everything it calls):", "",
                  "| function | calls | cumulative s | own s |", "|---|---:|---:|---:|"]
        lines += [f"| `{r['function']}` | {r['calls']} | {r['cumulative_s']:.2f} | {r['own_s']:.2f} |"
                  for r in profile["profile_cumulative"]]
        lines += ["", "Most own time (excluding what a function calls):", "",
                  "| function | calls | own s | cumulative s |", "|---|---:|---:|---:|"]
        lines += [f"| `{r['function']}` | {r['calls']} | {r['own_s']:.2f} | {r['cumulative_s']:.2f} |"
                  for r in profile["profile_own"]]
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--frames", default="6,12,25,40", help="cine frame counts to generate (the example's 25 among them)")
    parser.add_argument("--example-frames", type=int, default=25, help="cine frames of the targeted study (README: 25)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "cmrfm_bench"))
    parser.add_argument("--profile", type=int, default=25,
                        help="one extra run of the example under cProfile, listing this many functions (0: none)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--json", help="also write every run's numbers to this file")
    args = parser.parse_args(argv)
    if args.worker:
        if args.profile:
            print(json.dumps(profiled_worker(args.worker, args.device, args.threads, args.profile)))
        else:
            print(json.dumps(worker(args.worker, args.device, args.threads)))
        return 0
    args.argv = sys.argv[1:] if argv is None else argv

    from CMRFoundationLib.cli import EXAMPLE_SEED

    frames = sorted({int(f) for f in args.frames.split(",")} | {args.example_frames})
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    studies = {f: ensure_study(cache, EXAMPLE_SEED, f) for f in frames}
    load_before = f"{os.getloadavg()[0]:.2f} (1-minute load average when the runs started)"
    results: dict[int, dict] = {}
    for f in frames:
        runs = []
        for k in range(args.repeats):
            run = run_worker(studies[f], args.device, args.threads)
            runs.append(run)
            print(f"{f} frames, run {k + 1}: {run['images']} images, analysis {run['total_s']:.1f} s "
                  f"(process {run['process_wall_s']:.1f} s), peak {run['peak_rss_mb']:.0f} MB; "
                  + ", ".join(f"{key} {v:.1f}" for key, v in run["summary_s"].items()), flush=True)
        results[f] = median_run(runs)
    profile = None
    if args.profile:
        profile = run_worker(studies[args.example_frames], args.device, args.threads, args.profile)
        print(f"profiled run: analysis {profile['total_s']:.1f} s under cProfile", flush=True)
    gpu = None
    import torch

    if torch.cuda.is_available() and args.device == "cpu":
        gpu = median_run([run_worker(studies[args.example_frames], "cuda", None) for _ in range(args.repeats)])
    text = report(args, args.example_frames, results, gpu, load_before, profile)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"frames": {str(f): r for f, r in results.items()}, "gpu": gpu}, indent=1,
                                              default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
