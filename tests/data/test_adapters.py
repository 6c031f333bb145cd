"""Every source is an adapter giving the same canonical relations, behind one set of rules (medfuse.data.rules).

The same admissions of the synthetic hospital go through each adapter: MIMIC-IV CSV, MIMIC-III CSV (the same
files in MIMIC-III's layout), MEDS and patient records. They give the same cohort admissions, lab aggregates
and note texts, and the same labels where the source has them (records carry none; ``RawRecords`` reads
them from the source), up to what docs/data.md documents under "What differs between sources": MIMIC-III
codes are all read as ICD-9, its ages are exact from the date of birth, and it has no reference ranges.
test_meds.py compares the MEDS and MIMIC-IV cohorts table by table and test_meds_equivalence.py does the
same for the real MIMIC-IV demo through the real MEDS ETL; this adds MIMIC-III and the records.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from medfuse.config import load_config
from medfuse.data.cohort import Cohort
from medfuse.data.diseases import load_diseases
from medfuse.data.prepare import prepare_cohort
from medfuse.data.rules import RELATIONS, open_adapter
from medfuse.data.sections import ALLOWED_SECTIONS
from medfuse.serving.features import Vocabulary, record_relations, records_to_cohort
from medfuse.serving.raw_records import RawRecords, records_from_raw
from medfuse.serving.records import PatientRecord

AGGREGATES = ("last", "mean", "min", "max", "count", "observed")
TO_MIMIC3 = {  # file: SELECT over the MIMIC-IV tables
    "PATIENTS": "SELECT subject_id AS SUBJECT_ID, gender AS GENDER, "  # born on 1 January, as in MEDS
                "make_timestamp(anchor_year::INT - anchor_age::INT, 1, 1, 0, 0, 0) AS DOB FROM patients",
    "ADMISSIONS": "SELECT subject_id AS SUBJECT_ID, hadm_id AS HADM_ID, admittime AS ADMITTIME, "
                  "dischtime AS DISCHTIME, race AS ETHNICITY FROM admissions",
    "DIAGNOSES_ICD": "SELECT subject_id AS SUBJECT_ID, hadm_id AS HADM_ID, icd_code AS ICD9_CODE FROM diagnoses_icd",
    "D_LABITEMS": "SELECT itemid AS ITEMID, label AS LABEL, fluid AS FLUID, category AS CATEGORY FROM d_labitems",
    "LABEVENTS": "SELECT subject_id AS SUBJECT_ID, hadm_id AS HADM_ID, itemid AS ITEMID, charttime AS CHARTTIME, "
                 "value AS VALUE, valuenum AS VALUENUM, valueuom AS VALUEUOM, flag AS FLAG FROM labevents",
    "NOTEEVENTS": "SELECT subject_id AS SUBJECT_ID, hadm_id AS HADM_ID, charttime AS CHARTDATE, "
                  "'Discharge summary' AS CATEGORY, NULL AS ISERROR, text AS TEXT FROM discharge",
}


def as_mimic3(src, dst) -> None:
    """The MIMIC-IV files of ``src`` in MIMIC-III's file and column names (``dst``)."""
    dst.mkdir()
    con = duckdb.connect()
    for path in [*(src / "hosp").glob("*.csv.gz"), src / "note" / "discharge.csv.gz"]:
        con.execute(f"CREATE VIEW {path.name.removesuffix('.csv.gz')} AS "
                    f"SELECT * FROM read_csv('{path}', all_varchar = true)")
    for name, select in TO_MIMIC3.items():
        con.execute(f"COPY ({select}) TO '{dst / name}.csv.gz' (HEADER, COMPRESSION gzip)")


@pytest.fixture(scope="module")
def sources(synth, tmp_path_factory):
    """Per source, its cohort's tables (the records' with each record's id as hadm_id), the records, and the
    admissions whose diagnoses are all ICD-9."""
    root = synth[0]
    work = tmp_path_factory.mktemp("adapters")
    as_mimic3(root / "mimic4", work / "mimic3")
    prepare_cohort(work / "mimic3", work / "mimic3_cohort",
                   load_config(overrides={"prepare": {"source": "mimic3"}}).prepare)
    records = records_from_raw(root / "mimic4", "mimic4")
    csv = Cohort(root / "csv_cohort")
    vocab = Vocabulary(csv.lab_tests, csv.label_names, "mimic4", 24.0, 0.0, 5.0)
    from_records, _ = records_to_cohort([PatientRecord.model_validate(r) for r in records], vocab)
    ids = pa.array([r["id"] for r in records], pa.int64())  # record i is admission i of the in-memory cohort
    cohorts = {"mimic4": csv, "meds": Cohort(root / "meds_cohort"), "mimic3": Cohort(work / "mimic3_cohort")}
    tables = {name: {t: c.table(t) for t in ("admissions", "labs", "notes", "labels", "lab_text")}
              for name, c in cohorts.items()}
    accounts = {name: c.manifest["tables"] for name, c in cohorts.items()}
    tables["records"] = {t: relabel(from_records.table(t), ids) for t in ("labs", "notes", "lab_text")}
    icd9 = duckdb.sql(f"""SELECT hadm_id::BIGINT FROM read_csv('{root / 'mimic4' / 'hosp' / 'diagnoses_icd.csv.gz'}',
        all_varchar = true) GROUP BY ALL HAVING bool_and(icd_version = '9')""").fetchall()
    return {"roots": {"mimic4": root / "mimic4", "meds": root / "meds", "mimic3": work / "mimic3"},
            "tables": tables, "accounts": accounts, "records": records, "vocab": vocab,
            "icd9_only": {h for (h,) in icd9}}


