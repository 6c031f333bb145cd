"""New patients' records -> an in-memory cohort, through the same rules and transforms as ``prepare``.

Records are a source like any other: :func:`record_relations` is their adapter, giving the canonical
``admissions`` and ``labevents`` relations (:data:`medfuse.data.rules.RELATIONS`). The cohort and its lab
windows are :func:`medfuse.data.rules.create_cohort`'s; labs go through :mod:`medfuse.data.transform`
(typing, censored values, time window, unit conversion, per-test aggregation, abnormal-lab text) with the
model's frozen vocabulary in place of the tests ``prepare`` selects; notes (discharge summaries already)
through :func:`medfuse.data.sections.extract_sections`. The result is a
:class:`~medfuse.data.cohort.Cohort` held in memory, which the training code then reads unchanged
(note texts, lab values, normalisation with the frozen statistics).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from medfuse.data import rules, transform
from medfuse.data.cohort import Cohort
from medfuse.data.sections import ALLOWED_SECTIONS, extract_sections
from medfuse.serving.records import PatientRecord

UNKNOWN_TEST = -1  # itemid given to a test the vocabulary does not know (dropped as unknown_test)
_EPOCH = dt.datetime(2000, 1, 1)


@dataclass(frozen=True)
class Vocabulary:
    """What the transforms need from the training cohort, frozen in the model bundle."""

    lab_tests: pa.Table  # the cohort's lab_tests table: key, itemid, label, unit, median, scale, ...
    labels: list[str]
    source: str  # the training cohort's source: whether reference ranges flag abnormal results
    hours_before_admission: float
    window_hours: float
    clip: float

    def manifest(self) -> dict:
        """The parts of a cohort manifest that reading a cohort needs."""
        return {"labels": self.labels, "lab_normalization": {"clip": self.clip}, "source": self.source}

    def itemid_of(self) -> dict[str, int]:
        """Test label (lower case) -> itemid; a label several tests share maps to the most frequent one."""
        out: dict[str, int] = {}
        for label, itemid in zip(self.lab_tests.column("label").to_pylist(),
                                 self.lab_tests.column("itemid").to_pylist(), strict=True):
            out.setdefault(str(label).strip().lower(), int(itemid))
        return out


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, float):
        return repr(v)
    return str(v)


def naive(t: dt.datetime | None) -> dt.datetime | None:
    """A time as the transforms compare it: a time with a UTC offset in UTC, a time without one as written
    (MIMIC's times carry no offset); a record should not mix the two (docs/predict.md)."""
    if t is None or t.tzinfo is None:
        return t
    return t.astimezone(dt.UTC).replace(tzinfo=None)


def _time(t: dt.datetime | None) -> str | None:
    return None if t is None else naive(t).isoformat(sep=" ")


def record_relations(records: list[PatientRecord], vocab: Vocabulary, warnings: list[list[str]]) -> dict[str, pa.Table]:
    """The records adapter: ``admissions`` and ``labevents`` (:data:`~medfuse.data.rules.RELATIONS`) of the
    records, record i as admission and subject i (no patients, no diagnoses). A lab's test is its itemid, or
    its label looked up in the vocabulary (an unknown label is warned about in ``warnings[i]``); a lab
    without time is taken at admission."""
    ids = pa.array(np.arange(len(records)), pa.int64())
    admissions = pa.table({
        "subject_id": ids, "hadm_id": ids,
        "admittime": pa.array([naive(r.admittime) for r in records], pa.timestamp("us")),
        "dischtime": pa.array([naive(r.dischtime) for r in records], pa.timestamp("us")),
        "race": pa.nulls(len(records), pa.string()),
    })
    by_label = vocab.itemid_of()
    cols: dict[str, list] = {k: [] for k in rules.RELATIONS["labevents"]}
    for i, r in enumerate(records):
        unknown: Counter = Counter()
        for lab in r.labs:
            if isinstance(lab.test, int) or str(lab.test).strip().isdecimal():
                itemid = int(lab.test) if isinstance(lab.test, int) or str(lab.test).strip().isascii() \
                    else UNKNOWN_TEST
            else:
                itemid = by_label.get(str(lab.test).strip().lower(), UNKNOWN_TEST)
                if itemid == UNKNOWN_TEST:
                    unknown[str(lab.test)] += 1
            cols["subject_id"].append(str(i))
            cols["hadm_id"].append(str(i))
            cols["itemid"].append(str(itemid))
            cols["charttime"].append(_time(lab.time or r.admittime) or _time(_EPOCH))
            cols["value"].append(_text(lab.value))
            cols["valuenum"].append(None)
            cols["unit"].append(lab.unit)
            cols["flag"].append(lab.flag)
            cols["ref_low"].append(_text(lab.ref_range_lower))
            cols["ref_high"].append(_text(lab.ref_range_upper))
        if unknown:
            warnings[i].append("unknown test label(s): " + ", ".join(sorted(unknown)))
    return {"admissions": admissions, "labevents": pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})}


