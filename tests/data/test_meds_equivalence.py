"""The real MIMIC-IV MEDS ETL's output (tests/data/mimic4_demo_meds) gives the CSV path's cohort, up to rules.

Both cohorts of the real MIMIC-IV demo, with the stratified split and every lab test as a column, have the
same 275 admissions, splits and label matrix. Their lab aggregates differ only where one of the ETL's
documented rules changes them: ``benchmarks/meds/equivalence.py`` applies the rules to the CSVs one by one,
and with all of them the CSVs give the MEDS cohort itself. The figures are those of docs/meds.md and
``benchmarks/results/meds_equivalence.json``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "mimic4_demo_meds"
RESULT = ROOT / "benchmarks" / "results" / "meds_equivalence.json"


@pytest.fixture(scope="module")
def eq():
    sys.path.insert(0, str(ROOT / "benchmarks" / "meds"))
    try:
        yield importlib.import_module("equivalence")
    finally:
        sys.path.remove(str(ROOT / "benchmarks" / "meds"))


@pytest.fixture(scope="module")
def figures(eq, mimic4_demo, tmp_path_factory):
    return eq.measure(mimic4_demo, FIXTURE, tmp_path_factory.mktemp("meds_equivalence"))


def test_same_admissions_splits_and_labels(figures):
    assert figures["admissions"] == {"csv": 275, "meds": 275, "identical": True, "splits_identical": True}
    assert figures["labels"] == {"admissions": 275, "diseases": 10, "cells_compared": 2750, "identical": True,
                                 "positives": 939}


def test_every_lab_difference_is_explained_by_a_rule(figures):
    labs = figures["lab_aggregates"]
    assert (labs["pairs_compared"], labs["tests_compared"], labs["pairs_differing"]) == (13767, 264, 227)
    assert labs["tests_only_in_csv"] == labs["tests_only_in_meds"] == []
    by_rule = {name: {k: v for k, v in entry.items() if k not in ("tests", "largest_difference")}
               for name, entry in labs["differing_by_rule"].items()}
    none = {"pairs": 0, "values_differ": 0, "count_differs": 0, "measured_in_csv_only": 0, "measured_in_meds_only": 0}
    assert by_rule == {
        "null_storetime_dropped": none,
        # a result stored after discharge leaves the window; another one becomes the last
        "timed_at_storetime": {**none, "pairs": 91, "values_differ": 9, "count_differs": 66, "measured_in_csv_only": 16},
        "duplicates_merged": none,  # prepare counts an exact duplicate once anyway
        "float32_values": none,  # the reader's shortest decimal gives back every value
        "no_flags_or_reference_ranges": none,  # no aggregate depends on them
        "no_lab_labels": {**none, "pairs": 136, "count_differs": 2, "measured_in_csv_only": 134},
        "unexplained": none,
    }
    assert labs["differing_by_rule"]["no_lab_labels"]["tests"] == [51249]  # MCHC only
    # with every rule applied, the CSVs give the MEDS cohort: means summed in another order aside, identical
    assert labs["all_rules_applied_vs_meds"]["pairs_differing"] == 0
    assert labs["all_rules_applied_vs_meds"]["largest_difference"] < 1e-12
    largest = labs["largest_absolute_difference"]
    assert (largest["hadm_id"], largest["itemid"], largest["aggregate"], largest["csv"], largest["meds"],
            largest["rule"]) == (26924951, 50954, "last", 454.0, 390.0, "timed_at_storetime")


def test_row_accounting_changes_by_rule(figures):
    changed = figures["labevents_rows_changed_by_each_rule"]
    assert changed["null_storetime_dropped"] == {"read": -992, "dropped.non_numeric_value": -983,
                                                 "dropped.outside_any_admission": -9}
    assert changed["timed_at_storetime"]["dropped.outside_admission_window"] == 33
    assert changed["duplicates_merged"]["read"] == -18
    assert changed["float32_values"] == changed["no_flags_or_reference_ranges"] == {}
    # MCHC in % converts to g/dL only for a test labelled MCHC; without labels its 1,058 rows are not convertible
    assert changed["no_lab_labels"] == {"used": -1058, "dropped.unit_not_convertible": 1058,
                                        "repaired.hadm_id_from_time_window": -80, "repaired.unit_converted": -1058}
    csv, meds = figures["labevents_accounting"]["csv"], figures["labevents_accounting"]["meds"]
    assert (csv["read"], meds["read"]) == (107727, 106717)
    assert (csv["repaired"]["censored_value"], meds["repaired"]["censored_value"]) == (4, 4)  # >50 from text_value
    float32 = figures["float32"]
    assert float32["not_exact_in_float32"] == 41819 and float32["not_recovered_by_the_shortest_decimal"] == 0
    assert 5e-8 < float32["largest_relative_error_as_float32"] < 6e-8


def test_abnormal_lab_text_needs_flags_or_reference_ranges(figures):
    text = figures["lab_text_admissions"]
    assert text["csv"] == text["float32_values"] == 270
    assert text["no_flags_or_reference_ranges"] == text["meds"] == 0


def test_the_committed_figures_are_these(figures):
    """benchmarks/results/meds_equivalence.json is what the script measures now."""
    committed, measured = json.loads(RESULT.read_text()), json.loads(json.dumps(figures))
    for key in ("command", "machine", "date", "seconds"):
        committed.pop(key)
    for d in (committed, measured):  # a local path, and a float sum whose order DuckDB's threads choose
        d["inputs"].pop("csv")
        d["lab_aggregates"]["all_rules_applied_vs_meds"].pop("largest_difference")
    assert committed == measured