def relabel(table: pa.Table, ids: pa.Array) -> pa.Table:
    """An in-memory cohort's table with each record's own id as ``hadm_id`` (in place of its row)."""
    return table.set_column(0, "hadm_id", ids.take(table.column("hadm_id")))


def by_admission(table: pa.Table) -> dict[int, dict]:
    return {row.pop("hadm_id"): row for row in table.to_pylist()}


def test_every_adapter_gives_the_canonical_relations(sources):
    for source, root in sources["roots"].items():
        con = duckdb.connect()
        adapter = open_adapter(root, source, con)
        for name, columns in RELATIONS.items():
            got = con.sql(f"SELECT * FROM {adapter.relation(name)} LIMIT 1").columns
            assert got == list(columns), (source, name)
        assert adapter.has_race
    records = [PatientRecord.model_validate(r) for r in sources["records"][:5]]
    relations = record_relations(records, sources["vocab"], [[] for _ in records])
    assert {name: t.column_names for name, t in relations.items()} == {
        name: list(RELATIONS[name]) for name in ("admissions", "labevents")}


def test_same_admissions(sources):
    tables, records = sources["tables"], sources["records"]
    base = tables["mimic4"]["admissions"]
    assert base.num_rows == 300
    for source in ("meds", "mimic3"):
        other = tables[source]["admissions"]
        assert other.drop_columns(["age"]).equals(base.drop_columns(["age"])), source
    assert sources["accounts"]["mimic3"] == sources["accounts"]["mimic4"]  # every row used or dropped alike
    assert tables["meds"]["admissions"]["age"].equals(base["age"])  # a birth year, as MIMIC-IV's anchor
    exact = tables["mimic3"]["admissions"]["age"].to_numpy() - base["age"].to_numpy()
    assert ((exact >= 0) & (exact <= 1)).all() and exact.max() > 0.5  # MIMIC-III: exact from the date of birth
    assert [r["id"] for r in records] == base["hadm_id"].to_pylist()
    assert [r["admittime"] for r in records] == [t.isoformat() for t in base["admittime"].to_pylist()]


def test_same_lab_aggregates(sources):
    tables = sources["tables"]
    base = tables["mimic4"]["labs"]
    for source in ("meds", "mimic3", "records"):
        labs = tables[source]["labs"]
        order = pc.index_in(base["hadm_id"], labs["hadm_id"])
        labs = labs.take(order)
        # MIMIC-III's own split selects the same tests (in another order: their training shares differ)
        assert sorted(labs.column_names) == sorted(base.column_names), source
        for c in base.column_names[1:]:
            if c.endswith("__mean"):  # float sums in another order
                np.testing.assert_allclose(labs[c].to_numpy(zero_copy_only=False),
                                           base[c].to_numpy(zero_copy_only=False), rtol=1e-12, err_msg=source)
            else:
                assert labs[c].equals(base[c]), (source, c)


def test_same_note_texts(sources):
    tables = sources["tables"]
    base = by_admission(tables["mimic4"]["notes"].select(["hadm_id", *ALLOWED_SECTIONS]))
    assert len(base) > 250
    for source in ("meds", "mimic3", "records"):
        assert by_admission(tables[source]["notes"].select(["hadm_id", *ALLOWED_SECTIONS])) == base, source


def test_same_labels_where_the_source_has_them(sources):
    tables, icd9 = sources["tables"], sources["icd9_only"]
    base = tables["mimic4"]["labels"]
    assert tables["meds"]["labels"].equals(base)
    assert 100 < len(icd9) < 300
    mimic3, mimic4 = by_admission(tables["mimic3"]["labels"]), by_admission(base)
    assert {h: mimic3[h] for h in icd9} == {h: mimic4[h] for h in icd9}  # MIMIC-III reads every code as ICD-9
    assert mimic3 != mimic4
    diseases = load_diseases()
    for source, root in sources["roots"].items():  # the labels RawRecords reads beside the records
        with RawRecords(root, source, diseases=diseases) as raw:
            truth = np.concatenate([chunk.truth for chunk in raw.chunks(64)])
        labels = tables[source]["labels"]
        np.testing.assert_array_equal(truth, np.stack([labels[d.name].to_numpy() for d in diseases], 1), source)


def test_lab_text_differs_by_reference_ranges_only(sources):
    """MIMIC-III has no reference ranges: its abnormal results are the flagged ones, each ``(abnormal)``."""
    tables = sources["tables"]
    base = by_admission(tables["mimic4"]["lab_text"])
    assert by_admission(tables["meds"]["lab_text"]) == base
    assert by_admission(tables["records"]["lab_text"]) == base
    mimic3 = json.dumps(tables["mimic3"]["lab_text"].column("text").to_pylist())
    assert "(abnormal)" in mimic3 and "(high)" not in mimic3 and "(low)" not in mimic3
    assert "(high)" in json.dumps(list(base.values()))
