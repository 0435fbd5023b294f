"""Benchmark: time to generate the synthetic sample study, per series and in total.

    python Testing/Benchmarks/bench_synthetic_study.py [--seed 1] [--frames 25]

Writes Testing/Benchmarks/results/synthetic_study.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from CMRFoundationLib.synthetic.study import make_sample_study

RESULTS = Path(__file__).parent / "results" / "synthetic_study.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=25)
    args = parser.parse_args()

    marks: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        truth = make_sample_study(Path(tmp) / "study", args.seed, frames=args.frames, progress=lambda m: marks.append((m, time.perf_counter())))
        end = time.perf_counter()
        files = sum(1 for p in (Path(tmp) / "study" / "DICOM").rglob("*") if p.is_file())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = []
    for (message, t0), (_, t1) in zip(marks, marks[1:] + [("end", end)]):
        rows.append((message, t1 - t0))
    lines = [
        "# Synthetic study generation benchmark",
        "",
        f"Produced by `Testing/Benchmarks/bench_synthetic_study.py --seed {args.seed} --frames {args.frames}`.",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, Python {platform.python_version()}",
        f"- Study: seed {args.seed} ({truth['pathology']}), {len(truth['series'])} series, {files} DICOM files, {args.frames} cine frames",
        f"- Total: **{end - start:.1f} s**, peak resident memory {peak_mb:.0f} MB (single process)",
        "",
        "| step (series rendered and written, then the truth) | seconds |",
        "|---|---:|",
        *[f"| {message} | {seconds:.1f} |" for message, seconds in rows],
        "",
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
