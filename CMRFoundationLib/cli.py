"""The ``cmrfm`` command: the library's functions for batch use and for the Slicer module.

    cmrfm example                      generate the built-in sample study and show what was read
    cmrfm index STUDY [--json]         what a study folder (or NIfTI/NRRD file) contains
    cmrfm make-sample-study OUT --seed N [--pathology P] [--frames N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__

EXAMPLE_SEED = 1


def _print_progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def cmd_index(args: argparse.Namespace) -> int:
    from .dicom import index_study, summarize
    from .volume_io import is_volume_file, read_volume

    path = Path(args.study)
    if path.is_file() and is_volume_file(path):
        try:
            stack = read_volume(path)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(json.dumps({"path": str(path), "stack": stack.describe()}) if args.json else f"{path}: {stack.describe()}")
        return 0
    index = index_study(path)
    print(json.dumps(index.to_dict(), indent=1) if args.json else summarize(index))
    # Problems are reported, not fatal: exit non-zero only when nothing could be read.
    return 0 if index.stacks else 1


def cmd_make_sample_study(args: argparse.Namespace) -> int:
    from .synthetic.study import make_sample_study

    start = time.perf_counter()
    try:
        truth = make_sample_study(args.out, args.seed, pathology=args.pathology, frames=args.frames, progress=_print_progress)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Wrote synthetic study {args.out} (seed {args.seed}, {truth['pathology']}, "
        f"{len(truth['series'])} series) in {time.perf_counter() - start:.0f} s; "
        f"ground truth in {Path(args.out) / 'ground_truth'}"
    )
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    """The built-in example: a synthetic study, generated once, then read back."""
    from .synthetic.study import load_truth

    out = Path(args.out)
    try:
        existing = load_truth(out)["seed"] if out.exists() else None
    except (OSError, ValueError, KeyError):
        existing = None
    if existing != EXAMPLE_SEED:
        if out.exists() and any(out.iterdir()):
            print(f"error: {out} exists and is not the example study; pass --out to choose another folder", file=sys.stderr)
            return 2
        print(f"Generating the sample study in {out} ...", file=sys.stderr)
        status = cmd_make_sample_study(argparse.Namespace(out=out, seed=EXAMPLE_SEED, pathology=None, frames=25))
        if status:
            return status
    return cmd_index(argparse.Namespace(study=out / "DICOM", json=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmrfm", description="CMRFoundation: cardiac MR foundation model tools")
    parser.add_argument("--version", action="version", version=f"cmrfm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("example", help="generate the built-in sample study (once) and show what the reader finds")
    p.add_argument("--out", default="output/example", help="where the sample study goes (default: output/example)")
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("index", help="list the series and image stacks of a study folder, NIfTI or NRRD file")
    p.add_argument("study", help="DICOM study folder (any file names, any depth) or an image file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("make-sample-study", help="write a synthetic CMR study (DICOM) with exact ground truth")
    p.add_argument("out", help="new or empty output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same study")
    p.add_argument("--pathology", choices=["NOR", "DCM", "HCM", "MINF", "RV"], help="disease pattern (default: random for the seed)")
    p.add_argument("--frames", type=int, default=25, help="cine frames per cardiac cycle (default 25)")
    p.set_defaults(func=cmd_make_sample_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
