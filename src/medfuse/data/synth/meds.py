"""MIMIC-IV CSVs -> a MEDS 0.4 dataset, in the code conventions of the MIMIC-IV MEDS ETL (MEDS-Extract).

:func:`mimic4_to_meds` converts a MIMIC-IV folder (``hosp/`` and, optionally, MIMIC-IV-Note's
``note/discharge``) with DuckDB; :func:`generate_meds` is ``medfuse synth --format meds``: the synthetic
hospital in the mimic4 layout, converted. Events (docs/meds.md has the table):

``GENDER//<gender>`` (no time), ``MEDS_BIRTH`` (1 January of anchor_year - anchor_age), ``MEDS_DEATH``;
``HOSPITAL_ADMISSION//<type>//<location>``, ``RACE//<race>``, ``HOSPITAL_DISCHARGE//<location>``,
``ED_REGISTRATION``, ``ED_OUT`` (with ``hadm_id``); ``DIAGNOSIS//ICD//<version>//<code>`` at discharge;
``LAB//RESULT//<itemid>//<valueuom>`` with ``numeric_value`` (valuenum), ``text_value`` (value), ``flag``,
``ref_range_lower``, ``ref_range_upper``, ``priority``; ``NOTE//DISCHARGE`` with the note as ``text_value``.

Where the ETL differs: a lab result is timed at ``charttime`` (when the specimen was drawn, the time the
CSV path uses), not ``storetime``; the flag and reference range are kept as extra columns; a null code
component is ``UNK`` as in the ETL, except in diagnosis and lab codes, where it stays empty so that
``prepare`` drops the row for the same reason as from the CSV. Rows MEDS cannot hold (no integer
``subject_id``; CSV lines the parser rejects) are counted in the summary, never written.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfuse import __version__
from medfuse.atomic import atomic_folder
from medfuse.data.raw import InputError, RawFile, TableSpec, csv_relation, find_file, locate
from medfuse.data.synth import generate
from medfuse.progress import ProgressFn, no_progress

SPLITS = (("train", 0.8), ("tuning", 0.1), ("held_out", 0.1))
"""The subject split written to ``metadata/subject_splits.parquet``: MEDS-Extract's default shares."""
NOTE_CODE = "NOTE//DISCHARGE"
EXTRA_COLUMNS = {"hadm_id": "BIGINT", "flag": "VARCHAR", "ref_range_lower": "DOUBLE", "ref_range_upper": "DOUBLE",
                 "priority": "VARCHAR", "note_id": "VARCHAR"}
DATA_SCHEMA = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()),
                         ("numeric_value", pa.float32()), ("text_value", pa.large_string()),
                         ("hadm_id", pa.int64()), ("flag", pa.string()), ("ref_range_lower", pa.float64()),
                         ("ref_range_upper", pa.float64()), ("priority", pa.string()), ("note_id", pa.string())])
CODES_SCHEMA = pa.schema([("code", pa.string()), ("description", pa.string()), ("parent_codes", pa.list_(pa.string())),
                          ("itemid", pa.int64()), ("fluid", pa.string()), ("category", pa.string())])

_READ = {  # table -> (file stem, {our column: raw column}); the CSV path's required columns are checked by locate()
    "patients": ("hosp/patients", {"subject_id": "subject_id", "gender": "gender", "anchor_age": "anchor_age",
                                   "anchor_year": "anchor_year", "dod": "dod"}),
    "admissions": ("hosp/admissions", {
        "subject_id": "subject_id", "hadm_id": "hadm_id", "admittime": "admittime", "dischtime": "dischtime",
        "deathtime": "deathtime", "admission_type": "admission_type", "admission_location": "admission_location",
        "discharge_location": "discharge_location", "race": "race", "edregtime": "edregtime",
        "edouttime": "edouttime"}),
    "diagnoses": ("hosp/diagnoses_icd", {"subject_id": "subject_id", "hadm_id": "hadm_id", "icd_code": "icd_code",
                                         "icd_version": "icd_version"}),
    "labevents": ("hosp/labevents", {
        "subject_id": "subject_id", "hadm_id": "hadm_id", "itemid": "itemid", "charttime": "charttime",
        "value": "value", "valuenum": "valuenum", "valueuom": "valueuom", "flag": "flag",
        "ref_range_lower": "ref_range_lower", "ref_range_upper": "ref_range_upper", "priority": "priority"}),
    "notes": ("note/discharge", {"subject_id": "subject_id", "hadm_id": "hadm_id", "note_id": "note_id",
                                 "charttime": "charttime", "text": "text"}),
}
_OPTIONAL = {"dod", "deathtime", "admission_type", "admission_location", "discharge_location", "race", "edregtime",
             "edouttime", "flag", "ref_range_lower", "ref_range_upper", "priority", "note_id", "subject_id"}


