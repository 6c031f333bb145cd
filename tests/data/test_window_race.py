"""The prediction window (``prepare.window_hours``) and the race / ethnicity column, on the real demos."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import math
import re
import shutil
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from medfuse.config import load_config
from medfuse.data import Cohort
from medfuse.data.prepare import prepare_cohort

CENSORED = re.compile(r"^\s*[<>]=?\s*(-?[0-9]*\.?[0-9]+)\s*$")


def read_raw(path) -> list[dict]:
    with gzip.open(path, "rt", newline="") as fh:
        return [{k.lower(): v for k, v in row.items()} for row in csv.DictReader(fh)]


def number(row: dict) -> float | None:
    """The lab value as prepare reads it: VALUENUM, else VALUE, else a censored bound such as ``>100``."""
    for text in (row["valuenum"], row["value"].strip()):
        try:
            return float(text)
        except ValueError:
            pass
    if "<" in row["value"] or ">" in row["value"]:
        m = CENSORED.match(row["value"])
        return float(m.group(1)) if m else None
    return None


def after_window_rows(raw, hours_before: float, window: float) -> tuple[int, set[int]]:
    """Lab rows charted after ADMITTIME + ``window`` h but within the admission window, counted from the raw
    files without medfuse: the admission is the row's HADM_ID or, without one, the patient's latest-admitted
    admission whose ``[ADMITTIME - hours_before, DISCHTIME]`` contains the row."""
    coded = {r["hadm_id"] for r in read_raw(raw / "DIAGNOSES_ICD.csv.gz") if r["icd9_code"].strip()}
    adm = {int(r["hadm_id"]): (int(r["subject_id"]), dt.datetime.fromisoformat(r["admittime"]),
                               dt.datetime.fromisoformat(r["dischtime"]))
           for r in read_raw(raw / "ADMISSIONS.csv.gz") if r["hadm_id"] in coded}
    by_subject = defaultdict(list)
    for hadm, (subject, admit, disch) in adm.items():
        by_subject[subject].append((admit, hadm, disch))
    items = {r["itemid"] for r in read_raw(raw / "D_LABITEMS.csv.gz")}
    before, n = dt.timedelta(hours=hours_before), 0
    for row in read_raw(raw / "LABEVENTS.csv.gz"):
        v = number(row)
        if v is None or not math.isfinite(v) or row["itemid"] not in items or not row["charttime"]:
            continue
        t = dt.datetime.fromisoformat(row["charttime"])
        if row["hadm_id"]:
            hadm = int(row["hadm_id"])
        else:
            covering = [(admit, h) for admit, h, disch in by_subject[int(row["subject_id"])]
                        if admit - before <= t <= disch]
            hadm = max(covering)[1] if covering else None
        if hadm not in adm:
            continue
        _, admit, disch = adm[hadm]
        if admit - before <= t <= disch and t > admit + dt.timedelta(hours=window):
            n += 1
    return n, set(adm)


@pytest.fixture(scope="module")
def mimic3_window24(mimic3_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("window") / "w24"
    prepare_cohort(mimic3_demo, out, load_config(overrides={"prepare": {"source": "mimic3", "window_hours": 24}}).prepare)
    return out


def test_prediction_window_drops_exactly_the_later_lab_rows(mimic3_demo, mimic3_window24, mimic3_cohort):
    manifest = json.loads((mimic3_window24 / "manifest.json").read_text())
    labs = manifest["tables"]["labevents"]
    expected, cohort_ids = after_window_rows(mimic3_demo, 24, 24)
    assert set(Cohort(mimic3_window24).hadm_ids.tolist()) == cohort_ids
    assert labs["dropped"]["after_prediction_window"] == expected > 10_000
    assert labs["read"] == labs["used"] + sum(labs["dropped"].values())
    whole = json.loads((mimic3_cohort / "manifest.json").read_text())["tables"]["labevents"]
    assert "after_prediction_window" not in whole["dropped"]
    for reason in ("outside_admission_window", "outside_any_admission", "non_numeric_value"):
        assert labs["dropped"][reason] == whole["dropped"][reason]  # the attachment is unchanged
    assert manifest["prediction_window"]["hours"] == 24
    assert manifest["config"]["window_hours"] == 24


def test_prediction_window_lab_values(mimic3_demo, mimic3_window24):
    # Creatinine (50912) of admission 142345, recomputed from the raw rows of its first 24 hours
    admit = dt.datetime(2164, 10, 23, 21, 9)
    rows = {
        (r["charttime"], float(r["valuenum"]))
        for r in read_raw(mimic3_demo / "LABEVENTS.csv.gz")
        if r["itemid"] == "50912" and r["subject_id"] == "10006" and r["valuenum"]
        and admit - dt.timedelta(hours=24) <= dt.datetime.fromisoformat(r["charttime"]) <= admit + dt.timedelta(hours=24)
        and r["hadm_id"] in ("142345", "")
    }
    values = [v for _, v in sorted(rows)]
    row = next(r for r in pq.read_table(mimic3_window24 / "labs.parquet").to_pylist() if r["hadm_id"] == 142345)
    assert row["lab_50912__count"] == len(values) >= 2
    assert row["lab_50912__last"] == pytest.approx(values[-1])
    assert row["lab_50912__mean"] == pytest.approx(sum(values) / len(values))


@pytest.mark.parametrize("which, expected", [
    ("mimic3", {"WHITE": 86, "HISPANIC/LATINO": 17, "UNKNOWN": 12, "BLACK": 7, "OTHER": 5, "ASIAN": 2}),
    ("mimic4", {"WHITE": 182, "BLACK": 51, "UNKNOWN": 23, "HISPANIC/LATINO": 15, "OTHER": 4}),
])
def test_race_groups_on_the_demos(which, expected, mimic3_demo, mimic4_demo, mimic3_cohort, mimic4_cohort):
    cohort = Cohort(mimic3_cohort if which == "mimic3" else mimic4_cohort)
    adm = cohort.table("admissions").to_pydict()
    assert Counter(adm["race"]) == expected
    raw = (read_raw(mimic3_demo / "ADMISSIONS.csv.gz") if which == "mimic3"
           else read_raw(mimic4_demo / "hosp" / "admissions.csv.gz"))
    raw_of = {int(r["hadm_id"]): r["ethnicity" if which == "mimic3" else "race"] for r in raw}
    assert adm["race_raw"] == [raw_of[h] for h in adm["hadm_id"]]


def test_race_is_null_without_the_column(mimic3_demo, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem in ("PATIENTS", "DIAGNOSES_ICD", "LABEVENTS", "D_LABITEMS"):
        shutil.copy(mimic3_demo / f"{stem}.csv.gz", raw / f"{stem}.csv.gz")
    with gzip.open(mimic3_demo / "ADMISSIONS.csv.gz", "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    drop = rows[0].index("ETHNICITY")
    with open(raw / "ADMISSIONS.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([r[:drop] + r[drop + 1:] for r in rows])
    prepare_cohort(raw, tmp_path / "cohort", load_config().prepare)
    adm = pq.read_table(tmp_path / "cohort" / "admissions.parquet").to_pydict()
    assert len(adm["race"]) == 129 and set(adm["race"]) == {None} and set(adm["race_raw"]) == {None}
