"""Raw MIMIC-III / MIMIC-IV files: where they are, which columns are required, and reading them.

:class:`CsvSource` is the adapter of both layouts: it gives their tables as the canonical relations of
:data:`medfuse.data.rules.RELATIONS`. Structural problems (missing file or column, unreadable or truncated
gzip, empty required table) raise :class:`InputError` with the file and column named. Row-level problems
are left to the rules (:mod:`medfuse.data.rules`), which drop or repair rows and count each by reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from medfuse.data.rules import RELATIONS


class InputError(ValueError):
    """A raw input that cannot be used at all; the message names the file (and column)."""


@dataclass(frozen=True)
class TableSpec:
    """One raw table: its file stem per source and the columns we need, keyed by our own name."""

    stem: str
    columns: dict[str, str]  # our name -> raw column name (lower-case)
    required: bool = True
    long_rows: bool = False  # rows may exceed DuckDB's default 2 MB line limit (free text)
    optional: tuple[str, ...] = ()  # our names of columns that may be absent (then read as NULL)
    derived: dict[str, str] = field(default_factory=dict)  # canonical column -> SQL over our names


SPECS: dict[str, dict[str, TableSpec]] = {
    "mimic3": {
        "patients": TableSpec("PATIENTS", {"subject_id": "subject_id", "gender": "gender", "dob": "dob"}),
        "admissions": TableSpec(
            "ADMISSIONS",
            {"subject_id": "subject_id", "hadm_id": "hadm_id", "admittime": "admittime", "dischtime": "dischtime",
             "race": "ethnicity"},
            optional=("race",),
        ),
        "diagnoses": TableSpec("DIAGNOSES_ICD", {"subject_id": "subject_id", "hadm_id": "hadm_id", "icd_code": "icd9_code"},
                               derived={"icd_version": "9"}),  # every MIMIC-III code is ICD-9
        "labitems": TableSpec("D_LABITEMS", {"itemid": "itemid", "label": "label", "fluid": "fluid", "category": "category"}),
        "labevents": TableSpec(
            "LABEVENTS",
            {
                "subject_id": "subject_id", "hadm_id": "hadm_id", "itemid": "itemid", "charttime": "charttime",
                "value": "value", "valuenum": "valuenum", "unit": "valueuom", "flag": "flag",
            },
        ),
        "notes": TableSpec(
            "NOTEEVENTS",
            {
                "hadm_id": "hadm_id", "charttime": "chartdate", "category": "category",
                "iserror": "iserror", "text": "text",
            },
            required=False,
            long_rows=True,
            derived={"error": "trim(COALESCE(iserror, '')) NOT IN ('', '0')"},
        ),
    },
    "mimic4": {
        "patients": TableSpec(
            "hosp/patients",
            {"subject_id": "subject_id", "gender": "gender", "anchor_age": "anchor_age", "anchor_year": "anchor_year"},
        ),
        "admissions": TableSpec(
            "hosp/admissions",
            {"subject_id": "subject_id", "hadm_id": "hadm_id", "admittime": "admittime", "dischtime": "dischtime",
             "race": "race"},
            optional=("race",),
        ),
        "diagnoses": TableSpec(
            "hosp/diagnoses_icd",
            {"subject_id": "subject_id", "hadm_id": "hadm_id", "icd_code": "icd_code", "icd_version": "icd_version"},
        ),
        "labitems": TableSpec(
            "hosp/d_labitems", {"itemid": "itemid", "label": "label", "fluid": "fluid", "category": "category"}
        ),
        "labevents": TableSpec(
            "hosp/labevents",
            {
                "subject_id": "subject_id", "hadm_id": "hadm_id", "itemid": "itemid", "charttime": "charttime",
                "value": "value", "valuenum": "valuenum", "unit": "valueuom", "flag": "flag",
                "ref_low": "ref_range_lower", "ref_high": "ref_range_upper",
            },
        ),
        "notes": TableSpec("note/discharge", {"hadm_id": "hadm_id", "charttime": "charttime", "text": "text"},
                           required=False, long_rows=True,  # the table holds discharge summaries only
                           derived={"category": "'Discharge summary'", "error": "false"}),
    },
}


@dataclass
class RawFile:
    """A located raw file with its header (lower-cased names) and whether it has any data row."""

    path: Path
    header: list[str]
    has_rows: bool


def find_file(root: Path, stem: str) -> Path | None:
    """``stem.csv.gz`` or ``stem.csv``, matching the file name case-insensitively."""
    folder = root / Path(stem).parent
    if not folder.is_dir():
        return None
    wanted = {f"{Path(stem).name}.csv.gz".lower(), f"{Path(stem).name}.csv".lower()}
    matches = sorted(p for p in folder.iterdir() if p.name.lower() in wanted)
    return matches[0] if matches else None  # .csv sorts before .csv.gz


def _probe(path: Path) -> tuple[list[str], bool]:
    """Read the header and check that at least one data line follows, without reading the whole file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(1 << 16)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    text = head.decode("utf-8-sig", errors="replace")
    first, _, rest = text.replace("\r\n", "\n").partition("\n")
    if not first.strip():
        raise InputError(f"{path}: empty file (no header line)")
    header = next(csv.reader(io.StringIO(first)))
    names = [h.strip().strip('"').strip().lower() for h in header]
    return names, bool(rest.strip())