def _relation(f: RawFile, name: str) -> str:
    stem, columns = _READ[name]
    spec = TableSpec(stem, columns, long_rows=name == "notes", optional=tuple(c for c in columns if c in _OPTIONAL))
    return csv_relation(f, spec, name)


def _events_sql(rel: dict[str, str]) -> list[str]:
    """One ``SELECT`` per kind of event, each with the columns of :data:`DATA_SCHEMA` (by name)."""
    sid = "TRY_CAST(subject_id AS BIGINT)"
    hadm = "TRY_CAST(hadm_id AS BIGINT)"

    def ts(c: str) -> str:
        return f"TRY_CAST({c} AS TIMESTAMP)"

    def unk(c: str) -> str:
        return f"COALESCE(NULLIF(trim({c}), ''), 'UNK')"

    p, a = rel["patients"], rel["admissions"]
    out = [
        (f"SELECT {sid} AS subject_id, NULL::TIMESTAMP AS time, 'GENDER//' || trim(gender) AS code FROM {p} "
        "WHERE NULLIF(trim(gender), '') IS NOT NULL"),
        f"""SELECT {sid} AS subject_id, make_timestamp(TRY_CAST(anchor_year AS BIGINT) - TRY_CAST(anchor_age AS BIGINT),
              1, 1, 0, 0, 0) AS time, 'MEDS_BIRTH' AS code FROM {p}
            WHERE TRY_CAST(anchor_year AS BIGINT) IS NOT NULL AND TRY_CAST(anchor_age AS BIGINT) IS NOT NULL""",
        f"""SELECT p.subject_id, COALESCE(d.deathtime, p.dod) AS time, 'MEDS_DEATH' AS code
            FROM (SELECT {sid} AS subject_id, TRY_CAST(dod AS DATE)::TIMESTAMP AS dod FROM {p}) p
            LEFT JOIN (SELECT {sid} AS subject_id, min({ts('deathtime')}) AS deathtime FROM {a} GROUP BY ALL) d
              USING (subject_id) WHERE COALESCE(d.deathtime, p.dod) IS NOT NULL""",
        f"""SELECT {sid} AS subject_id, {ts('admittime')} AS time, 'HOSPITAL_ADMISSION//' || {unk('admission_type')}
              || '//' || {unk('admission_location')} AS code, {hadm} AS hadm_id FROM {a}""",
        f"""SELECT {sid} AS subject_id, {ts('admittime')} AS time, 'RACE//' || trim(race) AS code, {hadm} AS hadm_id
            FROM {a} WHERE NULLIF(trim(race), '') IS NOT NULL""",
        f"""SELECT {sid} AS subject_id, {ts('dischtime')} AS time, 'HOSPITAL_DISCHARGE//' || {unk('discharge_location')}
              AS code, {hadm} AS hadm_id FROM {a} WHERE {ts('dischtime')} IS NOT NULL""",
        f"""SELECT {sid} AS subject_id, {ts('edregtime')} AS time, 'ED_REGISTRATION' AS code, {hadm} AS hadm_id
            FROM {a} WHERE {ts('edregtime')} IS NOT NULL""",
        f"""SELECT {sid} AS subject_id, {ts('edouttime')} AS time, 'ED_OUT' AS code, {hadm} AS hadm_id
            FROM {a} WHERE {ts('edouttime')} IS NOT NULL""",
        f"""SELECT {sid} AS subject_id, x.dischtime AS time, 'DIAGNOSIS//ICD//' || COALESCE(trim(icd_version), '')
              || '//' || COALESCE(trim(icd_code), '') AS code, d.hadm AS hadm_id
            FROM (SELECT *, {hadm} AS hadm FROM {rel['diagnoses']}) d
            LEFT JOIN (SELECT {hadm} AS hadm, max({ts('dischtime')}) AS dischtime FROM {a} GROUP BY ALL) x USING (hadm)""",
        f"""SELECT {sid} AS subject_id, {ts('charttime')} AS time,
              'LAB//RESULT//' || COALESCE(trim(itemid), '') || '//' || {unk('valueuom')} AS code,
              TRY_CAST(valuenum AS FLOAT) AS numeric_value, value AS text_value, {hadm} AS hadm_id, flag,
              TRY_CAST(ref_range_lower AS DOUBLE) AS ref_range_lower, TRY_CAST(ref_range_upper AS DOUBLE) AS ref_range_upper,
              priority FROM {rel['labevents']}""",
    ]
    if "notes" in rel:
        out.append(f"""SELECT {sid} AS subject_id, {ts('charttime')} AS time, '{NOTE_CODE}' AS code, text AS text_value,
            {hadm} AS hadm_id, note_id FROM {rel['notes']}""")
    return out


