"""MEDS input (``prepare --source meds``) and output (``synth --format meds``, ``mimic4_to_meds``).

The synthetic hospital written as MIMIC-IV CSVs and as MEDS (same seed) must give the same cohort; so must
the real MIMIC-IV demo and its conversion. Variants in the vocabularies MEDS datasets use in the wild
(dotted ``ICD10CM/...`` codes, ``visit_id``, a ``unit`` column, diagnoses only through ``parent_codes``, lab
tests coded in LOINC or with LOINC parents) must give it too, and a folder that is not MEDS is refused with the file and column named.
"""

from __future__ import annotations

import json
import shutil

import duckdb
import meds
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.config import ConfigError, load_config
from medfuse.data import meds as meds_reader
from medfuse.data.meds import NON_INTEGER_TEST_BASE, lab_itemids, surrogate_itemid
from medfuse.data.prepare import prepare_cohort
from medfuse.data.raw import InputError
from medfuse.data.synth.meds import DATA_SCHEMA, mimic4_to_meds

TABLES = ("admissions", "labels", "splits", "lab_tests", "lab_text", "notes")


def prepare_meds(raw, out, subject_splits: bool = False, **meds_keys):
    cfg = load_config(overrides={"prepare": {"source": "meds"}}).prepare
    cfg = cfg.model_copy(update={"meds": cfg.meds.model_copy(update={"use_subject_splits": subject_splits,
                                                                      **meds_keys})})
    return prepare_cohort(raw, out, cfg)


def assert_same_cohort(a, b) -> float:
    """Every table equal; lab means (float sums in another order) within 1e-6. Returns the largest difference."""
    for t in TABLES:
        assert pq.read_table(a / f"{t}.parquet").equals(pq.read_table(b / f"{t}.parquet")), t
    x, y = pq.read_table(a / "labs.parquet"), pq.read_table(b / "labs.parquet")
    assert x.schema == y.schema
    largest = 0.0
    for name in x.schema.names:
        if name.endswith("__mean"):
            u, v = x[name].to_numpy(zero_copy_only=False), y[name].to_numpy(zero_copy_only=False)
            np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
            largest = max(largest, float(np.nanmax(np.abs(u - v), initial=0.0)))
        else:
            assert x[name].equals(y[name]), name
    assert largest <= 1e-6
    return largest


def test_synth_meds_gives_the_csv_cohort(synth):
    root, summary, csv, med = synth
    assert summary["format"] == "meds" and summary["admissions"] == 300
    assert med["source"] == "meds" and med["split_source"] == "stratified"
    assert med["tables"] == csv["tables"]  # rows read, used and dropped by reason, table by table
    assert med["tables"]["admissions"]["used"] == 300 and med["tables"]["labevents"]["read"] == summary["lab_rows"]
    assert med["notes_status"] == csv["notes_status"] == "present"
    assert med["notes_census"] == csv["notes_census"]
    notes = pq.read_table(root / "meds_cohort" / "notes.parquet")
    assert notes.num_rows == summary["notes"] > 250  # the notes path, from text_value events
    assert notes.column("chief_complaint").null_count < notes.num_rows
    assert_same_cohort(root / "csv_cohort", root / "meds_cohort")


def test_every_event_is_accounted_for(synth):
    _, _, _, med = synth
    events, unused = med["meds"]["events"], med["meds"]["unused_events"]
    mapped = sum(v for k, v in events.items() if k not in ("total", "diagnosis_by_parent_code"))
    assert events["total"] == mapped + sum(unused.values())
    assert {"ED_REGISTRATION", "ED_OUT"} <= set(unused)  # read, used by no table, counted
    assert events["lab"] == med["tables"]["labevents"]["read"]
    assert events["diagnosis"] == med["tables"]["diagnoses"]["read"]
    assert events["admission_start"] == events["admission_end"] == med["tables"]["admissions"]["read"]
    assert med["meds"]["birth_precision"] == "year" and med["meds"]["dataset"]["meds_version"] == meds.__version__


