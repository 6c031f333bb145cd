"""MEDS datasets as ``prepare`` input (``--source meds``): the raw tables of the CSV path, read from events.

A MEDS 0.4 folder holds ``data/**/*.parquet`` (one row per event: ``subject_id``, ``time``, ``code``,
``numeric_value``, ``text_value`` and extra columns) and ``metadata/`` (``codes.parquet``,
``subject_splits.parquet``, ``dataset.json``). :func:`read_meds` checks the folder against the schemas of
the ``meds`` package; :meth:`MedsDataset.attach` classifies every distinct code by the regular expressions
of ``[prepare.meds]`` and :meth:`MedsDataset.relation` gives the canonical relations of
:data:`medfuse.data.rules.RELATIONS` (patients, admissions, diagnoses, labitems, labevents, notes), as the
CSV adapter does, so the same rules apply. Events are read out of core with ``read_parquet(...,
union_by_name=true)``. docs/meds.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfuse.config import MedsConfig
from medfuse.data.raw import InputError, RawFile
from medfuse.data.rules import RELATIONS

KINDS = ("admission_start", "admission_end", "birth", "sex", "race", "diagnosis", "lab", "note")
"""What an event can be, in the order its code is tried (the first pattern that matches wins)."""
_PATTERN_KEY = {"admission_start": "admission_start_code", "admission_end": "admission_end_code",
                "birth": "birth_code", "sex": "sex_code", "race": "race_code", "lab": "lab_code", "note": "note_code"}
TABLE_KINDS = {"patients": ("birth", "sex"), "admissions": ("admission_start",), "diagnoses": ("diagnosis",),
               "labevents": ("lab",), "notes": ("note",)}
"""The events that make each table's rows (rows read): one patient per subject with a birth or sex event,
one admission per start event (its end and race events are joined to it), one row per other event."""
MAX_UNUSED_PREFIXES = 100
NON_INTEGER_TEST_BASE = 1_000_000_000
"""Lab test ids that are integers up to this are the itemid; any other test (``2160-0``) gets a surrogate above it."""
SURROGATE_SPACE = 2**30
"""Surrogate itemids lie in ``NON_INTEGER_TEST_BASE + 1 ... NON_INTEGER_TEST_BASE + SURROGATE_SPACE`` (< 2**31)."""

_SPLIT_KEYS = {"train": "train_splits", "val": "val_splits", "test": "test_splits"}


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _kind_of_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list<" + _kind_of_type(t.value_type) + ">"
    return str(t)


_ACCEPTS = {"integer": {"integer"}, "float": {"float", "integer"}, "timestamp": {"timestamp"},
            "string": {"string"}, "list<string>": {"list<string>"}}


def check_schema(path: Path, schema: pa.Schema, meds_schema) -> None:
    """Check ``schema`` against a schema class of the ``meds`` package; raises :class:`InputError` naming the
    file and column. Where the exact type differs only in width or encoding (``double`` for MEDS's
    ``float``, ``string`` for ``large_string``, ``timestamp[ns]`` or a date for ``timestamp[us]``), the
    column is accepted: DuckDB reads it the same way."""
    from flexible_schema.exceptions import SchemaValidationError

    try:
        meds_schema.validate(schema)
        return
    except SchemaValidationError:
        pass
    want = meds_schema.schema()
    found = ", ".join(schema.names)
    for name in meds_schema.required_columns():
        if name not in schema.names:
            raise InputError(f"{path}: not a MEDS file: missing required column {name!r} (found: {found})")
    for name in meds_schema.columns():
        if name in schema.names:
            got, wanted = _kind_of_type(schema.field(name).type), _kind_of_type(want.field(name).type)
            if got not in _ACCEPTS.get(wanted, {wanted}):
                raise InputError(f"{path}: column {name!r} has type {schema.field(name).type}; MEDS wants "
                                 f"{want.field(name).type}")
    extra = [n for n in schema.names if n not in want.names]
    if extra and not getattr(meds_schema, "allow_extra_columns", True):
        raise InputError(f"{path}: column {extra[0]!r} is not allowed by MEDS (allowed: {', '.join(want.names)})")


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read as Parquet ({e})") from None


@dataclass
class MedsDataset:
    """A checked MEDS folder and, once attached to a DuckDB connection, its events classified by code."""

    root: Path
    cfg: MedsConfig
    name = "meds"
    data_files: list[Path]
    columns: dict[str, pa.DataType]  # every column of the data files (union by name)
    codes_file: Path | None
    splits_file: Path | None
    dataset: dict
    numeric_float32: bool = True  # every file's numeric_value is float32, as MEDS says
    files: dict[str, RawFile | None] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    unused: dict[str, int] = field(default_factory=dict)
    birth_precision: str = ""
    lab_test_ids: dict = field(default_factory=dict)
    has_race: bool = False

    # -- the events ---------------------------------------------------------------------------
    def _column(self, name: str, sql_type: str) -> str:
        """An extra column cast to ``sql_type``, NULL when the key is empty or the data lacks it."""
        if name and name in self.columns:
            return f"TRY_CAST({_ident(name)} AS {sql_type})"
        return f"NULL::{sql_type}"

    def _events_view(self) -> str:
        c = self.cfg
        ids = [f"TRY_CAST({_ident(n)} AS BIGINT)" for n in c.admission_id_columns if n in self.columns]
        admission = f"COALESCE({', '.join(ids)})" if ids else "NULL::BIGINT"
        files = "[" + ", ".join(_lit(str(p)) for p in self.data_files) + "]"
        zoned = pa.types.is_timestamp(self.columns["time"]) and self.columns["time"].tz is not None
        time = """timezone('UTC', "time")""" if zoned else """CAST("time" AS TIMESTAMP)"""  # UTC, never local time
        return f"""CREATE OR REPLACE VIEW meds_events AS SELECT subject_id, {time} AS "time", code,
            {self._column('numeric_value', 'DOUBLE')} AS numeric_value, {self._column('text_value', 'VARCHAR')} AS text_value,
            {admission} AS adm_id, {self._column(c.lab_unit_column, 'VARCHAR')} AS unit,
            {self._column(c.lab_flag_column, 'VARCHAR')} AS flag, {self._column(c.lab_ref_low_column, 'DOUBLE')} AS ref_low,
            {self._column(c.lab_ref_high_column, 'DOUBLE')} AS ref_high, {self._column(c.race_column, 'VARCHAR')} AS race,
            {self._column(c.admission_end_column, 'TIMESTAMP')} AS end_time
            FROM read_parquet({files}, union_by_name = true)"""

    def _code_metadata(self) -> str:
        """A subquery with one row per code of ``metadata/codes.parquet`` (empty without the file)."""
        if self.codes_file is None:
            return ("(SELECT NULL::VARCHAR AS code, NULL::VARCHAR AS description, NULL::VARCHAR[] AS parent_codes, "
                    "NULL::VARCHAR AS fluid, NULL::VARCHAR AS category LIMIT 0)")
        names = set(_read_schema(self.codes_file).names)

        def col(name: str, sql_type: str) -> str:
            return f"any_value(TRY_CAST({_ident(name)} AS {sql_type}))" if name in names else f"NULL::{sql_type}"

        return (f"(SELECT code, {col('description', 'VARCHAR')} AS description, "
                f"{col('parent_codes', 'VARCHAR[]')} AS parent_codes, {col('fluid', 'VARCHAR')} AS fluid, "
                f"{col('category', 'VARCHAR')} AS category FROM read_parquet({_lit(str(self.codes_file))}) "
                "WHERE code IS NOT NULL GROUP BY code)")

    @staticmethod
    def _first_match(x: str, patterns: list[str], group: str) -> str:
        """SQL: ``group`` of the first of ``patterns`` that matches ``x`` (NULL if none does)."""
        arms = " ".join(f"WHEN regexp_matches({x}, {_lit(p)}) THEN regexp_extract({x}, {_lit(p)}, "
                        f"{re.compile(p).groupindex[group]})" for p in patterns if p)
        return f"CASE {arms} END" if arms else "NULL::VARCHAR"

    def _classify(self, con) -> None:
        """Table ``meds_codes``: every distinct code with its event count, metadata, kind and parsed parts."""
        c = self.cfg
        patterns = {k: getattr(c, key) for k, key in _PATTERN_KEY.items()}
        diagnosis = [p for p in c.diagnosis_codes if p]
        arms = []
        for kind in KINDS:
            tests = diagnosis if kind == "diagnosis" else [patterns[kind]] if patterns[kind] else []
            if tests:
                arms.append(f"WHEN {' OR '.join(f'regexp_matches(code, {_lit(p)})' for p in tests)} THEN '{kind}'")
        kind = f"CASE {' '.join(arms)} END" if arms else "NULL::VARCHAR"
        by_parent = "NULL::VARCHAR"
        if c.diagnosis_parent_codes and diagnosis:
            any_diagnosis = " OR ".join(f"regexp_matches(p, {_lit(x)})" for x in diagnosis)
            by_parent = f"list_filter(parent_codes, lambda p: {any_diagnosis})[1]"
        con.execute(f"""CREATE OR REPLACE TABLE meds_codes AS
            WITH counted AS (SELECT code, count(*) AS n FROM meds_events GROUP BY code),
            typed AS (SELECT c.code, c.n, m.description, m.parent_codes, m.fluid, m.category, {kind} AS kind
                      FROM counted c LEFT JOIN {self._code_metadata()} m USING (code)),
            parented AS (SELECT *, CASE WHEN kind = 'diagnosis' THEN code WHEN kind IS NULL THEN {by_parent} END AS icd
                         FROM typed)
            SELECT code, n, description, parent_codes, fluid, category,
              CASE WHEN kind IS NULL AND icd IS NOT NULL THEN 'diagnosis' ELSE kind END AS kind,
              kind IS NULL AND icd IS NOT NULL AS by_parent,
              CASE WHEN kind = 'sex' THEN {self._first_match('code', [c.sex_code], 'sex')} END AS sex,
              CASE WHEN kind = 'race' THEN {self._first_match('code', [c.race_code], 'race')} END AS race,
              {self._first_match('icd', diagnosis, 'version')} AS icd_version,
              {self._first_match('icd', diagnosis, 'code')} AS icd_code,
              CASE WHEN kind = 'lab' THEN NULLIF({self._first_match('code', [c.lab_code], 'test')}, '') END AS test,
              CASE WHEN kind = 'lab' THEN {self._lab_unit_sql()} END AS unit
            FROM parented""")

    def _lab_unit_sql(self) -> str:
        c = self.cfg
        if "unit" not in re.compile(c.lab_code).groupindex:
            return "NULL::VARCHAR"
        unit = f"trim({self._first_match('code', [c.lab_code], 'unit')})"
        return f"CASE WHEN {unit} IN ('', {_lit(c.unknown_unit)}) THEN NULL ELSE {unit} END"

    def _of_kind(self, *kinds: str) -> str:
        """``FROM`` clause: the events whose code is of one of ``kinds`` (``e``), with their code row (``k``)."""
        listed = ", ".join(f"'{k}'" for k in kinds)
        return f"meds_events e JOIN (SELECT * FROM meds_codes WHERE kind IN ({listed})) k ON k.code = e.code"

    def attach(self, con) -> None:
        """Create the events view and the code tables on ``con`` (DuckDB) and count the events of each kind.

        Raises :class:`InputError` when a required table would be empty (no event matches its codes)."""
        import duckdb

        try:
            con.execute(self._events_view())
            self._classify(con)
        except (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException) as e:
            raise InputError(f"{self.root / 'data'}: {str(e).strip().splitlines()[0]}") from None
        counts = dict(con.execute("SELECT kind, sum(n)::BIGINT FROM meds_codes GROUP BY kind").fetchall())
        self.events = {"total": int(sum(counts.values()))} | {k: int(counts.get(k, 0)) for k in KINDS}
        self.events["diagnosis_by_parent_code"] = int(con.execute(
            "SELECT COALESCE(sum(n), 0) FROM meds_codes WHERE by_parent").fetchall()[0][0])
        unused = con.execute("""SELECT COALESCE(regexp_extract(code, '^[^/]*'), '(null code)') AS prefix, sum(n)::BIGINT
            FROM meds_codes WHERE kind IS NULL GROUP BY prefix ORDER BY 2 DESC, 1""").fetchall()
        self.unused = {p: int(n) for p, n in unused[:MAX_UNUSED_PREFIXES]}
        if len(unused) > MAX_UNUSED_PREFIXES:
            self.unused["(other prefixes)"] = int(sum(n for _, n in unused[MAX_UNUSED_PREFIXES:]))
        self._lab_tests(con)
        births = self.events["birth"]
        self.birth_precision = self.cfg.birth_precision
        if self.birth_precision == "auto":
            on_new_year = con.execute(f"""SELECT COALESCE(bool_and(e."time" = date_trunc('year', e."time")), true)
                FROM {self._of_kind('birth')}""").fetchall()[0][0] if births else True
            self.birth_precision = "year" if on_new_year else "exact"
        for name in RELATIONS:
            con.execute(f"CREATE OR REPLACE TABLE rej_{name} (error_type VARCHAR, line BIGINT)")  # no parser rejects
        self._make_files(con)

    def _lab_tests(self, con) -> None:
        """Tables ``meds_lab_tests (test, itemid)`` and ``meds_labitems (itemid, label, fluid, category,
        parent_code)``: each lab test's itemid (:func:`lab_itemids`), and per itemid the description, fluid,
        category and first parent code of its most frequent code; without a description, the label is the
        parent code's description, else the test id."""
        tests = [t for (t,) in con.execute(
            "SELECT DISTINCT test FROM meds_codes WHERE kind = 'lab' AND test IS NOT NULL ORDER BY test").fetchall()]
        ids, collisions = lab_itemids(tests)
        con.register("lab_ids", pa.table({"test": pa.array(tests, pa.string()),
                                          "itemid": pa.array([ids[t] for t in tests], pa.int32())}))
        con.execute("CREATE OR REPLACE TABLE meds_lab_tests AS SELECT test, itemid FROM lab_ids")
        con.unregister("lab_ids")
        con.execute(f"""CREATE OR REPLACE TABLE meds_labitems AS
            WITH t AS (SELECT i.itemid, arg_max(k.description, k.n) AS description, arg_max(k.fluid, k.n) AS fluid,
                         arg_max(k.category, k.n) AS category, arg_max(k.parent_codes[1], k.n) AS parent_code,
                         arg_max(k.test, k.n) AS test
                       FROM meds_codes k JOIN meds_lab_tests i USING (test) WHERE k.kind = 'lab' GROUP BY i.itemid)
            SELECT t.itemid, COALESCE(t.description, p.description, t.test) AS label, t.fluid, t.category,
              t.parent_code
            FROM t LEFT JOIN {self._code_metadata()} p ON p.code = t.parent_code""")
        surrogates = {t: ids[t] for t in tests if ids[t] > NON_INTEGER_TEST_BASE}
        parents = con.execute("SELECT itemid, parent_code FROM meds_labitems WHERE parent_code IS NOT NULL "
                              "ORDER BY itemid").fetchall()
        self.lab_test_ids = {"tests": len(set(ids.values())), "surrogate_itemids": surrogates,
                          "surrogate_collisions": collisions, "parent_codes": {str(i): p for i, p in parents}}

    def _make_files(self, con) -> None:
        data = self.root / "data"
        self.has_race = bool(self.events["race"]) or (bool(self.cfg.race_column) and self.cfg.race_column in self.columns)
        for name, cols in RELATIONS.items():
            kinds = TABLE_KINDS.get(name, ("lab",))
            n = sum(self.events[k] for k in kinds)
            if n == 0 and name != "notes":
                keys = " / ".join(("diagnosis_codes" if k == "diagnosis" else _PATTERN_KEY[k]) for k in kinds)
                raise InputError(f"{data}: no event matches [prepare.meds] {keys} "
                                 f"({', '.join(repr(getattr(self.cfg, k)) for k in keys.split(' / '))}): "
                                 f"the {name} table would be empty")
            self.files[name] = RawFile(data, list(cols), True) if n else None

    # -- the relations ------------------------------------------------------------------------
    def file(self, name: str) -> RawFile | None:
        """The data folder, for a relation that has events (``None``: no note event)."""
        return self.files.get(name)

    def relation(self, name: str) -> str | None:
        """A DuckDB subquery giving relation ``name`` (:data:`~medfuse.data.rules.RELATIONS`) from the events;
        ``None`` for notes when no event is a note."""
        if self.files.get(name) is None:
            return None
        if name == "patients":
            if self.birth_precision == "year":  # as MIMIC-IV: age = anchor_age + year(admittime) - anchor_year
                birth = ("NULL::TIMESTAMP AS dob, CASE WHEN birth IS NOT NULL THEN 0 END AS anchor_age, "
                         "year(birth) AS anchor_year")
            else:
                birth = "birth AS dob, NULL::DOUBLE AS anchor_age, NULL::INTEGER AS anchor_year"
            return f"""(SELECT subject_id, gender, {birth} FROM (
                SELECT e.subject_id, min(k.sex) FILTER (WHERE k.kind = 'sex') AS gender,
                  min(e."time") FILTER (WHERE k.kind = 'birth') AS birth
                FROM {self._of_kind('birth', 'sex')} GROUP BY e.subject_id))"""
        if name == "admissions":
            return f"""(WITH s AS (SELECT e.subject_id, e.adm_id, e."time" AS admittime, e.end_time, e.race
                           FROM {self._of_kind('admission_start')}),
                    d AS (SELECT e.subject_id, e.adm_id, max(e."time") AS dischtime FROM {self._of_kind('admission_end')}
                          WHERE e.adm_id IS NOT NULL GROUP BY ALL),
                    r AS (SELECT e.subject_id, e.adm_id, min(k.race) AS race FROM {self._of_kind('race')} GROUP BY ALL)
                SELECT s.subject_id, s.adm_id AS hadm_id, s.admittime, COALESCE(s.end_time, d.dischtime) AS dischtime,
                  COALESCE(s.race, r.race, rs.race) AS race  -- a race event without admission id: the subject's
                FROM s LEFT JOIN d ON d.subject_id = s.subject_id AND d.adm_id = s.adm_id
                LEFT JOIN r ON r.subject_id = s.subject_id AND r.adm_id = s.adm_id
                LEFT JOIN r rs ON rs.subject_id = s.subject_id AND rs.adm_id IS NULL)"""
        if name == "diagnoses":
            return (f"(SELECT e.subject_id, e.adm_id AS hadm_id, k.icd_code, k.icd_version "
                    f"FROM {self._of_kind('diagnosis')})")
        if name == "labitems":
            return "(SELECT itemid, label, fluid, category FROM meds_labitems)"
        if name == "labevents":
            # numeric_value is float32 in MEDS: a text_value holding the same number gives it in full precision,
            # else the shortest decimal that rounds to the float32 (0.01, not 0.009999999776482582)
            text = "TRY_CAST(trim(e.text_value) AS DOUBLE)"
            number = ("TRY_CAST(CAST(e.numeric_value::FLOAT AS VARCHAR) AS DOUBLE)" if self.numeric_float32
                      else "e.numeric_value")
            return f"""(SELECT e.subject_id, e.adm_id AS hadm_id, t.itemid, e."time" AS charttime, e.text_value AS value,
                  CASE WHEN {text}::FLOAT = e.numeric_value::FLOAT THEN {text} ELSE {number} END AS valuenum,
                  COALESCE(NULLIF(trim(e.unit), ''), k.unit) AS unit, e.flag, e.ref_low, e.ref_high
                FROM {self._of_kind('lab')} LEFT JOIN meds_lab_tests t ON t.test = k.test)"""
        if name == "notes":  # note_code picks discharge summaries
            return f"""(SELECT e.adm_id AS hadm_id, e."time" AS charttime, 'Discharge summary' AS category,
                  false AS error, e.text_value AS text FROM {self._of_kind('note')})"""
        raise KeyError(name)

    # -- splits --------------------------------------------------------------------------------
    def create_split_of_patient(self, con) -> str | None:
        """Table ``split_of_patient (subject_id, split)`` for the subjects of table ``cohort``, from
        ``metadata/subject_splits.parquet`` with MEDS split names mapped by ``[prepare.meds]``; returns the
        split source, or ``None`` (nothing created) when the file is absent or ``use_subject_splits`` is off."""
        if self.splits_file is None or not self.cfg.use_subject_splits:
            return None
        pairs = [(meds, ours) for ours, key in _SPLIT_KEYS.items() for meds in getattr(self.cfg, key)]
        names = ", ".join(f"({_lit(m)}, '{o}')" for m, o in pairs)
        con.execute(f"""CREATE OR REPLACE TABLE split_rows AS
            SELECT c.subject_id, s.split AS meds, m.ours
            FROM (SELECT DISTINCT subject_id FROM cohort) c
            LEFT JOIN read_parquet({_lit(str(self.splits_file))}) s ON s.subject_id = c.subject_id
            LEFT JOIN (VALUES {names}) m(meds, ours) ON m.meds = s.split""")
        where = self.splits_file
        unknown = con.execute("SELECT meds, min(subject_id) FROM split_rows WHERE meds IS NOT NULL AND ours IS NULL "
                              "GROUP BY meds ORDER BY meds").fetchall()
        if unknown:
            raise InputError(f"{where}: split {unknown[0][0]!r} (subject_id {unknown[0][1]}) is in none of "
                             f"[prepare.meds] train_splits, val_splits, test_splits")
        missing = con.execute("SELECT count(*), min(subject_id) FROM split_rows WHERE meds IS NULL").fetchall()[0]
        if missing[0]:
            raise InputError(f"{where}: {missing[0]} cohort subject(s) have no split (e.g. subject_id {missing[1]}); "
                             "set prepare.meds.use_subject_splits = false for medfuse's stratified split")
        twice = con.execute("""SELECT subject_id FROM split_rows GROUP BY subject_id
            HAVING count(DISTINCT ours) > 1 ORDER BY subject_id LIMIT 1""").fetchall()
        if twice:
            raise InputError(f"{where}: subject_id {twice[0][0]} is in more than one split")
        con.execute("""CREATE OR REPLACE TABLE split_of_patient AS
            SELECT subject_id, min(ours) AS split FROM split_rows GROUP BY subject_id""")
        con.execute("DROP TABLE split_rows")
        if not con.execute("SELECT count(*) FROM split_of_patient WHERE split = 'train'").fetchall()[0][0]:
            raise InputError(f"{where}: no cohort subject is in a training split ({', '.join(self.cfg.train_splits)})")
        return "metadata/subject_splits.parquet"

    def summary(self) -> dict:
        """What the manifest records about the MEDS input: its metadata, and every event by what it became."""
        meta = {k: self.dataset.get(k) for k in ("dataset_name", "dataset_version", "etl_name", "etl_version",
                                                  "meds_version") if self.dataset.get(k) is not None}
        return {"dataset": meta, "data_files": len(self.data_files), "codes_metadata": self.codes_file is not None,
                "subject_splits": self.splits_file is not None, "birth_precision": self.birth_precision,
                "events": self.events, "unused_events": self.unused, "lab_test_ids": self.lab_test_ids}