def _codes_sql(raw: Path) -> str:
    """``metadata/codes.parquet`` rows for every code of table ``events``: ICD titles and parents (the ETL's
    dotted ``ICD<v>CM/<code>``), lab labels, fluids and categories from ``d_labitems``."""
    icd = find_file(raw, "hosp/d_icd_diagnoses")
    titles = "(SELECT NULL::VARCHAR AS icd_code, NULL::VARCHAR AS icd_version, NULL::VARCHAR AS long_title LIMIT 0)"
    if icd is not None:
        titles = (f"(SELECT trim(icd_code) AS icd_code, trim(icd_version) AS icd_version, long_title "
                  f"FROM read_csv({_quote(icd)}, header=true, all_varchar=true))")
    items = find_file(raw, "hosp/d_labitems")
    labitems = (f"(SELECT TRY_CAST(itemid AS BIGINT) AS itemid, label, fluid, category "
                f"FROM read_csv({_quote(items)}, header=true, all_varchar=true))")
    # the ETL's dot rule: ICD-9 E-codes after 4 characters, other ICD-9 and ICD-10 after 3
    dotted = ("CASE WHEN v = '9' AND c LIKE 'E%' THEN (CASE WHEN length(c) > 4 THEN c[1:4] || '.' || c[5:] ELSE c END) "
              "WHEN length(c) > 3 THEN c[1:3] || '.' || c[4:] ELSE c END")
    return f"""WITH codes AS (SELECT DISTINCT code FROM events),
        dx AS (SELECT code, split_part(code, '//', 3) AS v, split_part(code, '//', 4) AS c FROM codes
               WHERE code LIKE 'DIAGNOSIS//ICD//%'),
        lab AS (SELECT code, TRY_CAST(split_part(code, '//', 3) AS BIGINT) AS itemid FROM codes
                WHERE code LIKE 'LAB//RESULT//%')
        SELECT k.code, COALESCE(t.long_title, li.label) AS description,
          CASE WHEN dx.c <> '' AND dx.v IN ('9', '10') THEN ['ICD' || dx.v || 'CM/' || ({dotted})] END AS parent_codes,
          lab.itemid, li.fluid, li.category
        FROM codes k LEFT JOIN dx USING (code) LEFT JOIN {titles} t ON t.icd_code = dx.c AND t.icd_version = dx.v
        LEFT JOIN lab USING (code) LEFT JOIN {labitems} li ON li.itemid = lab.itemid
        ORDER BY k.code"""


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InputError(f"{out}: already exists (pass overwrite=True to replace it)")
        if not (out / "metadata").is_dir():
            raise InputError(f"{out}: exists and is not a MEDS folder (no metadata/); not replacing it")


