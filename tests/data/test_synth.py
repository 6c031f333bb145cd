"""The synthetic EHR generator writes the real MIMIC-III / MIMIC-IV layouts with the designed signal."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import duckdb
import pytest

from medfuse.data.diseases import load_diseases
from medfuse.data.synth import DISEASES, generate

SHARED = Path(
    os.environ.get("MEDFUSE_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
)
MIMIC3_FILES = ["PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES", "D_LABITEMS", "LABEVENTS"]
MIMIC4_FILES = ["patients", "admissions", "diagnoses_icd", "d_icd_diagnoses", "d_labitems", "labevents"]
SECTIONS = [
    "Chief Complaint",
    "History of Present Illness",
    "Past Medical History",
    "Medications on Admission",
    "Brief Hospital Course",
    "Discharge Diagnosis",
    "Discharge Medications",
    "Allergies",
    "Social History",
    "Physical Exam",
]
TARGETS = {
    "hypertension": 0.45,
    "coronary_artery_disease": 0.30,
    "atrial_fibrillation": 0.25,
    "heart_failure": 0.25,
    "diabetes": 0.25,
    "hyperlipidemia": 0.25,
    "chronic_kidney_disease": 0.12,
    "acute_kidney_injury": 0.18,
    "copd": 0.10,
    "anemia": 0.25,
}


@pytest.fixture(scope="module")
def mimic3(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mimic3")
    return out, generate(out, "mimic3", 600, seed=0)


@pytest.fixture(scope="module")
def mimic4(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mimic4")
    return out, generate(out, "mimic4", 300, seed=0)


def first_line(path: Path) -> str:
    with gzip.open(path, "rt") as f:
        return f.readline().rstrip("\n")


def sql(query: str) -> list[tuple]:
    return duckdb.connect().sql(query).fetchall()


def test_shared_demo_data_is_present():
    assert (SHARED / "mimic-iii-demo" / "LABEVENTS.csv.gz").exists(), (
        f"MIMIC demo files not found under {SHARED}"
    )


@pytest.mark.parametrize("name", MIMIC3_FILES)
def test_mimic3_headers_equal_the_real_files(mimic3, name):
    out, _ = mimic3
    assert first_line(out / f"{name}.csv.gz") == first_line(SHARED / "mimic-iii-demo" / f"{name}.csv.gz")


def test_mimic3_noteevents_header_is_the_full_database_header(mimic3):
    # The demo's NOTEEVENTS header is malformed (lower case, broken quotes); the full database's is not.
    demo = first_line(SHARED / "mimic-iii-demo" / "NOTEEVENTS.csv.gz")
    columns = [c.strip(' "').upper() for c in demo.split(",")]
    assert first_line(mimic3[0] / "NOTEEVENTS.csv.gz") == ",".join(f'"{c}"' for c in columns)


@pytest.mark.parametrize("name", MIMIC4_FILES)
def test_mimic4_headers_equal_the_real_files(mimic4, name):
    out, _ = mimic4
    assert first_line(out / "hosp" / f"{name}.csv.gz") == first_line(
        SHARED / "mimic-iv-demo" / "hosp" / f"{name}.csv.gz"
    )


def test_mimic4_discharge_header_is_the_mimic_iv_note_header(mimic4):
    header = "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text"
    assert first_line(mimic4[0] / "note" / "discharge.csv.gz") == header


def test_d_labitems_is_the_real_item_list(mimic3, mimic4):
    pairs = [
        (mimic3[0] / "D_LABITEMS.csv.gz", SHARED / "mimic-iii-demo" / "D_LABITEMS.csv.gz"),
        (mimic4[0] / "hosp" / "d_labitems.csv.gz", SHARED / "mimic-iv-demo" / "hosp" / "d_labitems.csv.gz"),
    ]
    for ours, real in pairs:
        assert gzip.decompress(ours.read_bytes()) == gzip.decompress(real.read_bytes())


@pytest.mark.parametrize("fmt", ["mimic3", "mimic4"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, fmt):
    runs = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(runs[name], fmt, 80, seed=seed)
    files = sorted(p.relative_to(runs["a"]) for p in runs["a"].rglob("*.csv.gz"))
    assert len(files) == 7
    for rel in files:
        assert (runs["a"] / rel).read_bytes() == (runs["b"] / rel).read_bytes(), rel
    labs = next(rel for rel in files if rel.name.lower() == "labevents.csv.gz")
    assert (runs["a"] / labs).read_bytes() != (runs["c"] / labs).read_bytes()


def test_duckdb_reads_every_mimic3_file_with_the_expected_rows(mimic3):
    out, summary = mimic3
    expected = {
        "PATIENTS": summary["patients"],
        "ADMISSIONS": 600,
        "DIAGNOSES_ICD": summary["diagnoses"],
        "LABEVENTS": summary["lab_rows"],
        "NOTEEVENTS": summary["notes"],
        "D_LABITEMS": 753,
    }
    for name, rows in expected.items():
        assert sql(f"select count(*) from read_csv('{out / name}.csv.gz')") == [(rows,)], name
    assert sql(f"select count(*) > 0 from read_csv('{out}/D_ICD_DIAGNOSES.csv.gz')") == [(True,)]
    assert summary["lab_rows"] / 600 > 300  # MIMIC-III density: about 465 lab rows per admission


def test_duckdb_reads_every_mimic4_file_with_the_expected_rows(mimic4):
    out, summary = mimic4
    expected = {
        "hosp/patients": summary["patients"],
        "hosp/admissions": 300,
        "hosp/diagnoses_icd": summary["diagnoses"],
        "hosp/labevents": summary["lab_rows"],
        "note/discharge": summary["notes"],
        "hosp/d_labitems": 1622,
    }
    for name, rows in expected.items():
        assert sql(f"select count(*) from read_csv('{out / name}.csv.gz')") == [(rows,)], name


def coded_labels(out: Path, fmt: str) -> dict[int, set[str]]:
    """Admission -> diseases, matched from the written diagnosis codes with the shipped diseases.toml."""
    if fmt == "mimic3":
        rows = sql(
            f"select HADM_ID, ICD9_CODE, 9 from read_csv('{out}/DIAGNOSES_ICD.csv.gz', types={{'ICD9_CODE': 'VARCHAR'}})"
        )
        admissions = sql(f"select HADM_ID from read_csv('{out}/ADMISSIONS.csv.gz')")
    else:
        rows = sql(
            f"select hadm_id, icd_code, icd_version from read_csv('{out}/hosp/diagnoses_icd.csv.gz', types={{'icd_code': 'VARCHAR'}})"
        )
        admissions = sql(f"select hadm_id from read_csv('{out}/hosp/admissions.csv.gz')")
    labels: dict[int, set[str]] = {h: set() for (h,) in admissions}
    diseases = load_diseases()
    for hadm, code, version in rows:
        for d in diseases:
            if code.startswith(d.icd9 if version == 9 else d.icd10):
                labels[hadm].add(d.name)
    return labels


@pytest.mark.parametrize("fixture", ["mimic3", "mimic4"])
def test_prevalence_is_near_the_targets(fixture, request):
    out, summary = request.getfixturevalue(fixture)
    labels = coded_labels(out, fixture)
    for name in DISEASES:
        prevalence = sum(name in s for s in labels.values()) / len(labels)
        assert prevalence == pytest.approx(summary["prevalence"][name], abs=1e-3)
        # chronic diseases cluster by patient: allow four standard errors of a per-patient proportion
        target = TARGETS[name]
        assert abs(prevalence - target) < 4 * (target * (1 - target) / summary["patients"]) ** 0.5, (
            name,
            prevalence,
        )


def test_diagnoses_have_titles_and_seq_order(mimic3, mimic4):
    out3, out4 = mimic3[0], mimic4[0] / "hosp"
    assert (
        sql(f"""select count(*) from read_csv('{out3}/DIAGNOSES_ICD.csv.gz', types={{'ICD9_CODE': 'VARCHAR'}}) d
        anti join read_csv('{out3}/D_ICD_DIAGNOSES.csv.gz', types={{'ICD9_CODE': 'VARCHAR'}}) t using (ICD9_CODE)""")
        == [(0,)]
    )
    assert (
        sql(f"""select count(*) from read_csv('{out4}/diagnoses_icd.csv.gz', types={{'icd_code': 'VARCHAR'}}) d
        anti join read_csv('{out4}/d_icd_diagnoses.csv.gz', types={{'icd_code': 'VARCHAR'}}) t using (icd_code, icd_version)""")
        == [(0,)]
    )
    # SEQ_NUM runs 1..n within each admission, several codes per admission
    assert sql(f"""select bool_and(mx = n and mn = 1), avg(n) > 6 from (select HADM_ID, max(SEQ_NUM) mx, min(SEQ_NUM) mn,
        count(*) n from read_csv('{out3}/DIAGNOSES_ICD.csv.gz') group by 1)""") == [(True, True)]
    # MIMIC-IV mixes ICD-9 (older stays) and ICD-10, one version per admission
    assert sql(f"""select count(distinct icd_version), max(v) from (select hadm_id, any_value(icd_version) icd_version,
        count(distinct icd_version) v from read_csv('{out4}/diagnoses_icd.csv.gz') group by 1)""") == [(2, 1)]


def test_unrelated_codes_encode_no_disease():
    from medfuse.data.synth.diagnoses import OTHER_CODES

    for icd9, icd10, _ in OTHER_CODES:
        for d in load_diseases():
            assert not icd9.startswith(d.icd9) and not icd10.startswith(d.icd10), (icd9, icd10, d.name)


def test_disease_lab_effects(mimic3):
    out = mimic3[0]
    labels = coded_labels(out, "mimic3")
    stats = sql(f"""select HADM_ID, ITEMID, avg(VALUENUM), max(VALUENUM) / min(VALUENUM)
        from read_csv('{out}/LABEVENTS.csv.gz') where ITEMID in (50912, 51222, 50931, 50963)
        and HADM_ID is not null and VALUENUM is not null group by all""")

    def mean_by(itemid: int, disease: str, column: int = 2) -> tuple[float, float]:
        """Mean over admissions of a per-stay lab statistic, with and without the disease."""
        pos = [r[column] for r in stats if r[1] == itemid and disease in labels[r[0]]]
        neg = [r[column] for r in stats if r[1] == itemid and disease not in labels[r[0]]]
        return sum(pos) / len(pos), sum(neg) / len(neg)

    ckd, other = mean_by(50912, "chronic_kidney_disease")  # creatinine
    assert ckd > 1.3 * other
    anemic, other = mean_by(51222, "anemia")  # hemoglobin
    assert anemic < other - 0.8
    diabetic, other = mean_by(50931, "diabetes")  # glucose
    assert diabetic > 1.15 * other
    rise, other = mean_by(50912, "acute_kidney_injury", column=3)  # creatinine rises within the stay
    assert rise > other + 0.2
    failing, other = mean_by(50963, "heart_failure")  # NT-proBNP
    assert failing > 1.5 * other


def test_lab_quirks(mimic3, mimic4):
    labs3 = f"read_csv('{mimic3[0]}/LABEVENTS.csv.gz')"
    ((censored, errors, no_hadm, rows, distinct, flagged),) = sql(f"""select
        count(*) filter (where (VALUE like '<%' or VALUE like '>%') and VALUENUM is null),
        count(*) filter (where VALUE in ('ERROR', 'HEMOLYZED', 'UNABLE TO REPORT')),
        count(*) filter (where HADM_ID is null), count(*), (select count(*) from (select distinct * from {labs3})),
        count(*) filter (where FLAG = 'abnormal') from {labs3}""")
    assert censored > 0 and errors > 0 and rows > distinct
    assert 0.05 < no_hadm / rows < 0.4 and 0.1 < flagged / rows < 0.6
    labs4 = f"read_csv('{mimic4[0]}/hosp/labevents.csv.gz')"
    ((masked, ranged, wrong_flag),) = sql(f"""select
        count(*) filter (where value = '___' and valuenum is not null and comments is not null),
        count(*) filter (where ref_range_lower is not null and ref_range_upper is not null),
        count(*) filter (where valuenum is not null and value <> '___'
            and ((valuenum < ref_range_lower or valuenum > ref_range_upper) <> (flag is not distinct from 'abnormal')))
        from {labs4}""")
    assert masked > 0 and ranged > 0 and wrong_flag == 0


def test_patients_quirks(mimic3, mimic4):
    # MIMIC-III hides ages over 89 by moving the date of birth about 300 years back
    assert (
        sql(f"""select count(*) from read_csv('{mimic3[0]}/PATIENTS.csv.gz') p join
        (select SUBJECT_ID, min(ADMITTIME) t from read_csv('{mimic3[0]}/ADMISSIONS.csv.gz') group by 1) a using (SUBJECT_ID)
        where datediff('year', DOB, t) between 299 and 301""")[0][0]
        > 0
    )
    ((groups, capped),) = sql(f"""select count(distinct anchor_year_group), max(anchor_age)
        from read_csv('{mimic4[0]}/hosp/patients.csv.gz')""")
    assert groups >= 3 and capped == 91
    # about 1.4 admissions per patient
    assert 1.2 < 600 / mimic3[1]["patients"] < 1.6


def test_notes(mimic3, mimic4):
    notes3 = sql(
        f"select HADM_ID, CATEGORY, DESCRIPTION, ISERROR, TEXT from read_csv('{mimic3[0]}/NOTEEVENTS.csv.gz')"
    )
    summaries = [n for n in notes3 if n[1] == "Discharge summary"]
    assert {n[1] for n in notes3} == {"Discharge summary", "Nursing/other", "Radiology"}
    assert {n[2] for n in summaries} == {"Report"}
    assert {n[3] for n in notes3} == {None, 1}  # ISERROR: empty, or 1 on a few rows
    valid = {n[0] for n in summaries if n[3] is None}
    assert 0.85 * 600 < len(valid) < 600  # note_fraction 0.95: some admissions have no usable summary
    texts = [n[4] for n in summaries] + [
        n[0] for n in sql(f"select text from read_csv('{mimic4[0]}/note/discharge.csv.gz')")
    ]
    for text in texts:
        for section in SECTIONS:
            assert f"\n{section}:" in text, section
    joined = "\n".join(texts)
    assert "no history of" in joined.lower()
    for phrase in ("HTN", "CAD", "afib", "CHF", "DM2", "CKD", "COPD", "HLD", "denies"):
        assert phrase in joined, phrase
    assert (
        sql(f"""select count(*) filter (where note_type = 'DS' and note_id = subject_id || '-DS-' || note_seq),
        count(*) from read_csv('{mimic4[0]}/note/discharge.csv.gz')""")[0]
        == (mimic4[1]["notes"],) * 2
    )


def test_progress_reports_every_stage(tmp_path):
    calls: list[tuple[str, float]] = []
    generate(tmp_path, "mimic3", 30, progress=lambda stage, fraction: calls.append((stage, fraction)))
    assert [s for s, _ in calls if _ == 1.0] == ["cohort", "labevents", "notes"]
    assert all(0.0 <= f <= 1.0 for _, f in calls)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path, "mimic5", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        generate(tmp_path, "mimic3", 0)