def test_written_meds_follows_the_standard(synth):
    root = synth[0] / "meds"
    files = sorted((root / "data").rglob("*.parquet"))
    assert {p.parent.name for p in files} == {"train", "tuning", "held_out"}
    seen: set[int] = set()
    for path in files:
        table = pq.read_table(path)
        meds.DataSchema.validate(table)  # the exact MEDS types: int64, timestamp[us], float32, large_string
        subjects = table.column("subject_id").to_numpy()
        assert np.all(np.diff(subjects) >= 0) and not seen & set(subjects.tolist())  # whole subjects, in order
        seen |= set(subjects.tolist())
        con = duckdb.connect()
        con.register("t", table)
        assert con.execute("""SELECT count(*) FROM (SELECT "time" < lag("time") OVER (PARTITION BY subject_id
            ORDER BY rowid) AS back FROM (SELECT *, row_number() OVER () AS rowid FROM t)) WHERE back""").fetchall()[0][0] == 0
    meds.CodeMetadataSchema.validate(pq.read_table(root / "metadata" / "codes.parquet"))
    splits = pq.read_table(root / "metadata" / "subject_splits.parquet")
    meds.SubjectSplitSchema.validate(splits)
    assert set(splits.column("subject_id").to_pylist()) == seen
    meds.DatasetMetadataSchema.validate(json.loads((root / "metadata" / "dataset.json").read_text()))
    codes = {r["code"]: r for r in pq.read_table(root / "metadata" / "codes.parquet").to_pylist()}
    assert codes["LAB//RESULT//50912//mg/dL"]["description"] == "Creatinine"
    assert codes["DIAGNOSIS//ICD//10//I5022"]["parent_codes"] == ["ICD10CM/I50.22"]
    assert codes["DIAGNOSIS//ICD//9//4280"]["parent_codes"] == ["ICD9CM/428.0"]


def test_subject_splits_are_used_when_asked(synth, tmp_path):
    root = synth[0]
    manifest = prepare_meds(root / "meds", tmp_path / "c", subject_splits=True)
    assert manifest["split_source"] == "metadata/subject_splits.parquet"
    theirs = dict(zip(*pq.read_table(root / "meds" / "metadata" / "subject_splits.parquet")
                      .to_pydict().values(), strict=True))
    ours = pq.read_table(tmp_path / "c" / "splits.parquet").to_pylist()
    names = {"train": "train", "tuning": "val", "held_out": "test"}
    assert all(names[theirs[r["subject_id"]]] == r["split"] for r in ours)
    assert {r["split"] for r in ours} == {"train", "val", "test"}
    # the same admissions and labels as the stratified cohort; only the split differs
    for t in ("admissions", "labels"):
        assert pq.read_table(tmp_path / "c" / f"{t}.parquet").equals(pq.read_table(root / "meds_cohort" / f"{t}.parquet"))
    assert not pq.read_table(root / "meds_cohort" / "splits.parquet").equals(pq.read_table(tmp_path / "c" / "splits.parquet"))


def test_bad_subject_splits_are_refused(synth, tmp_path):
    src = synth[0] / "meds"
    bad = tmp_path / "meds"
    shutil.copytree(src, bad)
    path = bad / "metadata" / "subject_splits.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(1, "split", pa.array(["fold_" + s for s in t.column("split").to_pylist()])), path)
    with pytest.raises(InputError, match=r"subject_splits\.parquet: split 'fold_\w+' .* train_splits"):
        prepare_meds(bad, tmp_path / "c", subject_splits=True)
    pq.write_table(t.slice(1), path)  # one subject without a split
    with pytest.raises(InputError, match=r"subject_splits\.parquet: 1 cohort subject\(s\) have no split"):
        prepare_meds(bad, tmp_path / "c", subject_splits=True)
    assert not (tmp_path / "c").exists()
    assert prepare_meds(bad, tmp_path / "c")["split_source"] == "stratified"  # the documented way out


