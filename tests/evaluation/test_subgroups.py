"""Subgroup masks of a real demo cohort: sex, age band, race when the source has it, missing modalities."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from medfuse.data.cohort import Cohort
from medfuse.evaluation.subgroups import age_bands, cohort_subgroups


def test_age_band_edges():
    ages = [0, 17.9, 18, 44.99, 45, 64.9, 65, 79.9, 80, 90]
    assert age_bands(ages).tolist() == ["<18", "<18", "18-44", "18-44", "45-64", "45-64", "65-79", "65-79", "80+",
                                        "80+"]
    with pytest.raises(ValueError, match="missing"):
        age_bands([50, float("nan")])


def test_cohort_subgroups_partition_the_rows(mimic3_cohort):
    cohort = Cohort(mimic3_cohort)
    adm = cohort.table("admissions")
    adm = adm.drop([c for c in adm.column_names if c == "race"])  # the source without race
    rows = np.flatnonzero(cohort.split == "test")
    note_missing, lab_missing = np.zeros(len(rows), bool), np.arange(len(rows)) < 2
    families, missing = cohort_subgroups(adm, rows, note_missing, lab_missing)
    assert list(families) == ["modality", "sex", "age_band"] and missing == {"race": "not in source"}
    sex = np.asarray(adm.column("sex").to_pylist())[rows]
    assert {k: int(v.sum()) for k, v in families["sex"].items()} == {s: int((sex == s).sum()) for s in sorted(set(sex))}
    for family in ("sex", "age_band"):
        stacked = np.stack(list(families[family].values()))
        assert (stacked.sum(axis=0) == 1).all(), family  # every row in exactly one subgroup
    ages = adm.column("age").to_numpy()[rows]
    assert int(families["age_band"]["80+"].sum()) == int((ages >= 80).sum())
    assert list(families["age_band"]) == [b for b in ("<18", "18-44", "45-64", "65-79", "80+")
                                          if b in set(age_bands(ages))]
    has_note = np.asarray(adm.column("has_notes").to_pylist())[rows]
    modality = families["modality"]
    assert (modality["without_note"] == ~has_note).all() and modality["without_labs"].sum() == 2
    assert (modality["note_and_labs"] == has_note & ~lab_missing).all()

    no_race = adm.append_column("race", pa.nulls(adm.num_rows, pa.string()))  # what prepare writes without one
    assert cohort_subgroups(no_race, rows, note_missing, lab_missing)[1] == {"race": "not in source"}

    race = ["WHITE", None, "BLACK", "WHITE", ""] * (adm.num_rows // 5) + ["WHITE"] * (adm.num_rows % 5)
    adm = adm.drop([c for c in adm.column_names if c.startswith("race")])
    families, missing = cohort_subgroups(adm.append_column("race", pa.array(race)), rows, note_missing, lab_missing)
    assert missing == {}
    expected = np.array(["unknown" if r in (None, "") else r for r in race])[rows]
    assert list(families["race"]) == sorted(set(expected) - {"unknown"}) + ["unknown"] * ("unknown" in expected)
    assert {k: int(v.sum()) for k, v in families["race"].items()} == {
        r: int((expected == r).sum()) for r in set(expected)}