def mimic4_to_meds(
    raw: str | Path,
    out: str | Path,
    notes_dir: str | Path | None = None,
    seed: int = 0,
    subjects_per_shard: int = 10_000,
    overwrite: bool = False,
    memory_limit: str = "3GB",
    dataset_name: str = "MIMIC-IV",
    progress: ProgressFn | None = None,
) -> dict:
    """Write the MIMIC-IV folder ``raw`` (``hosp/``; notes from ``note/discharge`` under ``raw`` or
    ``notes_dir``) as a MEDS 0.4 dataset in ``out``: ``data/<split>/<shard>.parquet`` (subjects whole, in
    order, events by time), ``metadata/codes.parquet``, ``metadata/subject_splits.parquet`` (a random subject
    split of :data:`SPLITS`, seeded by ``seed``) and ``metadata/dataset.json``. The folder appears whole or
    not at all. Returns counts: events per code prefix, subjects, files, rows not written and why.
    """
    import duckdb

    raw, out = Path(raw), Path(out)
    progress = progress or no_progress
    if not raw.is_dir():
        raise InputError(f"{raw}: MIMIC-IV folder not found")
    _check_out(out, overwrite)
    t0 = time.perf_counter()
    progress("meds: events", 0.0)
    files = {name: locate(raw, "mimic4", name, Path(notes_dir) if notes_dir else None)
             for name in ("patients", "admissions", "diagnoses", "labitems", "labevents", "notes")}
    with atomic_folder(out) as work:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(work / ".spill"),
                                     "preserve_insertion_order": False})
        rel = {name: _relation(f, name) for name, f in files.items()
               if f is not None and f.has_rows and name != "labitems"}
        for name in ("patients", "admissions", "diagnoses"):  # read once: several kinds of event come from each
            con.execute(f"CREATE TABLE raw_{name} AS SELECT * FROM {rel[name]}")
            rel[name] = f"raw_{name}"
        types = {"subject_id": "BIGINT", "time": "TIMESTAMP", "code": "VARCHAR", "numeric_value": "FLOAT",
                 "text_value": "VARCHAR", **EXTRA_COLUMNS}
        empty = "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in types.items()) + " LIMIT 0"  # every column
        parts = [f"({q})" for q in (empty, *_events_sql(rel))]
        columns = ", ".join(f"{c}::{t} AS {c}" for c, t in types.items())
        try:
            con.execute(f"CREATE TABLE all_events AS SELECT {columns} FROM ({' UNION ALL BY NAME '.join(parts)})")
        except (duckdb.IOException, duckdb.InvalidInputException) as e:
            raise InputError(f"{raw}: {str(e).strip().splitlines()[0]}") from None
        skipped = {"no_integer_subject_id": con.execute(
            "SELECT count(*) FROM all_events WHERE subject_id IS NULL").fetchall()[0][0]}
        for name in rel:
            rejected = con.execute(f"SELECT count(DISTINCT line) FROM rej_{name}").fetchall()[0][0]
            if rejected:
                skipped[f"{name}: malformed_csv_row"] = rejected
        progress("meds: events", 0.5)
        subjects = np.sort(con.execute("SELECT DISTINCT subject_id FROM all_events WHERE subject_id IS NOT NULL")
                           .fetchnumpy()["subject_id"])
        order = np.random.default_rng(seed).permutation(len(subjects))
        ends = np.round(np.cumsum([f for _, f in SPLITS]) * len(subjects)).astype(int)
        split_of = np.empty(len(subjects), dtype=object)
        for (name, _), lo, hi in zip(SPLITS, [0, *ends[:-1]], ends, strict=True):
            split_of[order[lo:hi]] = name
        splits = pa.table({"subject_id": pa.array(subjects, pa.int64()), "split": pa.array(split_of, pa.string())})
        con.register("subject_split", splits)
        con.execute(f"""CREATE TABLE events AS SELECT e.*, s.split,
              (dense_rank() OVER (PARTITION BY s.split ORDER BY e.subject_id) - 1) // {int(subjects_per_shard)} AS shard
            FROM all_events e JOIN subject_split s USING (subject_id)
            ORDER BY s.split, shard, e.subject_id, e.time NULLS FIRST, e.code""")
        con.execute("DROP TABLE all_events")
        (work / "metadata").mkdir()
        pq.write_table(splits.sort_by("subject_id"), work / "metadata" / "subject_splits.parquet")
        codes = con.sql(_codes_sql(raw)).to_arrow_table().cast(CODES_SCHEMA)
        pq.write_table(codes, work / "metadata" / "codes.parquet")
        shards = con.execute("SELECT DISTINCT split, shard FROM events ORDER BY ALL").fetchall()
        data_cols = ", ".join(DATA_SCHEMA.names)
        for i, (split, shard) in enumerate(shards):
            path = work / "data" / split / f"{shard}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            reader = con.sql(f"""SELECT {data_cols} FROM events WHERE split = '{split}' AND shard = {shard}
                ORDER BY subject_id, time NULLS FIRST, code""").to_arrow_reader(1 << 16)
            with pq.ParquetWriter(path, DATA_SCHEMA, compression="zstd") as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(DATA_SCHEMA))
            progress("meds: write", (i + 1) / len(shards))
        prefixes = dict(con.execute("""SELECT regexp_extract(code, '^[A-Z_]*(//(RESULT|ICD))?'), count(*)
            FROM events GROUP BY ALL ORDER BY ALL""").fetchall())
        con.close()
        shutil.rmtree(work / ".spill", ignore_errors=True)
        import meds

        (work / "metadata" / "dataset.json").write_text(json.dumps({
            "dataset_name": dataset_name, "dataset_version": "", "etl_name": "medfuse.data.synth.meds.mimic4_to_meds",
            "etl_version": __version__, "meds_version": meds.__version__,
            "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        }, indent=2))
    return {"events": int(sum(prefixes.values())), "events_by_code": prefixes, "subjects": len(subjects),
            "data_files": len(shards), "rows_not_written": skipped, "seconds": round(time.perf_counter() - t0, 2)}


def generate_meds(out: str | Path, admissions: int, seed: int = 0, note_fraction: float = 0.95,
                  progress: ProgressFn | None = None) -> dict:
    """``medfuse synth --format meds``: the synthetic hospital of :func:`medfuse.data.synth.generate` (mimic4
    layout, same seed) as a MEDS dataset in ``out`` (replaced when it is a MEDS folder already)."""
    out = Path(out)
    _check_out(out, overwrite=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.mimic4-", dir=out.parent) as tmp:
        summary = generate(tmp, "mimic4", admissions, seed=seed, note_fraction=note_fraction, progress=progress)
        converted = mimic4_to_meds(tmp, out, seed=seed, overwrite=True, dataset_name="medfuse synthetic hospital",
                                   progress=progress)
    return {**summary, "format": "meds", "events": converted["events"], "data_files": converted["data_files"],
            "seconds": round(summary["seconds"] + converted["seconds"], 2)}