def rewrite(src, dst, select: str, codes: str | None = None, schema: pa.Schema = DATA_SCHEMA) -> None:
    """A copy of MEDS folder ``src`` whose events are ``select`` over view ``events`` (one file per split)."""
    shutil.copytree(src / "metadata", dst / "metadata")
    con = duckdb.connect()
    for split in ("train", "tuning", "held_out"):
        con.execute(f"CREATE OR REPLACE VIEW events AS SELECT * FROM read_parquet('{src}/data/{split}/*.parquet')")
        table = con.sql(select).to_arrow_table()
        (dst / "data" / split).mkdir(parents=True)
        pq.write_table(table.cast(pa.schema([schema.field(n) if n in schema.names else table.schema.field(n)
                                             for n in table.schema.names])), dst / "data" / split / "0.parquet")
    if codes:
        con.execute(f"CREATE VIEW codes AS SELECT * FROM read_parquet('{src}/metadata/codes.parquet')")
        pq.write_table(con.sql(codes).to_arrow_table(), dst / "metadata" / "codes.parquet")


DOTTED = ("COALESCE((SELECT parent_codes[1] FROM read_parquet('{src}/metadata/codes.parquet') c "
          "WHERE c.code = events.code AND events.code LIKE 'DIAGNOSIS//%'), code)")
