"""Raw MIMIC-style files or a MEDS dataset -> patient records (``medfuse records``, ``medfuse predict``).

Each admission becomes one record with its lab rows as they are in LABEVENTS (strings untouched) and its
discharge notes as raw text; nothing is cleaned here, so the records go through exactly the transforms
that ``prepare`` applies. Every source is read through its adapter's canonical relations and
``prepare``'s rules (:mod:`medfuse.data.rules`): the admission rules that need neither patients nor
diagnoses, the attachment of lab rows without HADM_ID, the discharge summaries and the labels.
:class:`RawRecords` reads the records in chunks, with each admission's subject, times and, given the label
definitions, its known labels (``predict --format meds``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa

from medfuse.data import rules
from medfuse.data.diseases import Disease


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
    ``(hadm_id, reason)`` of the admissions that cannot become a record (the admission rules of
    :mod:`medfuse.data.rules` but ``unknown_patient`` and ``no_diagnoses``). With ``diseases``, each chunk
    carries the labels the admission's diagnoses give (``prepare``'s rule).
    Raises :class:`~medfuse.data.raw.InputError` for an input that cannot be read at all.
    """

    def __init__(self, raw: str | Path, source: str, hadm_ids: list[int] | None = None,
                 hours_before_admission: float = 24.0, limit: int | None = None, meds=None,
                 diseases: list[Disease] | None = None, notes_dir: str | Path | None = None):
        import duckdb

        self.raw, self.source, self.diseases = Path(raw), source, diseases
        self.con = duckdb.connect()
        try:
            self.adapter = rules.open_adapter(self.raw, source, self.con, notes_dir=notes_dir, meds=meds)
            self._select(hadm_ids, hours_before_admission, limit)
        except BaseException:
            self.con.close()
            raise

    def _select(self, hadm_ids, hours_before_admission: float, limit: int | None) -> None:
        con = self.con
        rules.create_admission_rows(con, self.adapter.relation("admissions"), patients=False)
        con.execute("""CREATE TABLE adm AS SELECT subject_id, hadm_id, admittime, dischtime FROM admissions_rows
            WHERE reason IS NULL""")
        keep = "true"
        if hadm_ids is not None:
            con.register("wanted", pa.table({"hadm_id": pa.array(list(map(int, hadm_ids)), pa.int64())}))
            # every admission of the wanted patients claims its window, as in prepare's cohort
            con.execute("""DELETE FROM adm WHERE subject_id NOT IN
                (SELECT subject_id FROM adm WHERE hadm_id IN (SELECT hadm_id FROM wanted))""")
            keep = "hadm_id IN (SELECT hadm_id FROM wanted)"
        self.skipped = [(h, r) for h, r in con.execute(
            f"SELECT hadm_id, reason FROM admissions_rows WHERE reason IS NOT NULL AND ({keep}) ORDER BY ALL"
        ).fetchall()]
        rules.create_cohort(con, "adm", hours_before_admission, 0)
        rules.create_attachment_windows(con)
        con.execute(f"""CREATE TABLE chosen AS SELECT row_number() OVER (ORDER BY row) - 1 AS n, * FROM cohort
            WHERE {keep} ORDER BY n""" + (f" LIMIT {int(limit)}" if limit else ""))
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
        test = "l.itemid"
        if self.source == "meds":  # a test id that is no integer (LOINC/2160-0) travels as its label
            from medfuse.data.meds import NON_INTEGER_TEST_BASE

            test = f"CASE WHEN l.itemid > {NON_INTEGER_TEST_BASE} THEN li.label ELSE l.itemid::VARCHAR END"
            items = f"LEFT JOIN {self.adapter.relation('labitems')} li ON li.itemid = l.itemid"
        else:
            items = ""
        return f"""WITH l AS (SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, TRY_CAST(hadm_id AS BIGINT) AS hadm_id,
                         TRY_CAST(charttime AS TIMESTAMP) AS t, * EXCLUDE (subject_id, hadm_id)
                       FROM {self.adapter.relation('labevents')})
            SELECT c.n, {test} AS test, l.charttime, l.value, l.valuenum, l.unit, l.flag, l.ref_low, l.ref_high
            FROM l LEFT JOIN lab_windows w ON w.subject_id = CASE WHEN l.hadm_id IS NULL THEN l.subject_id END
              AND l.t >= w.lo AND l.t < w.hi
            JOIN chosen c ON c.hadm_id = COALESCE(l.hadm_id, w.hadm_id) {items}"""

    def _truth(self) -> None:
        """Table ``truth``: per chosen admission with a used diagnosis, its labels (``prepare``'s rules)."""
        rules.create_diagnosis_rows(self.con, self.adapter.relation("diagnoses"), "chosen")
        rules.create_labels(self.con, self.diseases)
        self.con.execute("""CREATE OR REPLACE TABLE truth AS SELECT c.n, l.* EXCLUDE (hadm_id)
            FROM labels l JOIN chosen c USING (hadm_id)""")

    def chunks(self, size: int | None = None) -> Iterator[RecordChunk]:
        """The records in admission order, ``size`` at a time (all at once without)."""
        con, size = self.con, max(int(size or self.admissions or 1), 1)
        con.execute(f"""CREATE OR REPLACE TABLE chunk_labs AS {self._labs_sql()}
            ORDER BY c.n, l.t, test, l.value, l.unit, l.flag""")  # one order, whatever the threads
        notes = self.adapter.relation("notes")
        if notes is not None:
            rules.create_note_rows(con, notes)
            con.execute("""CREATE OR REPLACE TABLE chunk_notes AS SELECT c.n, x.text FROM note_rows x
                JOIN chosen c USING (hadm_id) WHERE x.reason IS NULL ORDER BY c.n, x.t, x.rowid""")
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
                     hours_before_admission: float = 24.0, limit: int | None = None, meds=None,
                     notes_dir: str | Path | None = None) -> list[dict]:
    """One record dict per admission of ``raw`` (or of ``hadm_ids``), in admission order (:class:`RawRecords`);
    ``notes_dir``: the notes' own folder (MIMIC-IV-Note ships apart from MIMIC-IV)."""
    with RawRecords(raw, source, hadm_ids, hours_before_admission, limit, meds, notes_dir=notes_dir) as r:
        return [record for chunk in r.chunks() for record in chunk.records]



def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
