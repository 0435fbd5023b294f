"""Build a synthetic cache from the command line (run from Training/)::

    python -m cmrtrain.data.build_synthetic /data/cmrfm_synthetic --count 100

Studies already in the folder are kept, so re-running only adds the missing ones.
"""

from __future__ import annotations

import argparse

from .synthetic import build_synthetic_cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate synthetic studies (seeds 0..count-1) for training.")
    parser.add_argument("root", help="cache folder (created if needed; finished studies are kept)")
    parser.add_argument("--count", type=int, default=100, help="seeds 0..count-1 (default 100)")
    parser.add_argument("--frames", type=int, default=6, help="cine frames per study (default 6)")
    args = parser.parse_args(argv)
    build_synthetic_cache(args.root, range(args.count), frames=args.frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