VARIANTS = {
    # dotted ICD9CM/428.0 and ICD10CM/I50.21 (the ETL's parent codes) in place of DIAGNOSIS//ICD//...
    "dotted_icd": (f"SELECT * REPLACE ({DOTTED} AS code) FROM events", None, {}),
    # the admission id in visit_id (meds_etl's OMOP ETL), the unit in a column of its own
    "visit_id_and_unit_column": (
        ("SELECT * EXCLUDE (hadm_id, code), hadm_id AS visit_id, CASE WHEN code LIKE 'LAB//RESULT//%' THEN "
        "'LAB//' || split_part(code, '//', 3) ELSE code END AS code, CASE WHEN code LIKE 'LAB//RESULT//%' THEN "
        "NULLIF(split_part(code, '//', 4), 'UNK') END AS unit FROM events"),
        ("SELECT DISTINCT ON (code) * FROM (SELECT * REPLACE (CASE WHEN code LIKE 'LAB//RESULT//%' THEN "
        "'LAB//' || split_part(code, '//', 3) ELSE code END AS code) FROM codes)"),
        {"lab_code": "^LAB//(?P<test>[0-9]*)$"}),
    # local diagnosis codes, ICD only as their parent in codes.parquet
    "parent_codes": (
        ("SELECT * REPLACE (CASE WHEN code LIKE 'DIAGNOSIS//%' THEN 'LOCAL_DX/' || md5(code) ELSE code END AS code) "
        "FROM events"),
        ("SELECT CASE WHEN code LIKE 'DIAGNOSIS//%' THEN 'LOCAL_DX/' || md5(code) ELSE code END AS code, "
        "description, parent_codes, itemid, fluid, category FROM codes"), {}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_other_vocabularies_give_the_same_cohort(synth, tmp_path, variant):
    root, _, _, base = synth
    select, codes, keys = VARIANTS[variant]
    src = root / "meds"
    rewrite(src, tmp_path / "meds", select.replace("{src}", str(src)), codes)
    manifest = prepare_meds(tmp_path / "meds", tmp_path / "c", **keys)
    assert_same_cohort(root / "meds_cohort", tmp_path / "c")
    dx, dx_base = manifest["tables"]["diagnoses"], base["tables"]["diagnoses"]
    assert (dx["read"], dx["used"], dx["dropped"]) == (dx_base["read"], dx_base["used"], dx_base["dropped"])
    events = manifest["meds"]["events"]
    if variant == "dotted_icd":  # the dots are removed before the disease prefixes are matched
        assert dx["repaired"]["normalized_icd_code"] > 0.5 * dx["used"]
    if variant == "parent_codes":
        assert events["diagnosis_by_parent_code"] == events["diagnosis"] == dx["read"]
    if variant == "visit_id_and_unit_column":
        assert manifest["tables"]["labevents"] == base["tables"]["labevents"]


def test_lab_itemids_are_a_function_of_the_test():
    """Integer test ids are the itemid; any other gets a surrogate that does not depend on the other tests."""
    assert surrogate_itemid("2160-0") == 1_069_806_301  # pinned: cohorts and bundles of earlier runs rely on it
    ids, collisions = lab_itemids(["50912", "0042", "42", "2160-0", "LOINC/2160-0", "1000000001", "1000000000"])
    assert collisions == 0
    assert ids["50912"] == 50912 and ids["0042"] == ids["42"] == 42 and ids["1000000000"] == NON_INTEGER_TEST_BASE
    assert ids["2160-0"] == surrogate_itemid("2160-0") != ids["LOINC/2160-0"] == surrogate_itemid("LOINC/2160-0")
    assert ids["1000000001"] == surrogate_itemid("1000000001")  # above the base: numbered as a non-integer id
    for test in ("2160-0", "LOINC/2160-0", "1000000001"):
        assert NON_INTEGER_TEST_BASE < ids[test] < 2**31
    assert lab_itemids(["718-7", "2160-0"])[0]["2160-0"] == ids["2160-0"]  # another dataset: the same itemid


def test_colliding_surrogates_stay_apart(monkeypatch):
    monkeypatch.setattr(meds_reader, "SURROGATE_SPACE", 8)
    tests = [f"T{i}" for i in range(8)]
    ids, collisions = lab_itemids(tests)
    assert sorted(ids.values()) == list(range(NON_INTEGER_TEST_BASE + 1, NON_INTEGER_TEST_BASE + 9))
    moved = [t for t in tests if ids[t] != surrogate_itemid(t)]  # its surrogate taken by a test sorted before
    assert collisions == len(moved) >= 8 - len({surrogate_itemid(t) for t in tests}) > 0
    assert lab_itemids(list(reversed(tests))) == (ids, collisions)  # the order given does not matter


def fake_loinc(itemid: str) -> str:
    """SQL: a LOINC-style code (``50912-2``) for a MIMIC itemid."""
    return f"({itemid} || '-' || (TRY_CAST({itemid} AS INTEGER) % 10))"


ITEMID = "split_part(code, '//', 3)"
IS_LAB = "code LIKE 'LAB//RESULT//%'"
UNIT = f"CASE WHEN {IS_LAB} THEN NULLIF(split_part(code, '//', 4), 'UNK') END"
LOINC_VARIANTS = {  # (the lab code, [prepare.meds] keys, what the test group holds before the LOINC code)
    # OMOP-derived MEDS: LOINC/2160-0 with the unit in a column of its own
    "loinc_code_and_unit_column": (
        f"'LOINC/' || {fake_loinc(ITEMID)}",
        {"lab_code": "^LOINC/(?P<test>.+)$", "lab_unit_column": "unit"}, ""),
    # LAB//LOINC/2160-0//mg/dL: a LOINC code in the ETL's lab code, the unit still in the code
    "loinc_in_lab_code": (
        f"'LAB//LOINC/' || {fake_loinc(ITEMID)} || '//' || split_part(code, '//', 4)",
        {"lab_code": "^LAB//(?P<test>LOINC/[^/]+)//(?P<unit>.*)$"}, "LOINC/"),
}


def loinc_meds(src, dst, variant: str) -> tuple[dict, str]:
    """A copy of ``src`` with every lab code in LOINC (``LOINC_VARIANTS``); its [prepare.meds] keys and test prefix."""
    lab, keys, prefix = LOINC_VARIANTS[variant]
    unit = f", {UNIT} AS unit" if "lab_unit_column" in keys else ""
    rewrite(src, dst, f"SELECT * EXCLUDE (code), CASE WHEN {IS_LAB} THEN {lab} ELSE code END AS code{unit} FROM events",
            f"SELECT DISTINCT ON (code) * REPLACE (CASE WHEN {IS_LAB} THEN {lab} ELSE code END AS code) FROM codes "
            "ORDER BY code, itemid")
    return keys, prefix


@pytest.mark.parametrize("variant", list(LOINC_VARIANTS))
def test_loinc_coded_labs_give_the_same_cohort(synth, tmp_path, variant):
    """Every lab code rewritten to LOINC (descriptions in codes.parquet): the integer-coded cohort, test by test."""
    root, _, _, base = synth
    keys, prefix = loinc_meds(root / "meds", tmp_path / "meds", variant)
    manifest = prepare_meds(tmp_path / "meds", tmp_path / "c", **keys)
    a, b = root / "meds_cohort", tmp_path / "c"
    for t in ("admissions", "labels", "splits", "notes"):
        assert pq.read_table(a / f"{t}.parquet").equals(pq.read_table(b / f"{t}.parquet")), t
    assert manifest["tables"] == base["tables"]  # every lab row read, used and dropped for the same reason
    text_a, text_b = pq.read_table(a / "lab_text.parquet"), pq.read_table(b / "lab_text.parquet")
    assert text_a.drop_columns("text").equals(text_b.drop_columns("text"))
    # the same abnormal results; tests measured in as many training admissions are listed in itemid order
    def items(t):
        return [sorted(x.removeprefix("Abnormal labs: ").removesuffix(".").split("; ")) for x in t.column("text").to_pylist()]

    assert items(text_a) == items(text_b)
    tests = pq.read_table(a / "lab_tests.parquet").to_pylist()
    test_of = {r["itemid"]: f"{prefix}{r['itemid']}-{r['itemid'] % 10}" for r in tests}  # the test group
    itemid = {k: surrogate_itemid(v) for k, v in test_of.items()}  # the mapping, test by test
    surrogates = manifest["meds"]["lab_test_ids"]["surrogate_itemids"]
    assert {v: surrogates[v] for v in test_of.values()} == {test_of[k]: itemid[k] for k in test_of}
    assert manifest["meds"]["lab_test_ids"]["surrogate_collisions"] == 0
    mapped = sorted(({**r, "itemid": itemid[r["itemid"]], "key": f"lab_{itemid[r['itemid']]}"} for r in tests),
                    key=lambda r: r["itemid"])
    got = pq.read_table(b / "lab_tests.parquet").to_pylist()
    assert sorted(got, key=lambda r: r["itemid"]) == mapped  # labels from the descriptions, units, statistics
    labs_a, labs_b = pq.read_table(a / "labs.parquet"), pq.read_table(b / "labs.parquet")
    renamed = {f"lab_{k}__": f"lab_{v}__" for k, v in itemid.items()}
    names = [next((n.replace(k, v) for k, v in renamed.items() if n.startswith(k)), n) for n in labs_a.column_names]
    assert sorted(names) == sorted(labs_b.column_names)
    for name, new in zip(labs_a.column_names, names, strict=True):
        x, y = labs_a[name], labs_b[new]
        if name.endswith("__mean"):  # sums in another order
            np.testing.assert_allclose(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), rtol=1e-9)
        else:
            assert x.equals(y), name


def test_loinc_coded_labs_reach_a_model_by_label(synth, tmp_path):
    """Serving reads a test with a surrogate itemid by its label: LOINC-coded MEDS gives a model trained on the
    integer-coded hospital, or on the LOINC-coded one, the same lab features as integer-coded MEDS does."""
    from medfuse.serving.features import Vocabulary, records_to_cohort
    from medfuse.serving.raw_records import records_from_raw
    from medfuse.serving.records import PatientRecord

    root = synth[0]
    keys, _ = loinc_meds(root / "meds", tmp_path / "meds", "loinc_code_and_unit_column")
    prepare_meds(tmp_path / "meds", tmp_path / "c", **keys)
    default = load_config().prepare.meds

    def labs(raw, cohort, **meds_keys):
        vocab = Vocabulary(pq.read_table(cohort / "lab_tests.parquet"), ["x"], "meds", 24.0, 0.0, 5.0)
        records = records_from_raw(raw, "meds", limit=60, meds=default.model_copy(update=meds_keys))
        return records_to_cohort([PatientRecord.model_validate(r) for r in records], vocab)[0].table("labs")

    integer = labs(root / "meds", root / "meds_cohort")
    assert sum(integer.column(n).null_count < 30 for n in integer.column_names if n.endswith("__last")) > 30
    assert labs(tmp_path / "meds", root / "meds_cohort", **keys).equals(integer)
    loinc = labs(tmp_path / "meds", tmp_path / "c", **keys)

    def renamed(name):  # lab_50912__mean -> lab_<surrogate of 50912-2>__mean
        test, _, agg = name.removeprefix("lab_").partition("__")
        return name if not agg else f"lab_{surrogate_itemid(f'{test}-{int(test) % 10}')}__{agg}"

    assert integer.rename_columns([renamed(n) for n in integer.column_names]).select(loinc.column_names).equals(loinc)


def test_loinc_in_the_lab_code_needs_its_lab_code(synth, tmp_path):
    """``LAB//LOINC/2160-0//mg/dL`` is not a default lab code: its events are counted as unused, never lost."""
    root, _, _, base = synth
    creatinine = "code LIKE 'LAB//RESULT//50912//%'"
    rewrite(root / "meds", tmp_path / "meds", f"SELECT * REPLACE (CASE WHEN {creatinine} THEN "
            "'LAB//LOINC/2160-0//' || split_part(code, '//', 4) ELSE code END AS code) FROM events")
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/meds/data/*/*.parquet') WHERE {creatinine}"
                   ).fetchall()[0][0]
    manifest = prepare_meds(tmp_path / "meds", tmp_path / "c")
    assert manifest["meds"]["unused_events"]["LAB"] == n > 1000
    assert manifest["tables"]["labevents"]["read"] == base["tables"]["labevents"]["read"] - n
    assert "lab_50912" not in pq.read_table(tmp_path / "c" / "lab_tests.parquet").column("key").to_pylist()


def test_loinc_parents_of_local_lab_codes(synth, tmp_path):
    """Local lab codes with their LOINC code only in parent_codes: the local ids stay, the parent is recorded,
    and a local code without description is labelled by its parent's."""
    root, _, _, _ = synth
    parent = f"['LOINC/' || {fake_loinc(ITEMID)}]"
    rewrite(root / "meds", tmp_path / "meds", "SELECT * FROM events",
            f"""SELECT code, CASE WHEN {IS_LAB} THEN NULL ELSE description END AS description,
                  CASE WHEN {IS_LAB} THEN {parent} ELSE parent_codes END AS parent_codes, itemid, fluid, category
                FROM codes
                UNION ALL SELECT DISTINCT ON (p) {parent}[1] AS p, description, NULL, NULL, NULL, NULL FROM codes
                WHERE {IS_LAB} AND description IS NOT NULL ORDER BY ALL""")
    manifest = prepare_meds(tmp_path / "meds", tmp_path / "c")
    assert_same_cohort(root / "meds_cohort", tmp_path / "c")  # the same itemids and labels
    recorded = manifest["meds"]["lab_test_ids"]
    assert recorded["surrogate_itemids"] == {}
    tests = pq.read_table(tmp_path / "c" / "lab_tests.parquet").column("itemid").to_pylist()
    assert {int(k): v for k, v in recorded["parent_codes"].items() if int(k) in tests} == {
        i: f"LOINC/{i}-{i % 10}" for i in tests}
    assert recorded["tests"] == len(recorded["parent_codes"])


def test_real_mimic4_demo_through_meds(mimic4_demo, mimic4_cohort, tmp_path):
    """The real MIMIC-IV demo, converted by mimic4_to_meds, gives the CSV path's cohort: 275 admissions."""
    summary = mimic4_to_meds(mimic4_demo, tmp_path / "meds")
    assert summary["subjects"] == 100 and summary["rows_not_written"] == {"no_integer_subject_id": 0}
    manifest = prepare_meds(tmp_path / "meds", tmp_path / "c")
    csv = json.loads((mimic4_cohort / "manifest.json").read_text())
    assert manifest["split_sizes"]["all"]["admissions"] == 275
    assert manifest["tables"] == csv["tables"]
    assert manifest["notes_status"] == "missing"
    largest = assert_same_cohort(mimic4_cohort, tmp_path / "c")
    assert largest < 1e-9


def write_events(path, **columns) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def test_a_folder_that_is_not_meds_is_refused(synth, tmp_path):
    root = synth[0]
    with pytest.raises(InputError, match=r"not a MEDS dataset: no data/ folder"):
        prepare_meds(root / "mimic4", tmp_path / "c")  # the CSV layout
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(InputError, match=r"data: no \.parquet files"):
        prepare_meds(tmp_path / "empty", tmp_path / "c")
    bad = tmp_path / "bad" / "data" / "0.parquet"
    write_events(bad, subject_id=pa.array(["1"]), time=pa.array([None], pa.timestamp("us")), code=["GENDER//F"])
    with pytest.raises(InputError, match=r"0\.parquet: column 'subject_id' has type string; MEDS wants int64"):
        prepare_meds(tmp_path / "bad", tmp_path / "c")
    write_events(bad, subject_id=pa.array([1]), code=["GENDER//F"])
    with pytest.raises(InputError, match=r"0\.parquet: not a MEDS file: missing required column 'time'"):
        prepare_meds(tmp_path / "bad", tmp_path / "c")
    write_events(bad, subject_id=pa.array([1]), time=pa.array([None], pa.timestamp("us")), code=["GENDER//F"],
                 numeric_value=pa.array(["1.0"]))
    with pytest.raises(InputError, match=r"column 'numeric_value' has type string; MEDS wants float"):
        prepare_meds(tmp_path / "bad", tmp_path / "c")
    good = tmp_path / "good"
    shutil.copytree(root / "meds", good)
    (good / "metadata" / "dataset.json").write_text('{"dataset_name": 3}')
    with pytest.raises(InputError, match=r"dataset\.json: not MEDS dataset metadata"):
        prepare_meds(good, tmp_path / "c")
    (good / "metadata" / "dataset.json").unlink()
    pq.write_table(pa.table({"code": pa.array([1])}), good / "metadata" / "codes.parquet")
    with pytest.raises(InputError, match=r"codes\.parquet: column 'code' has type int64; MEDS wants string"):
        prepare_meds(good, tmp_path / "c")
    (good / "metadata" / "codes.parquet").unlink()  # codes.parquet is optional: labels are then the test ids
    with pytest.raises(InputError, match=r"no event matches \[prepare.meds\] lab_code \('\^LABS//"):
        prepare_meds(good, tmp_path / "c", lab_code="^LABS//(?P<test>.*)")
    assert not (tmp_path / "c").exists()


def test_meds_keys_are_validated():
    with pytest.raises(ConfigError, match=r"prepare\.meds\.lab_code: .*needs the named group\(s\) \(\?P<test>"):
        load_config(overrides={"prepare": {"meds": {"lab_code": "^LAB//(.*)"}}})
    with pytest.raises(ConfigError, match=r"prepare\.meds\.note_code: .*invalid regular expression"):
        load_config(overrides={"prepare": {"meds": {"note_code": "^NOTE//("}}})
    with pytest.raises(ConfigError, match=r"prepare\.source"):
        load_config(overrides={"prepare": {"source": "omop"}})


def test_cli_synth_and_prepare_meds(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "meds"), "--format", "meds", "-n", "80", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "meds" / "metadata" / "codes.parquet").is_file()
    result = runner.invoke(app, ["prepare", str(tmp_path / "meds"), "--source", "meds", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["source"] == "meds" and manifest["split_source"] == "metadata/subject_splits.parquet"
    assert manifest["tables"]["admissions"]["used"] == 80 and manifest["notes_status"] == "present"
    result = runner.invoke(app, ["prepare", str(tmp_path / "c"), "--source", "meds", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not a MEDS dataset" in result.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    result = runner.invoke(app, ["synth", str(tmp_path / "other"), "--format", "meds", "-n", "20"])
    assert result.exit_code == 2 and "not a MEDS folder" in result.output
    assert (tmp_path / "other" / "keep.txt").exists()
