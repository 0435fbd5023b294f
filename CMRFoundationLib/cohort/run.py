"""Running a cohort: on Dask (``run_cohort``, ``cmrfm batch``) or in this process (``run_serial``,
the Slicer batch script). Both share ``_Cohort``: which studies still need a run, the retries,
and the cohort table.

A study whose folder holds a marker (study.py) written with the same weights, software
version and kind of outputs is done and skipped; one done with other weights or another
version is analysed again, and the run says how many and why. A failed attempt (an
exception, or no result within the timeout) is retried up to ``retries`` times, then the
study is recorded as failed with the reason of its last attempt; the others go on. A
worker that dies (killed, out of memory) is Dask's business: the scheduler gives its
studies to another worker, and gives up on a study that killed several workers
(KilledWorker, ``distributed.scheduler.allowed-failures``), which is then failed at once.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..analysis import AnalysisOptions
from ..files import OutputLocationError, check_output_location
from ..weights import check_folder_approved
from .studies import Study
from .study import Settings, analyze_one, read_marker, remove_leftovers, weights_sha256
from .table import FAILED, PENDING, TABLE_CSV, CohortTable

LOCK_FILE = ".cohort.lock"


class CohortError(Exception):
    """The run cannot start (another run holds the output folder, no weights or refused ones);
    nothing was analysed."""


@dataclass
class CohortResult:
    rows: list[dict]  # the cohort table's rows, in input order
    done_before: int  # skipped: finished by an earlier run
    done: int  # finished in this run
    failed: int

    @property
    def pending(self) -> int:
        return sum(row["status"] == PENDING for row in self.rows)


def run_cohort(studies: list[Study], out: str | os.PathLike, options: AnalysisOptions | None = None, *,
               scheduler: str | None = None, workers: int | None = None, threads_per_worker: int | None = None,
               memory_limit: int | str | None = None, retries: int = 2, timeout_s: float | None = None,
               dashboard_address: str | None = ":8787", table_interval_s: float = 10.0,
               progress: bool = True) -> CohortResult:
    """Analyse ``studies`` on Dask: the cluster at ``scheduler`` (an address), else an embedded
    LocalCluster (cluster.local_cluster_size). Messages and the progress bar go to stderr."""
    from distributed import KilledWorker, as_completed
    from tqdm import tqdm

    from .cluster import connect

    out = Path(out)
    with _only_run(out):
        cohort = _Cohort(studies, out, Settings(options or AnalysisOptions(), timeout_s), retries, table_interval_s,
                         log=lambda message: print(message, file=sys.stderr, flush=True))
        if not cohort.pending:
            return cohort.finish()
        client, cluster, torch_threads = connect(scheduler, dashboard_address, workers=workers,
                                                 threads_per_worker=threads_per_worker, memory_limit=memory_limit)
        cohort.settings = Settings(cohort.settings.options, timeout_s, torch_threads)
        with client, cluster or nullcontext():
            threads = client.nthreads()  # worker address -> threads
            cohort.log(f"Dask: {len(threads)} worker(s), {sum(threads.values())} thread(s); "
                       f"dashboard: {client.dashboard_link}")
            bar = tqdm(total=len(cohort.pending), desc="studies", unit="study", file=sys.stderr, disable=not progress,
                       dynamic_ncols=True)
            cohort.log = lambda message: bar.write(message, file=sys.stderr)
            run_id = uuid.uuid4().hex[:8]  # keys unique on a shared cluster; "analyze-study" groups them on the dashboard

            def submit(study: Study):
                attempt = cohort.attempts[study.id] + 1
                future = client.submit(analyze_one, study, str(out), cohort.settings, attempt=attempt,
                                       key=("analyze-study", study.id, f"{run_id}-{attempt}"))
                running[future] = study
                return future

            running: dict = {}
            completed = as_completed([submit(study) for study in cohort.pending])
            try:
                for future in completed:
                    study, again = running.pop(future), False
                    try:
                        cohort.finished(future.result())
                    except OutputLocationError as error:  # every next study would fail on it too
                        cohort.stop(study, error, cohort.done_before + cohort.done + cohort.failed_count + 1,
                                    len(studies))
                    except KilledWorker as error:  # Dask gave up after several workers died: no retry
                        cohort.failed(study, error, retry=False)
                    except Exception as error:
                        again = cohort.failed(study, error)
                    future.release()  # its result is in the table: the cluster can forget it
                    if again:
                        completed.add(submit(study))
                    else:
                        bar.set_postfix_str(f"done {cohort.done}, failed {cohort.failed_count}", refresh=False)
                        bar.update(1)
            finally:  # also when interrupted: the table shows what finished
                bar.close()
                cohort.log = lambda message: print(message, file=sys.stderr, flush=True)
                cohort.write_table_if_possible()
        return cohort.finish()


def run_serial(studies: list[Study], out: str | os.PathLike, options: AnalysisOptions | None = None, *,
               extra: Callable[[object, Path], None] | None = None, outputs: str = "analysis", retries: int = 2,
               timeout_s: float | None = None, log: Callable[[str], None] = print) -> CohortResult:
    """The same run, one study after the other in this process (the Slicer batch: ``extra``
    adds its scene files to each study folder, ``outputs`` names them for the skip check)."""
    out = Path(out)
    with _only_run(out):
        cohort = _Cohort(studies, out, Settings(options or AnalysisOptions(), timeout_s, outputs=outputs), retries,
                         0.0, log)
        for number, study in enumerate(cohort.pending, 1):
            log(f"[{number}/{len(cohort.pending)}] {study.id}: analysing")
            while True:
                try:
                    cohort.finished(analyze_one(study, str(out), cohort.settings, extra=extra,
                                                attempt=cohort.attempts[study.id] + 1))
                except OutputLocationError as error:  # every next study would fail on it too
                    cohort.stop(study, error, number, len(cohort.pending))
                except Exception as error:  # never stops the batch; the reason goes into the table
                    if cohort.failed(study, error):
                        continue
                break
        return cohort.finish()


class _Cohort:
    def __init__(self, studies: list[Study], out: Path, settings: Settings, retries: int, table_interval_s: float,
                 log: Callable[[str], None]) -> None:
        self.out, self.settings, self.retries, self.log = out, settings, retries, log
        try:
            check_folder_approved(settings.options.weights_dir)  # a tampered folder is refused, not half used
            self.expected = {"weights_sha256": weights_sha256(settings.options.weights_dir),
                             "software_version": __version__, "outputs": settings.outputs}
        except ValueError as error:  # WeightsError: a run without models would measure nothing
            raise CohortError(str(error)) from None
        self.table = CohortTable(out, studies, table_interval_s)
        self.attempts: Counter[str] = Counter()
        self.done = self.failed_count = 0
        self.pending: list[Study] = []
        remove_leftovers(out)
        stale: Counter[str] = Counter()
        for study in studies:
            marker = read_marker(out / study.id)
            changed = [key for key, value in self.expected.items() if marker and marker.get(key) != value]
            if marker and not changed:
                self.table.update({**marker["row"], "analysed_in_this_run": False})
                continue
            self.pending.append(study)
            if marker:
                stale["; ".join(f"{key} {marker.get(key)} (now {self.expected[key]})" for key in changed)] += 1
        self.done_before = len(studies) - len(self.pending)
        log(f"{len(studies)} studies: {self.done_before} done before (skipped), {len(self.pending)} to analyse")
        for why, count in stale.items():
            log(f"{count} of them were analysed with other settings, analysed again: {why}")
        self.table.write()

    def finished(self, row: dict) -> None:
        self.done += 1
        self.table.update({**row, "analysed_in_this_run": True})
        self.table.write_if_due()

    def failed(self, study: Study, error: BaseException, retry: bool = True) -> bool:
        """Record a failed attempt; True when the study should be tried again."""
        self.attempts[study.id] += 1
        attempts, reason = self.attempts[study.id], f"{type(error).__name__}: {error}"
        again = retry and attempts <= self.retries
        self.log(f"{study.id}: attempt {attempts} failed: {reason}" + ("; trying again" if again else "; recorded as failed"))
        if again:
            return True
        self.failed_count += 1
        self.table.update({"study": study.id, "status": FAILED, "failure_reason": reason, "attempts": attempts,
                           "analysed_in_this_run": True, "software_version": __version__,
                           "weights_sha256": self.expected["weights_sha256"]})
        self.table.write_if_due()
        return False

    def stop(self, study: Study, error: OutputLocationError, number: int, total: int) -> None:
        """The output location failed: record the study, keep what is done, stop the run."""
        self.failed(study, error, retry=False)
        self.write_table_if_possible()
        raise OutputLocationError(f"{error}; the batch stopped at {study.id} ({number} of {total}): "
                                  "the studies done are kept, run it again to continue") from None

    def write_table_if_possible(self) -> None:
        """Write the table, unless the output disk will not take it (the run is stopping for that)."""
        try:
            self.table.write()
        except OSError as error:
            self.log(f"the cohort table could not be written: {error}")

    def finish(self) -> CohortResult:
        self.table.write()
        remove_leftovers(self.out)  # of attempts on workers that died
        result = CohortResult(list(self.table.rows.values()), self.done_before, self.done, self.failed_count)
        self.log(f"{self.done_before + self.done} of {len(result.rows)} studies done ({self.done} in this run), "
                 f"{self.failed_count} failed; table: {self.out / TABLE_CSV}")
        return result


@contextmanager
def _only_run(out: Path):
    """One run per output folder at a time (a lock the system drops when the run dies), in an
    output folder that can be written (OutputLocationError before any study otherwise)."""
    check_output_location(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(out / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CohortError(f"another batch run is writing into {out}; wait for it or choose another folder") from None
        yield