def find_notes(notes_dir: Path, stem: str) -> Path:
    """The notes table in a folder of its own (MIMIC-IV-Note ships apart from MIMIC-IV): ``notes_dir``
    may hold ``note/discharge.csv.gz`` (the ``mimic-iv-note/2.2`` folder) or ``discharge.csv.gz`` itself."""
    if not notes_dir.is_dir():
        raise InputError(f"{notes_dir}: notes folder not found")
    name = Path(stem).name
    for folder in dict.fromkeys((notes_dir / Path(stem).parent, notes_dir)):
        path = find_file(folder, name)
        if path is not None:
            return path
    raise InputError(f"{notes_dir}: no {stem}.csv.gz or {name}.csv.gz in the notes folder (plain .csv is accepted too)")


def locate(root: Path, source: str, name: str, notes_dir: Path | None = None) -> RawFile | None:
    """Find and probe one raw table; ``None`` for a missing optional table. With ``notes_dir``, the notes
    table is read from there (and must exist) instead of from ``root``."""
    spec = SPECS[source][name]
    path = find_notes(notes_dir, spec.stem) if notes_dir is not None and name == "notes" else find_file(root, spec.stem)
    if path is None:
        if spec.required:
            raise InputError(f"{root / spec.stem}.csv.gz: required file not found (plain .csv is accepted too)")
        return None
    header, has_rows = _probe(path)
    if not has_rows:
        if spec.required:
            raise InputError(f"{path}: required table is empty (header only)")
        return RawFile(path, header, False)
    missing = [raw for ours, raw in spec.columns.items() if raw not in header and ours not in spec.optional]
    if missing:
        raise InputError(f"{path}: missing required column {missing[0].upper()!r} (found: {', '.join(header)})")
    return RawFile(path, header, True)


def csv_relation(f: RawFile, spec: TableSpec, name: str) -> str:
    """A DuckDB subquery over a located raw table with its needed columns, as text, under our column names.

    Rows the CSV parser rejects (invalid UTF-8, wrong field count) are skipped into table ``rej_<name>``.
    """
    names = "[" + ", ".join(f"'{h}'" for h in f.header) + "]"
    path = str(f.path).replace("'", "''")
    columns = ", ".join(f'"{raw}" AS {ours}' if raw in f.header else f"NULL::VARCHAR AS {ours}"
                        for ours, raw in spec.columns.items())  # only an optional column may be absent
    # A larger line limit only where needed: it slows the LABEVENTS scan by a quarter.
    long_rows = ", max_line_size=16777216" if spec.long_rows else ""
    return (
        f"(SELECT {columns} FROM read_csv('{path}', header=true, names={names}, all_varchar=true, delim=',', "
        f"quote='\"', escape='\"', store_rejects=true, rejects_table='rej_{name}', "
        f"rejects_scan='rejscan_{name}', buffer_size=33554432{long_rows}))"
    )


class CsvSource:
    """The adapter of a MIMIC-III (``mimic3``) or MIMIC-IV (``mimic4``) folder: its tables as the canonical
    relations, each file located (and checked) when first needed; ``notes_dir``: the notes table's folder."""

    def __init__(self, root: Path, source: str, notes_dir: Path | None = None):
        self.root, self.name, self.notes_dir = root, source, notes_dir
        self.specs = SPECS[source]
        self.files: dict[str, RawFile | None] = {}

    def file(self, name: str) -> RawFile | None:
        if name not in self.files:
            self.files[name] = locate(self.root, self.name, name, self.notes_dir)
        return self.files[name]

    @property
    def has_race(self) -> bool:
        return self.specs["admissions"].columns["race"] in self.file("admissions").header

    def relation(self, name: str) -> str | None:
        """Relation ``name`` (:data:`~medfuse.data.rules.RELATIONS`) over the file, read by :func:`csv_relation`."""
        f, spec = self.file(name), self.specs[name]
        if f is None or not f.has_rows:
            return None
        columns = ", ".join(f"{spec.derived[c]} AS {c}" if c in spec.derived else c if c in spec.columns
                            else f"NULL::{t} AS {c}" for c, t in RELATIONS[name].items())
        return f"(SELECT {columns} FROM {csv_relation(f, spec, name)})"

    def create_split_of_patient(self, con) -> None:
        """MIMIC has no split of its own."""

    def summary(self) -> None:
        """Nothing beyond the row accounts."""
