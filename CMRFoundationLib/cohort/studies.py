"""The studies of a cohort: a folder of study folders, a CSV manifest, or a DICOM database.

- A folder: each subfolder (not hidden) is a study, named by the subfolder.
- A CSV manifest (a ``.csv`` file): one row per study. Column ``path`` (required: a study
  folder, DICOM file, NIfTI or NRRD; relative to the manifest's folder), ``study_id``
  (optional: the study's name in the output, else taken from the path) and ``subject_id``
  (optional); every other column is a covariate, copied into the cohort table.
- A DICOM database: a folder with ``ctkDICOM.sql``, the database of 3D Slicer's DICOM
  module (CTK). Each StudyInstanceUID is a study (subject: PatientID); the files are
  looked up in the database by the worker that analyses the study, so the list of a
  large database is never held in one place.

Study names become folder names in the output, so they are made file-name safe and
must be unique.
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

DATABASE_FILE = "ctkDICOM.sql"  # Slicer's DICOM database (CTK)


class StudyListError(ValueError):
    """The studies cannot be listed (missing input, bad manifest, names that clash); nothing was run."""


@dataclass(frozen=True)
class Study:
    id: str  # output folder name, unique in the cohort
    source: str  # a study folder or file; for a DICOM database, the StudyInstanceUID
    subject_id: str = ""
    covariates: tuple[tuple[str, str], ...] = ()  # manifest columns, in their order
    database: str = ""  # the DICOM database folder, when the study is one of its studies

    @property
    def where(self) -> str:
        """The study's input as a person reads it (the cohort table's ``source``)."""
        return f"{self.database} (StudyInstanceUID {self.source})" if self.database else self.source

    def input(self) -> str | list[str]:
        """What analyze_study reads: the path, or the database study's files."""
        return database_files(self.database, self.source) if self.database else self.source


def find_studies(path: str | os.PathLike) -> list[Study]:
    """The studies of a folder of study folders, a CSV manifest or a DICOM database folder."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        studies = _from_manifest(path)
    elif (path / DATABASE_FILE).is_file():
        studies = _from_database(path)
    elif path.is_dir():
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        studies = [Study(_safe(p.name), str(p.resolve())) for p in folders]
    else:
        raise StudyListError(f"{path}: neither a folder of studies, a DICOM database folder ({DATABASE_FILE}) "
                             "nor a .csv manifest")
    _check_unique(studies, path)
    return studies


def database_files(database: str | os.PathLike, study_uid: str) -> list[str]:
    """The files of one study of a CTK DICOM database (absolute, or relative to the database folder)."""
    folder = Path(database)
    rows = _query(folder, "SELECT Images.Filename FROM Images JOIN Series ON Images.SeriesInstanceUID = "
                          "Series.SeriesInstanceUID WHERE Series.StudyInstanceUID = ? ORDER BY Images.Filename", (study_uid,))
    return [str(folder / name) for (name,) in rows]  # an absolute name stays as it is


def _from_manifest(manifest: Path) -> list[Study]:
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise StudyListError(f"{manifest}: cannot read the manifest ({error})") from None
    if not rows or "path" not in rows[0]:
        raise StudyListError(f"{manifest}: a manifest needs a header with a 'path' column and one row per study")
    covariate_names = [name for name in rows[0] if name not in ("path", "study_id", "subject_id")]
    paths = [(manifest.parent / row["path"].strip()).resolve() for row in rows]
    ids = [row.get("study_id", "").strip() for row in rows]
    default_ids = _names_of(paths)
    return [Study(_safe(ids[i] or default_ids[i]), str(paths[i]), (row.get("subject_id") or "").strip(),
                  tuple((name, (row.get(name) or "").strip()) for name in covariate_names))
            for i, row in enumerate(rows)]


def _from_database(folder: Path) -> list[Study]:
    rows = _query(folder, "SELECT Studies.StudyInstanceUID, Patients.PatientID FROM Studies "
                          "LEFT JOIN Patients ON Studies.PatientsUID = Patients.UID ORDER BY Studies.StudyInstanceUID")
    return [Study(_safe(uid), uid, patient or "", database=str(folder.resolve())) for uid, patient in rows]


def _query(folder: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    """Read-only: Slicer may have the database open."""
    try:
        with closing(sqlite3.connect(f"{(folder / DATABASE_FILE).resolve().as_uri()}?mode=ro", uri=True)) as connection:
            return connection.execute(sql, parameters).fetchall()
    except sqlite3.Error as error:
        raise StudyListError(f"{folder / DATABASE_FILE}: cannot read the DICOM database ({error})") from None


def _names_of(paths: list[Path]) -> list[str]:
    """Each study's folder name; where those clash (every study in a folder called DICOM), the
    path below the common folder of all studies."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names) or len(paths) < 2:
        return names
    common = Path(os.path.commonpath(paths))
    return ["__".join(p.relative_to(common).parts) for p in paths]


def _safe(name: str) -> str:
    """A name usable as a folder name anywhere (and not hidden)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def _check_unique(studies: list[Study], where: Path) -> None:
    seen: dict[str, Study] = {}
    for study in studies:
        if study.id in seen:
            raise StudyListError(f"{where}: two studies are named {study.id!r} ({seen[study.id].where} and {study.where}); "
                                 "give each a unique study_id in a manifest")
        seen[study.id] = study