def surrogate_itemid(test: str) -> int:
    """The itemid of a lab test id that is not an integer: ``NON_INTEGER_TEST_BASE + 1 +`` (the first 8 bytes
    of the SHA-256 of its UTF-8 text, big-endian) mod ``SURROGATE_SPACE``. A function of the test alone, so a
    test has the same itemid in every dataset and every run."""
    digest = hashlib.sha256(test.encode("utf-8")).digest()
    return NON_INTEGER_TEST_BASE + 1 + int.from_bytes(digest[:8], "big") % SURROGATE_SPACE


def lab_itemids(tests: list[str]) -> tuple[dict[str, int], int]:
    """Each lab test id's itemid, and how many tests did not get their own surrogate (a collision).

    A test of ASCII digits up to ``NON_INTEGER_TEST_BASE`` is its own itemid (``0042`` and ``42`` are one
    test); any other gets :func:`surrogate_itemid`. Tests whose surrogates collide are taken in sorted order:
    the first keeps it, each later one the next free id (wrapping within the range)."""
    ids: dict[str, int] = {}
    taken: set[int] = set()
    collisions = 0
    for test in sorted(tests):
        if test.isascii() and test.isdigit() and int(test) <= NON_INTEGER_TEST_BASE:
            ids[test] = int(test)
            continue
        itemid = surrogate_itemid(test)
        if itemid in taken:
            collisions += 1
            while itemid in taken:
                itemid = NON_INTEGER_TEST_BASE + 1 + (itemid - NON_INTEGER_TEST_BASE) % SURROGATE_SPACE
        taken.add(itemid)
        ids[test] = itemid
    return ids, collisions


