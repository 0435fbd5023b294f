"""Cohort runs: the analysis of many studies, on Dask or in one process, resumable.

    studies = find_studies("studies/")            # a folder of studies, a CSV manifest, a DICOM database
    result = run_cohort(studies, "out/")          # an embedded Dask LocalCluster; scheduler="tcp://..." for a cluster

Modules: studies (the input), study (one study on a worker: analysis, atomic output
folder, marker), table (the cohort table), run (the drivers: Dask and in-process), cluster
(the Dask cluster: connecting, or the embedded one and its size).
``cmrfm batch`` (cli.py) runs ``run_cohort``; the Slicer batch script runs ``run_serial``.
dask.distributed, tqdm and pyarrow (the ``cohort`` extra) are imported by run_cohort and
the Parquet writer only, so the in-process run works without them.
"""

from .run import CohortError, CohortResult, run_cohort, run_serial
from .studies import Study, StudyListError, find_studies
from .study import MARKER, Settings, StudyTimeout, analyze_one, weights_sha256
from .table import TABLE_CSV, TABLE_PARQUET

__all__ = [
    "MARKER",
    "TABLE_CSV",
    "TABLE_PARQUET",
    "CohortError",
    "CohortResult",
    "Settings",
    "Study",
    "StudyListError",
    "StudyTimeout",
    "analyze_one",
    "find_studies",
    "run_cohort",
    "run_serial",
    "weights_sha256",
]
