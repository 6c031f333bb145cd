"""``prepare`` on the real MIMIC-III and MIMIC-IV demo extracts, checked against the raw files."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import tomllib
from collections import defaultdict
from importlib import resources

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfuse.data import Cohort


def read_raw(path) -> list[dict]:
    with gzip.open(path, "rt", newline="") as fh:
        return [{k.lower(): v for k, v in row.items()} for row in csv.DictReader(fh)]


def expected_labels(diagnoses: list[dict], version_col: str | None) -> dict[int, dict[str, int]]:
    """Per admission, 1 for each disease with a matching code prefix: computed without medfuse."""
    spec = tomllib.loads(resources.files("medfuse.resources").joinpath("diseases.toml").read_text())["disease"]
    out: dict[int, dict[str, int]] = defaultdict(lambda: {d["name"]: 0 for d in spec})
    for row in diagnoses:
        code = (row.get("icd9_code") or row.get("icd_code") or "").strip()
        version = int(row[version_col]) if version_col else 9
        labels = out[int(row["hadm_id"])]
        for d in spec:
            prefixes = d["icd9"] if version == 9 else d["icd10"]
            if code and any(code.startswith(p) for p in prefixes):
                labels[d["name"]] = 1
    return out


@pytest.mark.parametrize("which", ["mimic3", "mimic4"])
def test_demo_admissions_and_labels(which, mimic3_demo, mimic4_demo, mimic3_cohort, mimic4_cohort):
    raw, cohort_dir = (mimic3_demo, mimic3_cohort) if which == "mimic3" else (mimic4_demo / "hosp", mimic4_cohort)
    stem = "DIAGNOSES_ICD" if which == "mimic3" else "diagnoses_icd"
    diagnoses = read_raw(raw / f"{stem}.csv.gz")
    expected = expected_labels(diagnoses, None if which == "mimic3" else "icd_version")
    cohort = Cohort(cohort_dir)

    n_expected = 129 if which == "mimic3" else 275
    assert len(cohort.hadm_ids) == n_expected
    assert cohort.manifest["tables"]["admissions"]["used"] == n_expected
    y = cohort.labels()
    truth = np.array([[expected[h][n] for n in cohort.label_names] for h in cohort.hadm_ids], dtype=np.float32)
    np.testing.assert_array_equal(y, truth)
    prevalence = cohort.manifest["prevalence"]["all"]
    for j, name in enumerate(cohort.label_names):
        assert prevalence[name] == pytest.approx(truth[:, j].mean(), abs=1e-4)
    # hypertension is the most common of the ten in both demos
    assert max(prevalence, key=prevalence.get) == "hypertension"


def test_mimic3_known_admission_and_lab_values(mimic3_demo, mimic3_cohort):
    cohort = Cohort(mimic3_cohort)
    adm = cohort.table("admissions").to_pylist()
    first = next(a for a in adm if a["hadm_id"] == 142345)  # subject 10006 in the demo's first row
    assert first["subject_id"] == 10006 and first["sex"] == "F"
    assert first["age"] == pytest.approx(70.6, abs=0.1)  # DOB 2094-03-05, admitted 2164-10-23

    # Creatinine (50912) of that admission, recomputed from the raw rows: window, dedup, last by time.
    admit, disch = dt.datetime(2164, 10, 23, 21, 9), dt.datetime(2164, 11, 1, 17, 15)
    rows = {
        (r["charttime"], float(r["valuenum"]))
        for r in read_raw(mimic3_demo / "LABEVENTS.csv.gz")
        if r["itemid"] == "50912" and r["subject_id"] == "10006" and r["valuenum"]
        and admit - dt.timedelta(hours=24) <= dt.datetime.fromisoformat(r["charttime"]) <= disch
        and r["hadm_id"] in ("142345", "")
    }
    values = [v for _, v in sorted(rows)]
    labs = pq.read_table(mimic3_cohort / "labs.parquet").to_pylist()
    row = next(r for r in labs if r["hadm_id"] == 142345)
    assert row["lab_50912__count"] == len(values) > 3
    assert row["lab_50912__last"] == pytest.approx(values[-1])
    assert row["lab_50912__mean"] == pytest.approx(np.mean(values))
    assert row["lab_50912__max"] == pytest.approx(max(values))
    assert row["lab_50912__observed"] is True


def test_demo_notes_missing_path(mimic3_cohort, mimic4_cohort):
    m3, m4 = Cohort(mimic3_cohort), Cohort(mimic4_cohort)
    # MIMIC-III demo: header-only, malformed NOTEEVENTS; MIMIC-IV demo: no note module at all
    assert m3.manifest["notes_status"] == "empty" and m4.manifest["notes_status"] == "missing"
    for c in (m3, m4):
        assert c.table("notes").num_rows == 0
        assert not any(c.table("admissions").column("has_notes").to_pylist())


@pytest.mark.parametrize("which", ["mimic3", "mimic4"])
def test_row_accounting_matches_raw_files(which, mimic3_demo, mimic4_demo, mimic3_cohort, mimic4_cohort):
    raw, cohort_dir = (mimic3_demo, mimic3_cohort) if which == "mimic3" else (mimic4_demo / "hosp", mimic4_cohort)
    manifest = json.loads((cohort_dir / "manifest.json").read_text())
    stems = {"admissions": "ADMISSIONS", "diagnoses": "DIAGNOSES_ICD", "labevents": "LABEVENTS", "patients": "PATIENTS"}
    for table, stem in stems.items():
        acc = manifest["tables"][table]
        name = stem if which == "mimic3" else stem.lower()
        assert acc["read"] == len(read_raw(raw / f"{name}.csv.gz")), table
        assert acc["read"] == acc["used"] + sum(acc["dropped"].values()), table
    labs = manifest["tables"]["labevents"]
    # the demo documents 14,262 MIMIC-III / many MIMIC-IV lab rows without HADM_ID; some are attached by time
    assert labs["dropped"]["outside_any_admission"] > 0 and labs["repaired"]["hadm_id_from_time_window"] > 0
    assert labs["dropped"]["non_numeric_value"] > 0  # VALUE strings such as "NEG" or "ERROR"
    used_obs = sum(pq.read_table(cohort_dir / "labs.parquet").column(f"{k}__count").to_numpy().sum()
                   for k in Cohort(cohort_dir).lab_keys)
    assert used_obs == labs["used"]


@pytest.mark.parametrize("which", ["mimic3", "mimic4"])
def test_splits_are_patient_level_and_train_only_statistics(which, mimic3_cohort, mimic4_cohort):
    cohort = Cohort(mimic3_cohort if which == "mimic3" else mimic4_cohort)
    splits = cohort.table("splits").to_pylist()
    split_of = defaultdict(set)
    for r in splits:
        split_of[r["subject_id"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())  # no patient in two splits
    counts = {s: sum(1 for v in split_of.values() if s in v) for s in ("train", "val", "test")}
    assert counts["train"] == pytest.approx(70, abs=3) and counts["test"] == pytest.approx(20, abs=3)

    # Normalisation statistics come from training admissions only: recompute the median of one test.
    labs = pq.read_table(cohort.path / "labs.parquet")
    key = cohort.lab_keys[0]
    stats = cohort.lab_tests.to_pylist()[0]
    train = cohort.rows("train")
    frac = labs.column(f"{key}__observed").to_numpy(zero_copy_only=False)[train].mean()
    assert stats["train_fraction"] == pytest.approx(frac)
    x = cohort.lab_values("train", normalized=False)[:, 0]
    z = cohort.lab_values("train")[:, 0]
    ok = ~np.isnan(x)
    np.testing.assert_allclose(z[ok], np.clip((x[ok] - stats["median"]) / stats["scale"], -5, 5), rtol=1e-5)
    inside = ok & (np.abs(z) < 5)  # values beyond the clip come back at the clip bound
    assert inside.sum() > 0.9 * ok.sum()
    np.testing.assert_allclose(cohort.denormalize(cohort.normalize(x[inside, None]))[:, 0], x[inside], rtol=1e-5)


def test_duckdb_spills_into_temp_directory_and_cleans_up(mimic4_demo, mimic4_cohort, tmp_path):
    """``[prepare] temp_directory``: DuckDB spills into a run folder of its own there, removed at the end; a small
    ``memory_limit`` changes no table."""
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort

    spill = tmp_path / "spill"
    cfg = load_config(overrides={"prepare": {"source": "mimic4", "memory_limit": "256MB",
                                             "temp_directory": str(spill)}}).prepare
    manifest = prepare_cohort(mimic4_demo, tmp_path / "cohort", cfg)
    assert manifest["config"]["temp_directory"] == str(spill) and manifest["config"]["memory_limit"] == "256MB"
    assert spill.is_dir() and not list(spill.iterdir())
    for table in ("admissions", "labs", "labels", "splits"):
        spilled, plain = (pq.read_table(p / f"{table}.parquet") for p in (tmp_path / "cohort", mimic4_cohort))
        assert spilled.schema == plain.schema, table
        for name in plain.column_names:  # means are sums in DuckDB's thread order: equal up to rounding
            a, b = spilled.column(name).to_numpy(zero_copy_only=False), plain.column(name).to_numpy(zero_copy_only=False)
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=f"{table}.{name}")
            else:
                assert a.tolist() == b.tolist(), f"{table}.{name}"
