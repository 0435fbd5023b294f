"""Analyse every study of a folder and save Slicer results per study (CMRFoundationLib.scene.batch).

In 3D Slicer (its own scene, no window needed):
    Slicer --no-main-window --python-script batch_analyze.py -- STUDIES OUT [--device cpu]
In plain Python with slicer-core (pip install slicer-core, e.g. the project's .venv):
    python batch_analyze.py STUDIES OUT [--device cpu]

Each subfolder of STUDIES is a study; results go to OUT/<study>/ and the cohort table
OUT/cohort.csv (and cohort.parquet where pyarrow is installed). One process, one study after
the other; for many studies on many cores or a cluster, `cmrfm batch` runs the same on Dask.
Re-running skips finished studies. The exit status is 1 if any study failed.
"""

import argparse
import logging
import sys
from pathlib import Path

try:
    import CMRFoundationLib  # noqa: F401  (installed, or beside the Slicer module)
except ImportError:  # run from a source checkout: the library is two folders up
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slicer

from CMRFoundationLib.analysis import AnalysisOptions
from CMRFoundationLib.cohort import CohortError, StudyListError
from CMRFoundationLib.files import OutputLocationError
from CMRFoundationLib.scene.batch import run_batch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", type=Path, help="folder with one subfolder per study")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--weights", type=Path, help="weights folder (default: $CMRFM_WEIGHTS, else the carried weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--lge-n-sd", type=float, default=5.0)
    parser.add_argument("--retries", type=int, default=2, help="tries again a study that failed (default 2)")
    args = parser.parse_args([a for a in argv if a != "--"])
    logging.basicConfig(level=logging.WARNING)
    options = AnalysisOptions(weights_dir=args.weights, device=args.device, lge_n_sd=args.lge_n_sd)
    in_slicer = hasattr(slicer, "mrmlScene")  # the application's scene; slicer-core alone has none
    try:
        rows = run_batch(args.studies, args.out, options, scene_factory=(lambda: slicer.mrmlScene) if in_slicer else None,
                         retries=args.retries)
    except (StudyListError, CohortError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OutputLocationError as error:  # a full disk: one line, the studies done are kept
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1 if any(row["status"] != "done" for row in rows) else 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    if hasattr(slicer, "app"):
        slicer.util.exit(status)  # leave the Slicer application too
    else:
        sys.exit(status)
