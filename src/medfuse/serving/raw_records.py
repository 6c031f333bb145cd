"""Raw MIMIC-style files or a MEDS dataset -> patient records (``medfuse records``, ``medfuse predict``).

Each admission becomes one record with its lab rows as they are in LABEVENTS (strings untouched) and its
discharge notes as raw text; nothing is cleaned here, so the records go through exactly the transforms
that ``prepare`` applies. Lab rows without HADM_ID are attached as ``prepare`` attaches them (the
shared rule in :func:`medfuse.data.transform.create_attachment_windows`). A MEDS dataset is read through
the same relations as ``prepare --source meds`` (:meth:`medfuse.data.meds.MedsDataset.relation`), so both
sources share this one path. :class:`RawRecords` reads the records in chunks, with each admission's
subject, times and, given the label definitions, its known labels (``predict --format meds``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa

from medfuse.data import transform
from medfuse.data.diseases import ICD_CODE_REGEX, Disease, normalized_icd_sql
from medfuse.data.raw import SPECS, csv_relation, locate

SKIP_REASONS = {  # an admission that cannot become a record, first rule that holds (prepare's reason names)
    "invalid_id": "hadm_id IS NULL OR subject_id IS NULL",
    "missing_time": "admittime IS NULL OR dischtime IS NULL",
    "discharge_before_admission": "dischtime < admittime",
    "duplicate": "row_number() OVER (PARTITION BY hadm_id ORDER BY admittime) > 1",
}


@dataclass
class RecordChunk:
    """Records of consecutive admissions and what a MEDS prediction file needs of each."""

    records: list[dict]
    subject_ids: list[int]
    admittimes: list[dt.datetime]
    dischtimes: list[dt.datetime]
    truth: np.ndarray | None  # [records, labels]: 1 / 0, NaN where the admission has no usable diagnosis


class RawRecords:
    """The admissions of a raw MIMIC folder (``mimic3``, ``mimic4``) or a MEDS dataset (``meds``, mapped by
    ``meds``, a :class:`~medfuse.config.MedsConfig`), on a DuckDB connection, read as records in chunks.

    ``hadm_ids`` picks admissions (every admission of their patients still claims its lab window, as in
    ``prepare``'s cohort); ``limit`` keeps the first ones in (subject, admission time) order. ``skipped`` lists
    ``(hadm_id, reason)`` of the admissions that cannot become a record (:data:`SKIP_REASONS`). With
    ``diseases``, each chunk carries the labels the admission's diagnoses give (``prepare``'s rule).
    Raises :class:`~medfuse.data.raw.InputError` for an input that cannot be read at all.
    """

    def __init__(self, raw: str | Path, source: str, hadm_ids: list[int] | None = None,
                 hours_before_admission: float = 24.0, limit: int | None = None, meds=None,
                 diseases: list[Disease] | None = None):
        import duckdb

        self.raw, self.source, self.diseases = Path(raw), source, diseases
        self.con = duckdb.connect()
        try:
            self._relation = self._relations(meds)
            self._select(hadm_ids, hours_before_admission, limit)
        except BaseException:
            self.con.close()
            raise

    def _relations(self, meds):
        """``name -> subquery`` over the raw tables (None for an absent or empty optional table)."""
        if self.source == "meds":
            from medfuse.config import MedsConfig
            from medfuse.data.meds import read_meds

            dataset = read_meds(self.raw, meds or MedsConfig())
            dataset.attach(self.con)
            return lambda name: dataset.relation(name) if dataset.files.get(name) is not None else None

        def read(name: str) -> str | None:
            f = locate(self.raw, self.source, name)
            return csv_relation(f, SPECS[self.source][name], name) if f is not None and f.has_rows else None

        return read

    def _select(self, hadm_ids, hours_before_admission: float, limit: int | None) -> None:
        con = self.con
        reasons = " ".join(f"WHEN {cond} THEN '{r}'" for r, cond in SKIP_REASONS.items())
        con.execute(f"""CREATE TABLE adm_rows AS SELECT *, CASE {reasons} END AS reason FROM (
            SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, TRY_CAST(hadm_id AS BIGINT) AS hadm_id,
              TRY_CAST(admittime AS TIMESTAMP) AS admittime, TRY_CAST(dischtime AS TIMESTAMP) AS dischtime
            FROM {self._relation('admissions')})""")
        con.execute("CREATE TABLE adm AS SELECT * EXCLUDE (reason) FROM adm_rows WHERE reason IS NULL")
        keep = "true"
        if hadm_ids is not None:
            con.register("wanted", pa.table({"hadm_id": pa.array(list(map(int, hadm_ids)), pa.int64())}))
            # every admission of the wanted patients claims its window, as in prepare's cohort
            con.execute("""DELETE FROM adm WHERE subject_id NOT IN
                (SELECT subject_id FROM adm WHERE hadm_id IN (SELECT hadm_id FROM wanted))""")
            keep = "hadm_id IN (SELECT hadm_id FROM wanted)"
        self.skipped = [(h, r) for h, r in con.execute(
            f"SELECT hadm_id, reason FROM adm_rows WHERE reason IS NOT NULL AND ({keep}) ORDER BY ALL").fetchall()]
        win_start, _ = transform.window_sql(hours_before_admission, 0)
        con.execute(f"CREATE TABLE cohort AS SELECT a.*, {win_start} AS win_start FROM adm a")
        transform.create_attachment_windows(con)
        con.execute(f"""CREATE TABLE chosen AS SELECT row_number() OVER (ORDER BY subject_id, admittime, hadm_id) - 1
            AS n, * FROM cohort WHERE {keep} ORDER BY n""" + (f" LIMIT {int(limit)}" if limit else ""))
        self.admissions = int(con.execute("SELECT count(*) FROM chosen").fetchall()[0][0])

    def __len__(self) -> int:
        return self.admissions

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _labs_sql(self) -> str:
        """Lab rows of the chosen admissions: ``n`` (admission), test, time, value, valuenum, unit, flag, range."""
        refs = ", l.ref_low, l.ref_high" if transform.has_reference_ranges(self.source) else \
            ", NULL AS ref_low, NULL AS ref_high"
        test = "l.itemid"
        if self.source == "meds":  # a test id that is no integer (LOINC/2160-0) travels as its label
            from medfuse.data.meds import NON_INTEGER_TEST_BASE

            test = f"CASE WHEN l.itemid > {NON_INTEGER_TEST_BASE} THEN li.label ELSE l.itemid::VARCHAR END"
            items = f"LEFT JOIN {self._relation('labitems')} li ON li.itemid = l.itemid"
        else:
            items = ""
        return f"""WITH l AS (SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, TRY_CAST(hadm_id AS BIGINT) AS hadm_id,
                         TRY_CAST(charttime AS TIMESTAMP) AS t, * EXCLUDE (subject_id, hadm_id)
                       FROM {self._relation('labevents')})
            SELECT c.n, {test} AS test, l.charttime, l.value, l.valuenum, l.unit, l.flag{refs}
            FROM l LEFT JOIN lab_windows w ON w.subject_id = CASE WHEN l.hadm_id IS NULL THEN l.subject_id END
              AND l.t >= w.lo AND l.t < w.hi
            JOIN chosen c ON c.hadm_id = COALESCE(l.hadm_id, w.hadm_id) {items}"""

    def _truth(self) -> None:
        """Table ``truth``: per chosen admission with a usable diagnosis, its labels (``prepare``'s rule)."""
        version = "9" if self.source == "mimic3" else "TRY_CAST(icd_version AS INTEGER)"
        labels = ", ".join(d.label_sql() for d in self.diseases)
        self.con.execute(f"""CREATE OR REPLACE TABLE truth AS
            WITH d AS (SELECT TRY_CAST(hadm_id AS BIGINT) AS hadm_id, {normalized_icd_sql('icd_code')} AS code,
                         {version} AS version FROM {self._relation('diagnoses')})
            SELECT c.n, {labels} FROM d JOIN chosen c USING (hadm_id)
            WHERE regexp_matches(d.code, '{ICD_CODE_REGEX}') AND d.version IN (9, 10) GROUP BY c.n""")

    def chunks(self, size: int | None = None) -> Iterator[RecordChunk]:
        """The records in admission order, ``size`` at a time (all at once without)."""
        con, size = self.con, max(int(size or self.admissions or 1), 1)
        con.execute(f"CREATE OR REPLACE TABLE chunk_labs AS {self._labs_sql()} ORDER BY c.n, l.t")
        notes = self._relation("notes")
        if notes is not None:
            kind = ("lower(trim(category)) = 'discharge summary' AND trim(COALESCE(iserror, '')) IN ('', '0')"
                    if self.source == "mimic3" else "true")
            con.execute(f"""CREATE OR REPLACE TABLE chunk_notes AS SELECT c.n, x.text
                FROM {notes} x JOIN chosen c ON c.hadm_id = TRY_CAST(x.hadm_id AS BIGINT)
                WHERE {kind} ORDER BY c.n, TRY_CAST(x.chartdate AS TIMESTAMP)""")
        if self.diseases:
            self._truth()
        for start in range(0, self.admissions, size):
            where = f"n >= {start} AND n < {start + size}"
            chosen = con.execute(f"SELECT n, subject_id, hadm_id, admittime, dischtime FROM chosen WHERE {where} "
                                 "ORDER BY n").fetchall()
            records = {n: {"id": int(h), "admittime": a.isoformat(), "dischtime": d.isoformat(), "labs": []}
                       for n, _, h, a, d in chosen}
            for n, test, time, value, valuenum, unit, flag, low, high in con.execute(
                    f"SELECT * FROM chunk_labs WHERE {where}").fetchall():
                lab = {"test": int(test) if test and str(test).strip().isdigit() else test,
                       "value": valuenum if valuenum not in (None, "") else value, "unit": unit, "time": time,
                       "flag": flag}
                lab.update({k: float(v) for k, v in (("ref_range_lower", low), ("ref_range_upper", high))
                            if v not in (None, "") and _is_number(v)})
                records[n]["labs"].append(lab)
            if notes is not None:
                for n, text in con.execute(f"SELECT n, text FROM chunk_notes WHERE {where}").fetchall():
                    records[n].setdefault("note", []).append(text)
            truth = None
            if self.diseases:
                known = {r[0]: r[1:] for r in con.execute(f"SELECT * FROM truth WHERE {where}").fetchall()}
                truth = np.array([known.get(n, [np.nan] * len(self.diseases)) for n, *_ in chosen], np.float64)
            yield RecordChunk(list(records.values()), [int(r[1]) for r in chosen], [r[3] for r in chosen],
                              [r[4] for r in chosen], truth)


def records_from_raw(raw: str | Path, source: str, hadm_ids: list[int] | None = None,
                     hours_before_admission: float = 24.0, limit: int | None = None, meds=None) -> list[dict]:
    """One record dict per admission of ``raw`` (or of ``hadm_ids``), in admission order (:class:`RawRecords`)."""
    with RawRecords(raw, source, hadm_ids, hours_before_admission, limit, meds) as r:
        return [record for chunk in r.chunks() for record in chunk.records]


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
