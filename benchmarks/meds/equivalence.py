"""The real MIMIC-IV MEDS ETL's output against the CSVs it was made from: every cohort difference, by rule.

    python benchmarks/meds/equivalence.py [--demo DIR] [--meds DIR] [--out JSON]

Prepares the MIMIC-IV demo from its CSVs (``--source mimic4``) and from ``tests/data/mimic4_demo_meds``
(``--source meds``, the default ``[prepare.meds]``), both with medfuse's stratified split (the CSVs have no
MEDS subject split) and every lab test measured in a training admission as a column (``lab_min_admission_fraction
= 0``, no ``lab_max_tests`` limit), so that every (admission, test) pair is compared. Then it prepares the
CSVs again with the ETL's documented rules (:data:`RULES`, PROVENANCE.md of the fixture) applied one after
another, and gives each differing pair to the first rule that changes it. All rules applied must give
the MEDS cohort itself (within the float tolerance of a mean summed in another order): then every
difference is explained. Writes ``benchmarks/results/meds_equivalence.json``; ``tests/data/
test_meds_equivalence.py`` asserts the same figures. docs/meds.md ("Equivalence on the real MIMIC-IV demo").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT.parent / "shared" / "data" / "mimic-iv-demo"
MEDS = ROOT / "tests" / "data" / "mimic4_demo_meds"
RESULT = ROOT / "benchmarks" / "results" / "meds_equivalence.json"
ALL_TESTS = {"lab_min_admission_fraction": 0.0, "lab_max_tests": 100_000}
AGGREGATES = ("last", "mean", "min", "max", "count")
TOLERANCE = 1e-9
"""Relative: two aggregates are equal when they differ by at most this times max(1, |value|). A mean over
the same values summed in another order differs by ~1e-14; a float32 value by up to 6e-8."""

# The ETL's text_value: MIMIC's value, null where it casts to the same float32 as valuenum
_TEXT = "CASE WHEN TRY_CAST(value AS FLOAT) = TRY_CAST(valuenum AS FLOAT) THEN NULL ELSE value END"
RULES: tuple[tuple[str, str, str | None], ...] = (
    ("null_storetime_dropped", "labevents rows with no storetime are not written (an event needs a time)",
     "SELECT * FROM lab WHERE storetime IS NOT NULL"),
    ("timed_at_storetime", "a lab result's time is storetime, not charttime",
     "SELECT * REPLACE (storetime AS charttime) FROM lab"),
    ("duplicates_merged", ("events equal in every MEDS column (subject, time, code = itemid + unit, numeric_value, "
                           "text_value, hadm_id) are one event"),
     f"""SELECT DISTINCT ON (subject_id, hadm_id, charttime, itemid, COALESCE(valueuom, 'UNK'),
           TRY_CAST(valuenum AS FLOAT), {_TEXT}) * FROM lab ORDER BY TRY_CAST(labevent_id AS BIGINT)"""),
    ("float32_values", ("numeric_value is float32: valuenum becomes the shortest decimal of its float32 (what the "
                        "MEDS reader makes of it)"),
     "SELECT * REPLACE (CAST(TRY_CAST(valuenum AS FLOAT) AS VARCHAR) AS valuenum) FROM lab"),
    ("no_flags_or_reference_ranges", "flag, ref_range_lower and ref_range_upper are not carried",
     "SELECT * REPLACE (NULL AS flag, NULL AS ref_range_lower, NULL AS ref_range_upper) FROM lab"),
    ("no_lab_labels", ("without the LOINC concept map a lab code has no description: a test's label is its itemid "
                       "(d_labitems is not an ETL input), so a conversion restricted to named tests (MCHC % -> g/dL) "
                       "cannot apply"),
     None),
)
"""(name, what the ETL does, SQL over table ``lab`` = labevents.csv.gz, all VARCHAR), applied in this order
(each to the result of the ones before). The last rewrites d_labitems instead: label = itemid, no fluid or
category."""


def _config(source: str):
    from medfuse.config import load_config

    over: dict = {"source": source, **ALL_TESTS}
    if source == "meds":
        over["meds"] = {"use_subject_splits": False}
    return load_config(overrides={"prepare": over}).prepare


def _stage_all(demo: Path, work: Path) -> list[Path]:
    """MIMIC-IV folders ``work/raw_<k>``: the demo with the first k rules applied to labevents (and
    d_labitems), for k = 1 .. len(RULES); labevents is read once."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"""CREATE TABLE lab AS SELECT * FROM read_csv('{demo / "hosp" / "labevents.csv.gz"}', header = true,
        all_varchar = true)""")
    items = f"read_csv('{demo / 'hosp' / 'd_labitems.csv.gz'}', header = true, all_varchar = true)"
    out = []
    for k, (_, _, sql) in enumerate(RULES, start=1):
        hosp = work / f"raw_{k}" / "hosp"
        hosp.mkdir(parents=True)
        for name in ("admissions", "patients", "diagnoses_icd"):
            (hosp / f"{name}.csv.gz").symlink_to((demo / "hosp" / f"{name}.csv.gz").resolve())
        if sql is not None:
            con.execute(f"CREATE OR REPLACE TABLE lab AS {sql}")
        con.execute(f"COPY lab TO '{hosp / 'labevents.csv'}' (HEADER, DELIMITER ',')")
        labels = "itemid AS label, NULL AS fluid, NULL AS category" if k == len(RULES) else "label, fluid, category"
        con.execute(f"COPY (SELECT itemid, {labels} FROM {items}) TO '{hosp / 'd_labitems.csv'}' (HEADER, DELIMITER ',')")
        out.append(hosp.parent)
    con.close()
    return out


def _labs(cohort: Path) -> tuple[np.ndarray, dict[int, dict[str, np.ndarray]]]:
    """hadm_ids in row order, and per test (itemid) its aggregates (NaN where not measured; count 0)."""
    t = pq.read_table(cohort / "labs.parquet")
    tests: dict[int, dict[str, np.ndarray]] = {}
    for name in t.column_names:
        if name.startswith("lab_") and "__" in name:
            key, agg = name[4:].split("__")
            if agg in AGGREGATES:
                tests.setdefault(int(key), {})[agg] = t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    return t.column("hadm_id").to_numpy(), tests


def pair_differences(a: Path, b: Path) -> tuple[int, dict[tuple[int, int], dict[str, tuple[float, float]]]]:
    """``(pairs, {(hadm_id, itemid): {aggregate: (a, b)}})``: how many (admission, test) pairs either cohort
    measured, and those whose aggregates differ beyond :data:`TOLERANCE` (a test that is no column of a
    cohort counts as not measured there)."""
    hadm_a, tests_a = _labs(a)
    hadm_b, tests_b = _labs(b)
    if not np.array_equal(hadm_a, hadm_b):
        raise AssertionError(f"{a} and {b} have different admissions")
    n = len(hadm_a)
    empty = {g: (np.zeros(n) if g == "count" else np.full(n, np.nan)) for g in AGGREGATES}
    pairs, out = 0, {}
    for itemid in sorted(set(tests_a) | set(tests_b)):
        x, y = tests_a.get(itemid, empty), tests_b.get(itemid, empty)
        measured = (x["count"] > 0) | (y["count"] > 0)
        pairs += int(measured.sum())
        differ = {}
        for g in AGGREGATES:
            u, v = x[g], y[g]
            with np.errstate(invalid="ignore"):
                far = np.abs(u - v) > TOLERANCE * np.maximum(1.0, np.maximum(np.abs(u), np.abs(v)))
            differ[g] = measured & (far | (np.isnan(u) != np.isnan(v)))
        for i in np.flatnonzero(np.logical_or.reduce(list(differ.values()))):
            out[(int(hadm_a[i]), itemid)] = {g: (float(x[g][i]), float(y[g][i])) for g in AGGREGATES if differ[g][i]}
    return pairs, out


def largest_difference(a: Path, b: Path) -> float:
    """The largest difference of any aggregate of two cohorts, over the pairs both measured."""
    _, x = _labs(a)
    _, y = _labs(b)
    out = 0.0
    for itemid in set(x) & set(y):
        for g in AGGREGATES:
            with np.errstate(invalid="ignore"):
                out = max(out, float(np.nanmax(np.abs(x[itemid][g] - y[itemid][g]), initial=0.0)))
    return out


def _kind(diff: dict[str, tuple[float, float]]) -> str:
    if "count" not in diff:
        return "values_differ"
    u, v = diff["count"]
    return "measured_in_csv_only" if v == 0 else "measured_in_meds_only" if u == 0 else "count_differs"


def _account_change(before: dict, after: dict) -> dict:
    """How a rule changed the labevents row account: ``{"read": -992, "dropped.duplicate": -7, ...}`` (non-zero)."""
    def flat(acc: dict) -> dict:
        return {"read": acc["read"], "used": acc["used"], **{f"dropped.{k}": v for k, v in acc["dropped"].items()},
                **{f"repaired.{k}": v for k, v in acc["repaired"].items()}}

    a, b = flat(before), flat(after)
    return {k: b.get(k, 0) - a.get(k, 0) for k in dict.fromkeys([*a, *b]) if b.get(k, 0) != a.get(k, 0)}


def float32_figures(demo: Path) -> dict:
    """What float32 storage does to MIMIC's valuenum, and what the MEDS reader's shortest-decimal reading undoes."""
    import duckdb

    con = duckdb.connect()
    n, inexact, rel, unrecovered = con.execute(f"""WITH v AS (SELECT TRY_CAST(valuenum AS DOUBLE) AS x
            FROM read_csv('{demo / "hosp" / "labevents.csv.gz"}', header = true, all_varchar = true))
        SELECT count(x), count_if(x::FLOAT::DOUBLE <> x),
          max(abs(x::FLOAT::DOUBLE - x) / abs(x)) FILTER (WHERE x <> 0),
          count_if(TRY_CAST(CAST(x::FLOAT AS VARCHAR) AS DOUBLE) <> x) FROM v""").fetchall()[0]
    con.close()
    return {"numeric_values": n, "not_exact_in_float32": inexact, "largest_relative_error_as_float32": rel,
            "not_recovered_by_the_shortest_decimal": unrecovered}


def _shown(path: Path) -> str:
    """A path relative to the checkout where it is beside it (``../shared/data/...``)."""
    path = path.resolve()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT.parent) else str(path)


def _largest(rows: list[dict], key: str) -> dict | None:
    return max(rows, key=lambda r: r[key], default=None)


def measure(demo: Path = DEMO, meds_dir: Path = MEDS, work: Path | None = None) -> dict:
    """Every figure of the comparison (what this script writes, less machine, date and time); the cohorts are
    prepared under ``work`` (a new temporary folder by default)."""
    from medfuse.data.prepare import prepare_cohort

    work = Path(work or tempfile.mkdtemp(prefix="meds-equivalence-"))
    csv, meds = work / "csv", work / "meds"
    manifests = {"csv": prepare_cohort(demo, csv, _config("mimic4"))}
    steps = [csv]
    for (name, _, _), raw in zip(RULES, _stage_all(demo, work), strict=True):
        steps.append(work / f"cohort_{name}")
        manifests[name] = prepare_cohort(raw, steps[-1], _config("mimic4"))
    manifests["meds"] = prepare_cohort(meds_dir, meds, _config("meds"))

    same = {t: pq.read_table(csv / f"{t}.parquet").equals(pq.read_table(meds / f"{t}.parquet"))
            for t in ("admissions", "labels", "splits")}
    labels = pq.read_table(csv / "labels.parquet")
    names = {r["itemid"]: r["label"] for r in pq.read_table(csv / "lab_tests.parquet").to_pylist()}

    # every differing pair, given to the first rule (in order) that changes it
    pairs, differing = pair_differences(csv, meds)
    changes = [pair_differences(steps[k], steps[k + 1])[1] for k in range(len(RULES))]
    residual_pairs, residual = pair_differences(steps[-1], meds)
    by_rule = {name: {"pairs": 0, "values_differ": 0, "count_differs": 0, "measured_in_csv_only": 0,
                      "measured_in_meds_only": 0, "tests": set(), "largest_difference": None}
               for name in [*(r[0] for r in RULES), "unexplained"]}
    rows = []
    for pair, diff in differing.items():
        rule = next((RULES[k][0] for k, ch in enumerate(changes) if pair in ch), "unexplained")
        entry = by_rule[rule]
        entry["pairs"] += 1
        entry[_kind(diff)] += 1
        entry["tests"].add(pair[1])
        for g, (u, v) in diff.items():
            if g != "count" and not (math.isnan(u) or math.isnan(v)):
                rows.append({"hadm_id": pair[0], "itemid": pair[1], "label": names.get(pair[1]), "aggregate": g,
                             "csv": u, "meds": v, "abs": abs(u - v), "rel": abs(u - v) / max(abs(u), abs(v)),
                             "rule": rule})
    for name, entry in by_rule.items():
        entry["largest_difference"] = _largest([r for r in rows if r["rule"] == name], "abs")
        entry["tests"] = sorted(entry["tests"])
    lab_text = {k: pq.read_table(p / "lab_text.parquet").num_rows for k, p in zip(("csv", *(r[0] for r in RULES)), steps)}
    tests = {k: pq.read_table(p / "lab_tests.parquet").column("itemid").to_pylist() for k, p in (("csv", csv), ("meds", meds))}
    return {
        "inputs": {"csv": _shown(demo), "meds": _shown(meds_dir), "meds_dataset": manifests["meds"]["meds"]["dataset"]},
        "settings": {"split": "stratified on both (prepare.meds.use_subject_splits = false)", **ALL_TESTS,
                     "tolerance": f"relative {TOLERANCE:g} (of max(1, |value|))"},
        "admissions": {"csv": manifests["csv"]["tables"]["admissions"]["used"],
                       "meds": manifests["meds"]["tables"]["admissions"]["used"], "identical": same["admissions"],
                       "splits_identical": same["splits"]},
        "labels": {"admissions": labels.num_rows, "diseases": labels.num_columns - 1,
                   "cells_compared": labels.num_rows * (labels.num_columns - 1), "identical": same["labels"],
                   "positives": int(sum(sum(labels.column(c).to_pylist()) for c in labels.column_names[1:]))},
        "lab_aggregates": {
            "aggregates": list(AGGREGATES), "pairs_compared": pairs, "values_compared": pairs * len(AGGREGATES),
            "tests_compared": len(set(tests["csv"]) | set(tests["meds"])),
            "tests_only_in_csv": sorted(set(tests["csv"]) - set(tests["meds"])),
            "tests_only_in_meds": sorted(set(tests["meds"]) - set(tests["csv"])),
            "pairs_identical": pairs - len(differing), "pairs_differing": len(differing),
            "values_differing": sum(len(d) for d in differing.values()),
            "differing_by_rule": by_rule,
            "largest_absolute_difference": _largest(rows, "abs"), "largest_relative_difference": _largest(rows, "rel"),
            "all_rules_applied_vs_meds": {"pairs_compared": residual_pairs, "pairs_differing": len(residual),
                                          "largest_difference": largest_difference(steps[-1], meds)},
        },
        "pairs_changed_by_each_rule": {RULES[k][0]: len(ch) for k, ch in enumerate(changes)},
        "lab_text_admissions": {**lab_text, "meds": pq.read_table(meds / "lab_text.parquet").num_rows},
        "labevents_rows_changed_by_each_rule": {RULES[k][0]: _account_change(
            manifests["csv" if k == 0 else RULES[k - 1][0]]["tables"]["labevents"],
            manifests[RULES[k][0]]["tables"]["labevents"]) for k in range(len(RULES))},
        "labevents_accounting": {k: manifests[k]["tables"]["labevents"] for k in ("csv", "meds")},
        "float32": float32_figures(demo),
        "rules": {name: what for name, what, _ in RULES},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=DEMO, help="the MIMIC-IV demo (CSV)")
    parser.add_argument("--meds", type=Path, default=MEDS, help="its conversion by the MIMIC-IV MEDS ETL")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meds-equivalence-") as work:
        result = measure(args.demo, args.meds, Path(work))
    result = {"command": "python benchmarks/meds/equivalence.py", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "seconds": round(time.perf_counter() - t0, 1), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result["lab_aggregates"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