def _sections(r: PatientRecord, warnings: list[str]) -> dict[str, str | None]:
    """The record's four sections: from its raw note(s) by the section rules, or as given."""
    if r.sections is not None:
        return {s: (getattr(r.sections, s) or None) for s in ALLOWED_SECTIONS}
    notes = [r.note] if isinstance(r.note, str) else list(r.note or [])
    parts: dict[str, list[str]] = {s: [] for s in ALLOWED_SECTIONS}
    for text in notes:
        if not text or not text.strip():
            continue
        found = extract_sections(text)
        if not found:
            warnings.append("the note has no allowed section (chief complaint, present illness, past history, "
                            "medications on admission); it is not used")
        for s, v in found.items():
            if v is not None:
                parts[s].append(v)
    return {s: "\n".join(v) if v else None for s, v in parts.items()}


def vocabulary_connection(vocab: Vocabulary):
    """A DuckDB connection holding the vocabulary's tables (``lab_tests``, ``labitems``, ``lab_units``), made
    once and reused by :func:`records_to_cohort` (one thread at a time)."""
    import duckdb

    con = duckdb.connect(config={"threads": 1})
    con.register("vocab_tests", vocab.lab_tests)
    con.execute("""CREATE TABLE lab_tests AS SELECT row_number() OVER () - 1 AS rank, itemid, label, unit
        FROM vocab_tests""")
    con.unregister("vocab_tests")
    con.execute("CREATE TABLE labitems AS SELECT itemid, label FROM lab_tests")
    con.execute("CREATE TABLE lab_units AS SELECT itemid, unit FROM lab_tests WHERE unit <> ''")
    con.execute("CREATE TABLE lab_windows (subject_id BIGINT, lo TIMESTAMP, hi TIMESTAMP, hadm_id BIGINT)")
    return con


