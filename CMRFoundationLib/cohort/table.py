"""The cohort table: one row per study, every measurement in a column (``cohort.csv`` and ``cohort.parquet``).

Columns, in order:

    study, subject_id, <manifest covariates>   who
    source, status, failure_reason, attempts,  how the run went: status is done, failed or pending
    analysed_in_this_run, seconds, finished    (not finished when the table was written)
    weights_sha256, software_version           what analysed it (study.weights_sha256)
    study_uid, errors, warnings,               the analysis' quality flags: counts of error and warning
    quality_flags, implausible                 flags, their codes, and values outside their plausible
                                               range (name=value), which are left out of their columns
    <measurements>                             study-level values by name (lv_edv, ...), then per AHA
                                               segment: wall_thickness_seg01, ...

Measurement columns follow the parts' declarations (analysis.parts.MEASUREMENTS: the key
ones, MeasurementSpec.summary_column, first), so the table has the same columns whichever
studies are done. The Parquet file keeps numbers
as numbers (a manifest covariate whose every value is a number too) and the unit of each
measurement column in its field metadata. pyarrow is needed for the Parquet file only:
without it (e.g. in Slicer's Python) the CSV is written alone.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

from ..analysis.parts import MEASUREMENTS
from ..files import atomic_write

log = logging.getLogger(__name__)

TABLE_CSV, TABLE_PARQUET = "cohort.csv", "cohort.parquet"
PENDING, DONE, FAILED = "pending", "done", "failed"
RUN_COLUMNS = ("source", "status", "failure_reason", "attempts", "analysed_in_this_run", "seconds", "finished",
               "weights_sha256", "software_version", "study_uid", "errors", "warnings", "quality_flags", "implausible")
# The key measurements first (MeasurementSpec.summary_column), then the others as the parts declare them.
MEASUREMENT_COLUMNS = tuple(sorted(MEASUREMENTS, key=lambda n: (MEASUREMENTS[n].summary_column is None,
                                                                MEASUREMENTS[n].summary_column or 0)))
_INTEGERS = {"attempts", "errors", "warnings"}
_FLOATS = {"seconds"}
_BOOLEANS = {"analysed_in_this_run"}


def measurement_column(name: str, segment) -> str:
    return name if segment is None else f"{name}_seg{int(segment):02d}"


def analysis_values(document: dict) -> dict:
    """The table's analysis columns of one analysis.json: study_uid, quality flags and measurements."""
    values, implausible = {}, {}
    for m in document["measurements"]:
        column = measurement_column(m["name"], m.get("segment"))
        if column not in values and column not in implausible:  # the first of a name, as StudyAnalysis.value
            # A cohort's averages must not take in a number the analysis itself flagged.
            (implausible if m.get("check") else values)[column] = m["value"]
    flags = [f for f in document.get("flags", []) if f["severity"] in ("error", "warning")]
    return {
        "study_uid": (document.get("study") or {}).get("study_uid") or "",
        "errors": sum(f["severity"] == "error" for f in flags),
        "warnings": sum(f["severity"] == "warning" for f in flags),
        "quality_flags": "; ".join(sorted({f["code"] for f in flags})),
        "implausible": "; ".join(f"{name}={value:.6g}" for name, value in implausible.items()),
        **values,
    }


class CohortTable:
    """The rows of every study of the run (in input order), written to OUT/cohort.csv and .parquet."""

    def __init__(self, out: Path, studies, min_interval_s: float = 10.0) -> None:
        self.out, self.min_interval_s = Path(out), min_interval_s
        self.covariates = list(dict.fromkeys(name for study in studies for name, _ in study.covariates))
        self.rows = {study.id: {"study": study.id, "subject_id": study.subject_id, **dict(study.covariates),
                                "source": study.where, "status": PENDING} for study in studies}
        self._written_at, self._took = -math.inf, 0.0

    def update(self, row: dict) -> None:
        self.rows[row["study"]] = {**self.rows[row["study"]], **row}

    def columns(self) -> list[str]:
        present = {key for row in self.rows.values() for key in row}
        per_segment = [c for n in MEASUREMENT_COLUMNS for s in range(1, 18) if (c := measurement_column(n, s)) in present]
        return ["study", "subject_id", *self.covariates, *RUN_COLUMNS, *MEASUREMENT_COLUMNS, *per_segment]

    def write_if_due(self) -> None:
        """Write now unless written recently; a large table is written less often (at most a fifth
        of the time goes into writing it)."""
        if time.monotonic() - self._written_at >= max(self.min_interval_s, 5 * self._took):
            self.write()

    def write(self) -> None:
        start = time.monotonic()
        columns, rows = self.columns(), list(self.rows.values())
        atomic_write(self.out / TABLE_CSV, lambda temp: _write_csv(temp, columns, rows))
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            log.info("pyarrow is not installed: %s written without %s", TABLE_CSV, TABLE_PARQUET)
        else:
            atomic_write(self.out / TABLE_PARQUET, lambda temp: _write_parquet(temp, columns, rows, self.covariates))
        self._written_at = time.monotonic()
        self._took = self._written_at - start


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    def text(value) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "no"
        return repr(value) if isinstance(value, float) else str(value)

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([text(row.get(c)) for c in columns] for row in rows)


def _write_parquet(path: Path, columns: list[str], rows: list[dict], covariates: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields, arrays = [], []
    for column in columns:
        values = [row.get(column) for row in rows]
        base = column.rsplit("_seg", 1)[0]
        metadata = {"unit": MEASUREMENTS[base].unit} if base in MEASUREMENTS else None
        if column in covariates:
            numbers = [_number(v) for v in values]
            kind = pa.float64() if all(n is not None or not v for n, v in zip(numbers, values)) else pa.string()
            values = numbers if kind == pa.float64() else [v or None for v in values]
        elif column in _INTEGERS:
            kind = pa.int64()
        elif column in _BOOLEANS:
            kind = pa.bool_()
        elif column in _FLOATS or metadata:
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(column, kind, metadata=metadata))
        arrays.append(pa.array(values, type=kind))
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), path)


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
