"""Raw MIMIC-style files -> patient records (``medfuse records``): new patients for ``predict`` and the service.

Each admission becomes one record with its lab rows as they are in LABEVENTS (strings untouched) and its
discharge notes as raw text; nothing is cleaned here, so the records go through exactly the transforms
that ``prepare`` applies. Lab rows without HADM_ID are attached as ``prepare`` attaches them (the
shared rule in :func:`medfuse.data.transform.create_attachment_windows`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from medfuse.data import transform
from medfuse.data.raw import SPECS, csv_relation, locate


def _read(root: Path, source: str, name: str) -> str | None:
    """A subquery over raw table ``name``, or None when the optional table is absent or empty."""
    f = locate(root, source, name)
    return csv_relation(f, SPECS[source][name], name) if f is not None and f.has_rows else None


def records_from_raw(raw: str | Path, source: str, hadm_ids: list[int] | None = None,
                     hours_before_admission: float = 24.0, limit: int | None = None) -> list[dict]:
    """One record dict per admission of ``raw`` (or of ``hadm_ids``), in admission order."""
    import duckdb

    raw = Path(raw)
    con = duckdb.connect()
    try:
        con.execute(f"""CREATE TABLE adm AS SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id,
            TRY_CAST(hadm_id AS BIGINT) AS hadm_id, TRY_CAST(admittime AS TIMESTAMP) AS admittime,
            TRY_CAST(dischtime AS TIMESTAMP) AS dischtime FROM {_read(raw, source, 'admissions')}
            WHERE TRY_CAST(hadm_id AS BIGINT) IS NOT NULL AND TRY_CAST(admittime AS TIMESTAMP) IS NOT NULL
              AND TRY_CAST(dischtime AS TIMESTAMP) >= TRY_CAST(admittime AS TIMESTAMP)""")
        if hadm_ids is not None:
            con.register("wanted", pa.table({"hadm_id": pa.array(list(map(int, hadm_ids)), pa.int64())}))
            # every admission of the wanted patients claims its window, as in prepare's cohort
            con.execute("""DELETE FROM adm WHERE subject_id NOT IN
                (SELECT subject_id FROM adm WHERE hadm_id IN (SELECT hadm_id FROM wanted))""")
        win_start, _ = transform.window_sql(hours_before_admission, 0)
        con.execute(f"CREATE TABLE cohort AS SELECT a.*, {win_start} AS win_start FROM adm a")
        transform.create_attachment_windows(con)
        keep = "hadm_id IN (SELECT hadm_id FROM wanted)" if hadm_ids is not None else "true"
        con.execute(f"CREATE TABLE chosen AS SELECT * FROM cohort WHERE {keep} ORDER BY subject_id, admittime, hadm_id"
                    + (f" LIMIT {int(limit)}" if limit else ""))
        refs = ", ref_low, ref_high" if source == "mimic4" else ", NULL AS ref_low, NULL AS ref_high"
        labs = con.execute(f"""
            WITH l AS (SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, TRY_CAST(hadm_id AS BIGINT) AS hadm_id,
                         TRY_CAST(charttime AS TIMESTAMP) AS t, * EXCLUDE (subject_id, hadm_id)
                       FROM {_read(raw, source, 'labevents')})
            SELECT COALESCE(l.hadm_id, w.hadm_id) AS owner, l.itemid, l.charttime, l.value, l.valuenum, l.unit,
              l.flag{refs}
            FROM l LEFT JOIN lab_windows w ON w.subject_id = CASE WHEN l.hadm_id IS NULL THEN l.subject_id END
              AND l.t >= w.lo AND l.t < w.hi
            WHERE COALESCE(l.hadm_id, w.hadm_id) IN (SELECT hadm_id FROM chosen)""").fetchall()
        notes_src = _read(raw, source, "notes")
        notes = []
        if notes_src is not None:
            kind = ("lower(trim(category)) = 'discharge summary' AND trim(COALESCE(iserror, '')) IN ('', '0')"
                    if source == "mimic3" else "true")
            notes = con.execute(f"""SELECT TRY_CAST(hadm_id AS BIGINT) AS h, text FROM {notes_src}
                WHERE {kind} AND TRY_CAST(hadm_id AS BIGINT) IN (SELECT hadm_id FROM chosen)
                ORDER BY TRY_CAST(chartdate AS TIMESTAMP)""").fetchall()
        chosen = con.execute("SELECT hadm_id, admittime, dischtime FROM chosen").fetchall()
    finally:
        con.close()
    records = {h: {"id": int(h), "admittime": a.isoformat(), "dischtime": d.isoformat(), "labs": []}
               for h, a, d in chosen}
    for owner, itemid, time, value, valuenum, unit, flag, low, high in labs:
        lab = {"test": int(itemid) if itemid and itemid.strip().isdigit() else itemid,
               "value": valuenum if valuenum not in (None, "") else value, "unit": unit, "time": time, "flag": flag}
        lab.update({k: float(v) for k, v in (("ref_range_lower", low), ("ref_range_upper", high))
                    if v not in (None, "") and _is_number(v)})
        records[owner]["labs"].append(lab)
    for h, text in notes:
        records[h].setdefault("note", []).append(text)
    return list(records.values())


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