def records_to_cohort(records: list[PatientRecord], vocab: Vocabulary, con=None) -> tuple[Cohort, list[list[str]]]:
    """An in-memory cohort of ``records`` (row i = record i, ``hadm_id`` = i, split ``test``, labels 0) and
    each record's warnings (unknown tests, values dropped by reason, a note without allowed section).

    ``con``: a :func:`vocabulary_connection` to reuse (a new one is made and closed otherwise).
    """
    n = len(records)
    warnings: list[list[str]] = [[] for _ in range(n)]
    own = con is None
    con = vocabulary_connection(vocab) if own else con
    try:
        relations = record_relations(records, vocab, warnings)
        con.register("record_admissions", relations["admissions"])
        rules.create_cohort(con, "record_admissions", vocab.hours_before_admission, vocab.window_hours)
        refs = transform.has_reference_ranges(vocab.source)
        con.execute("DROP TABLE IF EXISTS unit_pairs")  # never one left by an earlier call that failed
        con.register("record_labs", relations["labevents"])
        transform.create_lab_observations(con, "record_labs", refs)
        transform.convert_units(con, refs)
        dropped = con.execute("""SELECT hadm_id, reason, count(*) FROM lab_obs WHERE reason IS NOT NULL
            GROUP BY ALL ORDER BY ALL""").fetchall()
        for row, code, count in dropped:
            warnings[int(row)].append(f"{count} lab value(s) not used: {transform.DROP_REASONS[code]}")
        transform.create_lab_aggregates(con, refs)
        labs = transform.lab_wide_table(con)
        transform.create_lab_text(con)
        lab_text = con.sql("SELECT hadm_id, text, n_abnormal FROM lab_text ORDER BY row").to_arrow_table()
        has_labs = set(con.execute("SELECT DISTINCT hadm_id FROM lab_agg").fetchnumpy()["hadm_id"].tolist())
        con.unregister("record_admissions")
        con.unregister("record_labs")
    finally:
        if own:
            con.close()
    sections = [_sections(r, warnings[i]) for i, r in enumerate(records)]
    with_note = [i for i, s in enumerate(sections) if any(v is not None for v in s.values())]
    notes = pa.table({"hadm_id": pa.array(with_note, pa.int64()),
                      **{s: pa.array([sections[i][s] for i in with_note], pa.string()) for s in ALLOWED_SECTIONS},
                      "n_notes": pa.array([1] * len(with_note), pa.int32())})
    hadm = pa.array(np.arange(n), pa.int64())
    tables = {
        "admissions": pa.table({"subject_id": hadm, "hadm_id": hadm,
                                "has_labs": pa.array([i in has_labs for i in range(n)]),
                                "has_notes": pa.array([i in set(with_note) for i in range(n)])}),
        "labs": labs,
        "lab_text": lab_text,
        "notes": notes,
        "lab_tests": vocab.lab_tests,
        "labels": pa.table({"hadm_id": hadm, **{name: pa.array(np.zeros(n, np.int8)) for name in vocab.labels}}),
        "splits": pa.table({"subject_id": hadm, "hadm_id": hadm, "split": pa.array(["test"] * n)}),
    }
    return Cohort.from_tables(tables, vocab.manifest()), warnings


def cohort_chunks(path, vocab: Vocabulary, batch_size: int = 256,
                  split: str | None = None) -> Iterator[tuple[Cohort, np.ndarray | None]]:
    """A prepared cohort folder in in-memory chunks over the model's vocabulary: ``(cohort, known labels)``.

    The cohort's aggregates (original units) are realigned to the vocabulary by test (a test the cohort
    lacks is not measured) and normalised later with the model's frozen statistics; its note sections
    and abnormal-lab text are read as ``prepare`` wrote them.
    """
    import pyarrow.compute as pc

    disk = Cohort(path)
    rows = disk.rows(split)
    present = set(disk.table("labs").schema.names) if disk.has_table("labs") else set()
    wanted = [f"{k}__{a}" for k in vocab.lab_tests.column("key").to_pylist() for a in transform.AGGREGATES]
    labs = disk.table("labs", columns=["hadm_id", *[c for c in wanted if c in present]])
    admissions, labels = disk.table("admissions"), disk.table("labels")
    known = [n for n in vocab.labels if n in labels.column_names]
    side = {name: disk.table(name) for name in ("notes", "lab_text") if disk.has_table(name)}
    for start in range(0, len(rows), batch_size):
        take = pa.array(rows[start:start + batch_size])
        adm = admissions.take(take)
        n = adm.num_rows
        lab = labs.take(take)
        lab_cols = {"hadm_id": lab.column("hadm_id")}
        for c in wanted:
            lab_cols[c] = lab.column(c) if c in present else pa.nulls(n, pa.float64())
        ids = adm.column("hadm_id")
        tables = {
            "admissions": adm,
            "labs": pa.table(lab_cols),
            **{name: t.filter(pc.is_in(t.column("hadm_id"), ids)) for name, t in side.items()},
            "lab_tests": vocab.lab_tests,
            "labels": pa.table({"hadm_id": ids, **{name: labels.column(name).take(take) if name in known
                                                   else pa.array(np.zeros(n, np.int8)) for name in vocab.labels}}),
            "splits": pa.table({"subject_id": adm.column("subject_id"), "hadm_id": ids, "split": pa.array(["test"] * n)}),
        }
        cohort = Cohort.from_tables(tables, vocab.manifest())
        yield cohort, (cohort.labels() if len(known) == len(vocab.labels) else None)
