"""Benchmark ``index_study`` on a study of thousands of classic single-frame MR files.

Writes a synthetic study with the project's own DICOM writer into a temporary folder
(series shaped like a real CMR exam: SAX cine stacks, LAX cines, LGE stacks, MOLLI),
times indexing (median of several runs) and shows that indexing reads headers only:

* the same number of files at 64x64 and 512x512 pixels index in about the same time;
* the bytes the process actually reads (Linux ``/proc/self/io`` rchar) stay at a few KB
  per file whatever the file size.

Files are in the page cache when timed (they were just written), so the times measure
parsing, not the disk. Results go to ``Testing/Benchmarks/results/indexing.md``.

    python Testing/Benchmarks/bench_indexing.py [--files 6000] [--rows 192] [--size-files 1000]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from CMRFoundationLib.dicom import index_study, write_mr_series
from CMRFoundationLib.stack import NOMINAL_LV_AXIS_LPS, SeriesInfo, geometry_matrix

RESULTS = Path(__file__).parent / "results" / "indexing.md"
# (description, slices, frames) of the series in one exam, repeated until enough files.
EXAM = [
    ("cine SAX", 12, 25),
    ("cine 2CH", 1, 25),
    ("cine 3CH", 1, 25),
    ("cine 4CH", 1, 25),
    ("LGE SAX", 14, 1),
    ("MOLLI T1", 3, 8),
]


def write_study(folder: Path, n_files: int, rows: int, cols: int) -> int:
    """Write exam-like series until ``n_files`` images exist; returns the number of series."""
    rng = np.random.default_rng(0)
    normal = NOMINAL_LV_AXIS_LPS
    row_dir = np.cross(normal, [0.0, 0.0, 1.0])
    row_dir /= np.linalg.norm(row_dir)
    geometry = geometry_matrix(
        np.array([-80.0, -60.0, 40.0]), row_dir, np.cross(normal, row_dir), np.array([1.5, 1.5, 8.0])
    )
    study = SeriesInfo(study_uid=pydicom.uid.generate_uid(), frame_of_reference_uid=pydicom.uid.generate_uid())
    written, series = 0, 0
    while written < n_files:
        description, slices, frames = EXAM[series % len(EXAM)]
        frames = min(frames, n_files - written)
        slices = min(slices, (n_files - written) // frames)
        info = SeriesInfo(
            study_uid=study.study_uid,
            frame_of_reference_uid=study.frame_of_reference_uid,
            series_number=series + 1,
            series_description=description,
            heart_rate=60.0,
        )
        pixels = rng.integers(0, 1000, (slices, frames, rows, cols)).astype(float)
        times = np.arange(frames) * 1000.0 / frames if frames > 1 else None
        write_mr_series(
            folder / f"series{series + 1:03d}", pixels, geometry, info, frame_times=times, uid_seed=f"bench{series}"
        )
        written += slices * frames
        series += 1
    return series


def bytes_read() -> int | None:
    """Bytes this process has read through read() system calls (Linux only)."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("rchar"))
    except OSError:
        return None


def measure(folder: Path, repeats: int) -> dict:
    """Median indexing time and the bytes read by one indexing pass."""
    index_study(folder)  # warm-up: imports and the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        index = index_study(folder)
        times.append(time.perf_counter() - start)
    before = bytes_read()
    index_study(folder)
    after = bytes_read()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert index.n_dicom_files == len(files) and not index.problems, index.problems[:3]
    return {
        "files": len(files),
        "stacks": len(index.stacks),
        "seconds": statistics.median(times),
        "file_bytes": sum(p.stat().st_size for p in files),
        "read_bytes": None if before is None else after - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6000, help="images in the main study")
    parser.add_argument("--rows", type=int, default=192, help="image size of the main study (rows = columns)")
    parser.add_argument(
        "--size-files", type=int, default=1000, help="images in each study of the 64x64 vs 512x512 comparison"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cmrfm-bench-") as tmp:
        results = {}
        for name, n_files, size in (
            ("main", args.files, args.rows),
            ("64", args.size_files, 64),
            ("512", args.size_files, 512),
        ):
            folder = Path(tmp) / name
            start = time.perf_counter()
            n_series = write_study(folder, n_files, size, size)
            write_seconds = time.perf_counter() - start
            results[name] = {
                **measure(folder, args.repeats),
                "series": n_series,
                "size": size,
                "write_seconds": write_seconds,
            }
            print(f"{name}: {results[name]}", flush=True)

    report = render(results, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


def render(results: dict, args: argparse.Namespace) -> str:
    def per_file_kb(r: dict, key: str) -> str:
        return "n/a" if r[key] is None else f"{r[key] / r['files'] / 1024:.1f}"

    main_run, small, large = results["main"], results["64"], results["512"]
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    lines = [
        "# DICOM indexing benchmark",
        "",
        f"Produced by `Testing/Benchmarks/bench_indexing.py --files {args.files} --rows {args.rows} --size-files {args.size_files} --repeats {args.repeats}`.",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}",
        f"- Python {sys.version.split()[0]}, pydicom {pydicom.__version__}, numpy {np.__version__}",
        "- Files were just written, so they sit in the page cache: times measure header parsing, not disk reads.",
        f"- Times are the median of {args.repeats} runs of `index_study` after one warm-up run (single process, single thread).",
        "",
        "## Study of classic single-frame MR files",
        "",
        "| files | series | stacks | image size | data on disk | index time | files/s | read per file (KB) | file size (KB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (main_run, small, large):
        lines.append(
            f"| {r['files']} | {r['series']} | {r['stacks']} | {r['size']}x{r['size']} | {r['file_bytes'] / 2**20:.0f} MiB "
            f"| {r['seconds']:.2f} s | {r['files'] / r['seconds']:.0f} | {per_file_kb(r, 'read_bytes')} | {per_file_kb(r, 'file_bytes')} |"
        )
    ratio = large["seconds"] / small["seconds"]
    lines += [
        "",
        "## Headers only",
        "",
        f"- Same file count, 512x512 vs 64x64 pixels (64x more pixel data): index time ratio **{ratio:.2f}**.",
    ]
    if large["read_bytes"] is not None:
        lines.append(
            f"- Bytes read while indexing the 512x512 study: {large['read_bytes'] / 2**20:.1f} MiB of {large['file_bytes'] / 2**20:.0f} MiB on disk "
            f"({100 * large['read_bytes'] / large['file_bytes']:.2f} %); the 64x64 study: {per_file_kb(small, 'read_bytes')} KB per file."
        )
    lines += ["", f"(Writing the main study with `write_mr_series` took {main_run['write_seconds']:.1f} s.)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
