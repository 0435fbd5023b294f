"""The Dask side of a cohort run: connecting to a cluster, or starting the embedded one.

Imported by run_cohort only, so that the in-process run (the Slicer batch) needs no Dask.
"""

from __future__ import annotations

import logging
import os

import psutil
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

# What one analysis needs at most, for sizing the embedded cluster: the 25-frame example
# peaks at 0.8 GB (Testing/Benchmarks/results/analyze_cpu.md); larger studies and the
# worker's own memory get the rest.
STUDY_MEMORY = 2 << 30


def local_cluster_size(workers: int | None = None, threads_per_worker: int | None = None,
                       memory_limit: int | str | None = None) -> dict:
    """The embedded LocalCluster for this machine: one single-threaded worker process per core
    (the analysis holds the GIL outside torch) as far as memory allows STUDY_MEMORY each; each
    worker's torch gets the cores left over (Dask starts workers with OMP_NUM_THREADS=1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    total = psutil.virtual_memory().total
    workers = workers or max(1, min(cores, total // STUDY_MEMORY))
    threads_per_worker = threads_per_worker or 1
    return {"n_workers": workers, "threads_per_worker": threads_per_worker,
            "memory_limit": memory_limit or total // workers,
            "torch_threads": max(1, cores // (workers * threads_per_worker))}


def connect(scheduler: str | None, dashboard_address: str | None = ":8787",
            **size) -> tuple[Client, LocalCluster | None, int | None]:
    """(client, the embedded cluster or None, torch threads per worker or None) for the
    cluster at ``scheduler``, else for a new LocalCluster (``size``: local_cluster_size's
    arguments). The caller closes both."""
    if scheduler:
        return Client(scheduler), None, None
    size = local_cluster_size(**size)
    torch_threads = size.pop("torch_threads")
    cluster = LocalCluster(processes=True, dashboard_address=dashboard_address, **size)
    client = Client(cluster)
    client.register_plugin(QuietFailures())
    return client, cluster, torch_threads


class QuietFailures(WorkerPlugin):
    """Embedded cluster: a failed study is reported once, by the run (with its reason), not also
    by its worker's "Compute Failed" log and traceback on the same terminal. Set up again on a
    restarted worker."""

    def setup(self, worker) -> None:
        logging.getLogger("distributed.worker").addFilter(lambda record: not str(record.msg).startswith("Compute Failed"))