def read_meds(root: str | Path, cfg: MedsConfig) -> MedsDataset:
    """Check a MEDS folder with the ``meds`` package's schemas; raises :class:`InputError` naming the file
    (and column) for a folder that is not MEDS."""
    import meds
    from flexible_schema.exceptions import SchemaValidationError, TableValidationError

    root = Path(root)
    data = root / meds.data_subdirectory
    if not data.is_dir():
        raise InputError(f"{root}: not a MEDS dataset: no {meds.data_subdirectory}/ folder "
                         "(expected data/**/*.parquet and metadata/)")
    files = sorted(p for p in data.rglob("*.parquet") if p.is_file())
    if not files:
        raise InputError(f"{data}: no .parquet files (a MEDS dataset keeps its events in data/**/*.parquet)")
    columns: dict[str, pa.DataType] = {}
    float32 = True
    for path in files:
        schema = _read_schema(path)
        check_schema(path, schema, meds.DataSchema)
        for f in schema:
            columns.setdefault(f.name, f.type)
        float32 &= "numeric_value" not in schema.names or schema.field("numeric_value").type == pa.float32()
    codes = root / meds.code_metadata_filepath
    if codes.is_file():
        check_schema(codes, _read_schema(codes), meds.CodeMetadataSchema)
    splits = root / meds.subject_splits_filepath
    if splits.is_file():
        check_schema(splits, _read_schema(splits), meds.SubjectSplitSchema)
    dataset: dict = {}
    path = root / meds.dataset_metadata_filepath
    if path.is_file():
        try:
            dataset = json.loads(path.read_text())
            meds.DatasetMetadataSchema.validate(dataset)
        except (ValueError, TypeError, SchemaValidationError, TableValidationError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise InputError(f"{path}: not MEDS dataset metadata ({first})") from None
    return MedsDataset(root, cfg, files, columns, codes if codes.is_file() else None,
                       splits if splits.is_file() else None, dataset, numeric_float32=float32)
