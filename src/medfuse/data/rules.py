"""The admission rules, one copy behind every source: which rows are used, the labels, the cohort and its windows.

Every source is an *adapter* (:class:`Adapter`) that gives the canonical relations of :data:`RELATIONS`
as DuckDB subqueries: MIMIC-III / MIMIC-IV CSV files (:class:`medfuse.data.raw.CsvSource`), a MEDS dataset
(:class:`medfuse.data.meds.MedsDataset`) and new patients' records (:func:`medfuse.serving.features.
record_relations`). What is done with those relations is decided here and nowhere else; ``prepare``,
``records`` / ``predict --format meds`` (:mod:`medfuse.serving.raw_records`) and prediction
(:mod:`medfuse.serving.features`) call these functions:

- why a row is dropped, by named reason, the first rule that holds: :data:`PATIENT_RULES`,
  :data:`ADMISSION_RULES` (and ``no_diagnoses``, :func:`create_labels`), :data:`DIAGNOSIS_RULES`,
  :data:`NOTE_RULES` (which notes are discharge summaries) and :data:`LAB_DROP_RULES`;
- ICD codes to labels (:func:`create_labels`);
- age, sex and race group (:func:`admitted_sql`);
- the cohort table, each admission's lab window (:func:`create_cohort`) and the admission a lab row without
  one belongs to (:func:`create_attachment_windows`).

The lab transforms (typing values, units, aggregation) are :mod:`medfuse.data.transform`. docs/data.md,
"Sources and the canonical relations", is what an adapter must give.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from medfuse.data.diseases import Disease
    from medfuse.data.raw import RawFile

RELATIONS: dict[str, dict[str, str]] = {
    "patients": {"subject_id": "BIGINT", "gender": "VARCHAR", "dob": "TIMESTAMP", "anchor_age": "DOUBLE",
                 "anchor_year": "INTEGER"},
    "admissions": {"subject_id": "BIGINT", "hadm_id": "BIGINT", "admittime": "TIMESTAMP",
                   "dischtime": "TIMESTAMP", "race": "VARCHAR"},
    "diagnoses": {"subject_id": "BIGINT", "hadm_id": "BIGINT", "icd_code": "VARCHAR", "icd_version": "INTEGER"},
    "labitems": {"itemid": "INTEGER", "label": "VARCHAR", "fluid": "VARCHAR", "category": "VARCHAR"},
    "labevents": {"subject_id": "BIGINT", "hadm_id": "BIGINT", "itemid": "INTEGER", "charttime": "TIMESTAMP",
                  "value": "VARCHAR", "valuenum": "DOUBLE", "unit": "VARCHAR", "flag": "VARCHAR",
                  "ref_low": "DOUBLE", "ref_high": "DOUBLE"},
    "notes": {"hadm_id": "BIGINT", "charttime": "TIMESTAMP", "category": "VARCHAR", "error": "BOOLEAN",
              "text": "VARCHAR"},
}
"""The canonical relations: name -> {column: DuckDB type}. A column holds its type or text that casts to it
(the rules cast with TRY_CAST: what does not cast is NULL, and the row is dropped by the rule it then fails);
a column the source does not have is NULL. ``notes`` is optional, every other relation is required."""

Run = Callable[..., object]  # run(sql, stage=None): execute one statement (prepare reports progress on it)

ICD_CODE_REGEX = r"^[A-Z0-9]{3,7}$"
"""What a well-formed ICD code looks like once normalised (no dot, upper-case); others are malformed."""

PATIENT_RULES: tuple[tuple[str, str], ...] = (  # (reason, SQL condition), the first that holds applies
    ("invalid_id", "subject_id IS NULL"),
    ("duplicate", "row_number() OVER (PARTITION BY subject_id ORDER BY dob, anchor_year) > 1"),
)
ADMISSION_RULES: tuple[tuple[str, str], ...] = (
    ("invalid_id", "a.subject_id IS NULL OR a.hadm_id IS NULL"),
    ("missing_time", "a.admittime IS NULL OR a.dischtime IS NULL"),
    ("discharge_before_admission", "a.dischtime < a.admittime"),
    ("unknown_patient", "p.subject_id IS NULL"),  # checked only where patients are read (not for records)
    ("duplicate", "row_number() OVER (PARTITION BY a.hadm_id ORDER BY a.admittime) > 1"),
)
DIAGNOSIS_RULES: tuple[tuple[str, str], ...] = (
    ("unknown_admission", "a.hadm_id IS NULL"),
    ("missing_icd_code", "d.code IS NULL OR d.code = ''"),
    ("malformed_icd_code", f"NOT regexp_matches(d.code, '{ICD_CODE_REGEX}')"),
    ("invalid_icd_version", "d.version IS NULL OR d.version NOT IN (9, 10)"),
    ("duplicate", "row_number() OVER (PARTITION BY d.hadm_id, d.code, d.version) > 1"),
)
NOTE_RULES: tuple[tuple[str, str], ...] = (
    ("not_discharge_summary", "lower(trim(n.category)) IS DISTINCT FROM 'discharge summary'"),
    ("marked_error", "n.error"),
    ("missing_admission_id", "n.hadm_id IS NULL"),
    ("admission_not_in_cohort", "c.hadm_id IS NULL"),
    ("empty_text", "n.text IS NULL OR trim(n.text) = ''"),
)
LAB_DROP_RULES: tuple[tuple[str, str], ...] = (  # over lab rows typed and attached (transform.create_lab_observations)
    ("invalid_id", "a.subject_id IS NULL OR a.itemid IS NULL"),
    ("missing_time", "a.t IS NULL"),
    ("non_numeric_value", "a.num IS NULL"),
    ("non_finite_value", "isinf(a.num) OR isnan(a.num)"),
    ("unknown_test", "li.itemid IS NULL"),
    ("outside_any_admission", "a.from_window AND a.hadm_id IS NULL"),
    ("admission_not_in_cohort", "c.hadm_id IS NULL"),
    ("outside_admission_window", "a.t < c.win_start OR a.t > c.dischtime"),
    ("after_prediction_window", "a.t > c.win_end"),
)
RACE_GROUPS: tuple[tuple[str, str], ...] = (  # (group, SQL condition on the upper-cased raw value {r}), first match
    ("UNKNOWN", "{r} = '' OR {r} LIKE 'UNKNOWN%' OR {r} LIKE 'UNABLE TO OBTAIN%' OR {r} LIKE '%DECLINED%'"),
    ("WHITE", "{r} LIKE 'WHITE%' OR {r} = 'PORTUGUESE'"),
    ("BLACK", "{r} LIKE 'BLACK%'"),
    ("HISPANIC/LATINO", "{r} LIKE 'HISPANIC%' OR {r} LIKE 'SOUTH AMERICAN%'"),
    ("ASIAN", "{r} LIKE 'ASIAN%'"),
)
"""Broad race / ethnicity groups of the raw race string; any other value is OTHER."""
AGE = ("COALESCE(epoch(a.admittime - p.dob) / (365.2425 * 86400), "  # MIMIC-III shifts ages over 89 to about 300
       "p.anchor_age + year(a.admittime) - p.anchor_year)")
"""Age at admission (before the cap at 90): exact from a date of birth, else anchored (MIMIC-IV, MEDS birth year)."""


class Adapter(Protocol):
    """A source read as the canonical relations (docs/data.md, "Sources and the canonical relations")."""

    name: str  # the source: mimic3, mimic4, meds
    files: dict[str, RawFile | None]  # the tables located so far, by relation (for messages)
    has_race: bool  # whether admissions record race at all (without, the race group is NULL, not UNKNOWN)

    def file(self, name: str) -> RawFile | None:
        """Where relation ``name`` is read from; ``None`` for an absent optional table."""

    def relation(self, name: str) -> str | None:
        """A DuckDB subquery with the columns of ``RELATIONS[name]``; ``None`` for an absent or empty optional
        table. Rows the source cannot parse are counted in table ``rej_<name> (error_type, line)``."""

    def create_split_of_patient(self, con) -> str | None:
        """Table ``split_of_patient (subject_id, split)`` for the subjects of ``cohort`` from the source's own
        split, and its name; ``None`` (nothing created) where the source has none."""

    def summary(self) -> dict | None:
        """What the manifest records about the source under its name, if anything."""


def open_adapter(raw: str | Path, source: str, con, notes_dir: str | Path | None = None, meds=None) -> Adapter:
    """The adapter of ``source`` over the files in ``raw``, attached to DuckDB connection ``con`` (``meds``: the
    :class:`~medfuse.config.MedsConfig` of a MEDS dataset; ``notes_dir``: MIMIC notes kept apart)."""
    if source == "meds":
        from medfuse.config import MedsConfig
        from medfuse.data.meds import read_meds

        dataset = read_meds(raw, meds or MedsConfig())
        dataset.attach(con)
        return dataset
    from medfuse.data.raw import CsvSource

    return CsvSource(Path(raw), source, Path(notes_dir) if notes_dir else None)


def _reason(rules: tuple[tuple[str, str], ...]) -> str:
    """SQL: the reason of the first rule whose condition holds, NULL (the row is used) when none does."""
    return "CASE " + " ".join(f"WHEN {cond} THEN '{reason}'" for reason, cond in rules) + " END"


def normalized_icd_sql(x: str) -> str:
    """SQL: an ICD code as the disease prefixes are matched against it (trimmed, no dots, upper case)."""
    return f"upper(replace(trim({x}), '.', ''))"


def create_patient_rows(con, relation: str) -> None:
    """Tables ``patients_rows`` (every row of the patients relation, typed, with its drop reason or NULL) and
    ``patients`` (the used ones): ``subject_id, sex, dob, anchor_age, anchor_year``."""
    con.execute(f"""CREATE OR REPLACE TABLE patients_rows AS SELECT *, {_reason(PATIENT_RULES)} AS reason FROM (
        SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, upper(trim(gender)) AS sex,
          TRY_CAST(dob AS TIMESTAMP) AS dob, TRY_CAST(anchor_age AS DOUBLE) AS anchor_age,
          TRY_CAST(anchor_year AS INTEGER) AS anchor_year FROM {relation})""")
    con.execute("CREATE OR REPLACE TABLE patients AS SELECT * FROM patients_rows WHERE reason IS NULL")


def create_admission_rows(con, relation: str, patients: bool = True) -> None:
    """Table ``admissions_rows``: every row of the admissions relation, typed (``subject_id, hadm_id, admittime,
    dischtime, race``), with its drop reason or NULL. ``patients``: check each against table ``patients``
    (``unknown_patient``); records for prediction need no demographics and skip that rule."""
    rules = tuple(r for r in ADMISSION_RULES if patients or r[0] != "unknown_patient")
    join = "LEFT JOIN patients p USING (subject_id)" if patients else ""
    con.execute(f"""CREATE OR REPLACE TABLE admissions_rows AS SELECT a.*, {_reason(rules)} AS reason FROM (
        SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, TRY_CAST(hadm_id AS BIGINT) AS hadm_id,
          TRY_CAST(admittime AS TIMESTAMP) AS admittime, TRY_CAST(dischtime AS TIMESTAMP) AS dischtime, race
        FROM {relation}) a {join}""")


def create_diagnosis_rows(con, relation: str, admissions: str) -> None:
    """Table ``diagnoses_rows``: every row of the diagnoses relation as ``hadm_id, code`` (normalised),
    ``code_raw``, ``version``, with its drop reason or NULL; ``admissions`` is a table or subquery whose
    ``hadm_id`` are the admissions whose diagnoses count (``unknown_admission`` otherwise)."""
    con.execute(f"""CREATE OR REPLACE TABLE diagnoses_rows AS SELECT d.*, {_reason(DIAGNOSIS_RULES)} AS reason FROM (
        SELECT TRY_CAST(hadm_id AS BIGINT) AS hadm_id, {normalized_icd_sql('icd_code')} AS code,
          trim(icd_code) AS code_raw, TRY_CAST(icd_version AS INTEGER) AS version FROM {relation}) d
        LEFT JOIN (SELECT hadm_id FROM {admissions}) a USING (hadm_id)""")


def create_labels(con, diseases: list[Disease], drop_unlabelled: bool = False) -> None:
    """Table ``labels``: per admission with a used row of ``diagnoses_rows``, one 0/1 column per disease (1 when
    one of its codes starts with a prefix of its own ICD version). ``drop_unlabelled``: an admission of
    ``admissions_rows`` without one is dropped as ``no_diagnoses`` (absent codes are no evidence of absent
    disease)."""
    con.execute(f"""CREATE OR REPLACE TABLE labels AS SELECT hadm_id, {', '.join(d.label_sql() for d in diseases)}
        FROM diagnoses_rows WHERE reason IS NULL GROUP BY hadm_id""")
    if drop_unlabelled:
        con.execute("""UPDATE admissions_rows SET reason = 'no_diagnoses'
            WHERE reason IS NULL AND hadm_id NOT IN (SELECT hadm_id FROM labels)""")


def admitted_sql(race: bool) -> str:
    """A subquery: the used admissions of ``admissions_rows`` with their patient's age (capped at 90), sex
    (``F``/``M`` or NULL), race group (:data:`RACE_GROUPS`; NULL when the source has no race, ``race``
    False) and the raw race string."""
    r = "upper(trim(COALESCE(a.race, '')))"  # an empty value is UNKNOWN
    groups = " ".join(f"WHEN {cond.format(r=r)} THEN '{g}'" for g, cond in RACE_GROUPS)
    group = f"CASE {groups} ELSE 'OTHER' END" if race else "NULL::VARCHAR"
    return f"""(SELECT a.subject_id, a.hadm_id, a.admittime, a.dischtime, round(least({AGE}, 90), 2)::DOUBLE AS age,
          CASE WHEN p.sex IN ('F', 'M') THEN p.sex END AS sex, {group} AS race, a.race AS race_raw
        FROM admissions_rows a JOIN patients p USING (subject_id) WHERE a.reason IS NULL)"""


def _hours(hours: float) -> str:
    return f"to_microseconds(CAST({float(hours)} * 3600e6 AS BIGINT))"


def create_cohort(con, admissions: str, hours_before: float, window_hours: float) -> None:
    """Table ``cohort``: the admissions of ``admissions`` (a table or subquery with ``subject_id, hadm_id,
    admittime, dischtime`` and any further columns), numbered ``row`` in (subject, admission time, hadm_id)
    order, each with its lab window: from ``hours_before`` before admission (``win_start``) to discharge, or to
    ``window_hours`` after admission where that is earlier (``win_end``). An admission without admission
    time (a record) takes labs of any time; one without discharge time has not ended."""
    end = "a.dischtime" if not window_hours else f"least(a.dischtime, a.admittime + {_hours(window_hours)})"
    con.execute(f"""CREATE OR REPLACE TABLE cohort AS
        WITH a AS (SELECT * REPLACE (COALESCE(admittime, TIMESTAMP '0001-01-01') AS admittime,
                                     COALESCE(dischtime, TIMESTAMP '9999-12-31') AS dischtime),
                     admittime IS NULL AS open FROM {admissions})
        SELECT row_number() OVER (ORDER BY a.subject_id, a.admittime, a.hadm_id) - 1 AS row, a.* EXCLUDE (open),
          CASE WHEN a.open THEN a.admittime ELSE a.admittime - {_hours(hours_before)} END AS win_start,
          CASE WHEN a.open THEN a.dischtime ELSE {end} END AS win_end
        FROM a""")


def create_attachment_windows(con) -> None:
    """Table ``lab_windows (subject_id, lo, hi, hadm_id)``: disjoint time pieces per patient, each owned by the
    latest-admitted admission of ``cohort`` whose lab window (``win_start`` to ``dischtime``, both included)
    covers it, so a lab row without HADM_ID matches at most one admission."""
    con.execute("""CREATE OR REPLACE TABLE lab_windows AS
        WITH edges AS (
          SELECT subject_id, win_start AS b FROM cohort
          UNION SELECT subject_id, dischtime + INTERVAL 1 MICROSECOND FROM cohort),
        pieces AS (SELECT subject_id, b AS lo, lead(b) OVER (PARTITION BY subject_id ORDER BY b) AS hi FROM edges)
        SELECT p.subject_id, p.lo, p.hi, arg_max(c.hadm_id, c.admittime) AS hadm_id
        FROM pieces p JOIN cohort c ON c.subject_id = p.subject_id AND c.win_start <= p.lo
          AND c.dischtime + INTERVAL 1 MICROSECOND >= p.hi
        GROUP BY p.subject_id, p.lo, p.hi""")


def create_note_rows(con, relation: str, run: Run | None = None) -> None:
    """Table ``note_rows (hadm_id, t, text, reason)``: every row of the notes relation with its drop reason
    (:data:`NOTE_RULES`, against table ``cohort``) or NULL; the text is kept for used notes only."""
    run = run or (lambda q, stage=None: con.execute(q))
    run(f"""CREATE OR REPLACE TABLE note_rows AS
        WITH n AS (SELECT TRY_CAST(hadm_id AS BIGINT) AS hadm_id, TRY_CAST(charttime AS TIMESTAMP) AS t, category,
                     TRY_CAST(error AS BOOLEAN) AS error, text FROM {relation}),
        classified AS (SELECT n.hadm_id, n.t, n.text, {_reason(NOTE_RULES)} AS reason
                       FROM n LEFT JOIN cohort c USING (hadm_id))
        SELECT hadm_id, t, CASE WHEN reason IS NULL THEN text END AS text, reason FROM classified""",
        stage="notes: read")
