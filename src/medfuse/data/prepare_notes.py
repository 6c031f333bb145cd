"""The notes stage of ``prepare``: discharge summaries -> the four allowed sections per admission.

Runs on its own DuckDB connection beside the lab stage (``prepare._Pipeline.fork``). Each note's
drop reason is set as it is read (:func:`medfuse.data.rules.create_note_rows`: discharge summaries of
cohort admissions only); the sections are cut in Python (``medfuse.data.sections``) while the header
census (``medfuse.data.audit``) is counted.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from medfuse.data.audit import census_manifest
from medfuse.data.rules import create_note_rows
from medfuse.data.sections import ALLOWED_SECTIONS, extract_sections

NOTE_BATCH_ROWS = 2048


def section_notes(p) -> tuple[str, dict | None]:
    """Fill table ``notes`` of pipeline ``p`` (one row per cohort admission with an allowed section);
    returns the notes status (``present``, ``missing``, ``empty``) and the header census (or ``None``)."""
    f = p.source.file("notes")
    acc = p.account("notes")
    if f is None or not f.has_rows:
        p.con.execute("CREATE TABLE notes (row BIGINT, hadm_id BIGINT, n_notes INTEGER, "
                      + ", ".join(f"{s} VARCHAR" for s in ALLOWED_SECTIONS) + ")")
        return ("missing" if f is None else "empty"), None
    create_note_rows(p.con, p.relation("notes"), run=p.sql)
    p.start_account("notes", "note_rows")
    acc.drop(p.counts("SELECT reason, count(*) FROM note_rows GROUP BY reason"))
    total = p.scalar("SELECT count(*) FROM note_rows WHERE reason IS NULL")
    reader = p.con.sql(
        "SELECT hadm_id, t, rowid AS rid, text FROM note_rows WHERE reason IS NULL").to_arrow_reader(NOTE_BATCH_ROWS)
    parts: dict[str, list] = {"hadm_id": [], "t": [], "rid": [], **{s: [] for s in ALLOWED_SECTIONS}}
    census: Counter = Counter()
    done = no_sections = 0
    for batch in reader:
        d = batch.to_pydict()
        for hadm_id, t, rid, text in zip(d["hadm_id"], d["t"], d["rid"], d["text"]):
            found = extract_sections(text, census)
            if not found:
                no_sections += 1
                continue
            parts["hadm_id"].append(hadm_id)
            parts["t"].append(t)
            parts["rid"].append(rid)
            for s in ALLOWED_SECTIONS:
                parts[s].append(found.get(s))
        done += batch.num_rows
        p.progress("notes: sections", done / max(total, 1))
    p.con.execute("DROP TABLE note_rows")
    acc.drop({"no_allowed_section": no_sections})
    acc.used = total - no_sections
    sections = pa.table(parts, schema=pa.schema(
        [("hadm_id", pa.int64()), ("t", pa.timestamp("us")), ("rid", pa.int64())]
        + [(s, pa.string()) for s in ALLOWED_SECTIONS]))
    p.con.register("note_sections", sections)
    aggs = ", ".join(f"string_agg({s}, '\n' ORDER BY t, rid) AS {s}" for s in ALLOWED_SECTIONS)
    p.con.execute(f"""CREATE TABLE notes AS SELECT c.row, n.hadm_id, count(*)::INTEGER AS n_notes, {aggs}
        FROM note_sections n JOIN cohort c USING (hadm_id) GROUP BY c.row, n.hadm_id""")
    p.con.unregister("note_sections")
    return "present", census_manifest(census, total, no_sections)
