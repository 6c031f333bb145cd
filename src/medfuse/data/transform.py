"""The lab transforms that ``prepare`` and prediction share: one copy of the feature logic.

``prepare`` runs them over the labevents relation of any source; :mod:`medfuse.serving.features` runs them
over new patients' records with the model's frozen vocabulary. Each step is DuckDB SQL on one connection,
over tables the caller creates first:

``cohort``       ``row, hadm_id, subject_id, admittime, dischtime, win_start, win_end``
                 (:func:`medfuse.data.rules.create_cohort`)
``lab_windows``  ``subject_id, lo, hi, hadm_id``: where a lab row without HADM_ID belongs (may be empty;
                 :func:`medfuse.data.rules.create_attachment_windows`)
``labitems``     ``itemid, label``: the tests that exist (D_LABITEMS, or the model's vocabulary)
``lab_units``    ``itemid, unit``: each test's reference unit (the most frequent one, or the vocabulary's)
``lab_tests``    ``rank, itemid, label, unit``: the tests that become features, in column order

Steps, in order: :func:`create_lab_observations` (typing, censored values, attachment, the drop reasons of
:data:`medfuse.data.rules.LAB_DROP_RULES`), :func:`convert_units`, :func:`create_lab_aggregates`, then
:func:`lab_wide_table` and :func:`create_lab_text`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pyarrow as pa

from medfuse.data.rules import LAB_DROP_RULES, Run

UNIT_NOT_CONVERTIBLE = len(LAB_DROP_RULES)  # the reason code :func:`convert_units` gives
DROP_REASONS = (*(r for r, _ in LAB_DROP_RULES), "unit_not_convertible")
REFERENCE_RANGES = ("ref_low", "ref_high")
AGGREGATES = ("last", "mean", "min", "max")


def has_reference_ranges(source: str) -> bool:
    """Whether lab rows of ``source`` may carry reference ranges (and flags): all but MIMIC-III, whose
    LABEVENTS has none. MEDS is read like MIMIC-IV (the columns are NULL where a dataset lacks them)."""
    return source != "mimic3"


def create_lab_observations(con, source: str, refs: bool, run: Run | None = None) -> None:
    """Table ``lab_obs``: every row of ``source`` typed, attached to an admission, with its drop reason.

    ``source`` is the labevents relation (:data:`medfuse.data.rules.RELATIONS`; ``ref_low, ref_high`` are read
    with ``refs`` only), as a subquery or table name. VALUENUM is cast first; only rows
    without one parse VALUE, and only those with < or > try the censored-value regex (``>100`` -> 100).
    """
    run = run or (lambda q, stage=None: con.execute(q))
    ref_cols = REFERENCE_RANGES if refs else ()
    censored = r"TRY_CAST(regexp_extract(value, '^\s*[<>]=?\s*(-?[0-9]*\.?[0-9]+)\s*$', 1) AS DOUBLE)"
    carry = "".join(f", a.{r}" for r in ref_cols)
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {i}" for i, (_, cond) in enumerate(LAB_DROP_RULES)) + " END"
    run(f"""CREATE OR REPLACE TABLE lab_obs AS
        WITH typed AS (
          SELECT TRY_CAST(subject_id AS BIGINT) AS subject_id, TRY_CAST(hadm_id AS BIGINT) AS hadm_id,
            TRY_CAST(itemid AS INTEGER) AS itemid, TRY_CAST(charttime AS TIMESTAMP) AS t, value,
            COALESCE(TRY_CAST(valuenum AS DOUBLE), TRY_CAST(trim(value) AS DOUBLE)) AS plain,
            trim(unit) AS unit, lower(trim(flag)) = 'abnormal' AS abnormal
            {''.join(f', TRY_CAST({r} AS DOUBLE) AS {r}' for r in ref_cols)}
          FROM {source}),
        attached AS (
          SELECT COALESCE(l.hadm_id, w.hadm_id) AS hadm_id, l.subject_id, l.itemid, l.t,
            CASE WHEN plain IS NOT NULL THEN plain WHEN value SIMILAR TO '.*[<>].*' THEN {censored} END AS num,
            plain IS NULL AND num IS NOT NULL AS censored, l.unit, l.abnormal{''.join(f', l.{r}' for r in ref_cols)},
            l.hadm_id IS NULL AS from_window
          FROM typed l LEFT JOIN lab_windows w  -- a NULL key never matches: only rows without HADM_ID probe
            ON w.subject_id = CASE WHEN l.hadm_id IS NULL THEN l.subject_id END AND l.t >= w.lo AND l.t < w.hi)
        SELECT a.hadm_id, a.itemid, a.t, a.num, a.censored, a.unit, a.abnormal{carry}, a.from_window,
          ({reason})::UTINYINT AS reason
        FROM attached a LEFT JOIN cohort c ON c.hadm_id = a.hadm_id LEFT JOIN labitems li ON li.itemid = a.itemid
        """, stage="labs: read")


def _unit_pairs(con, fresh: bool) -> None:
    """Temp table ``unit_pairs``: rows per (test, unit) with a numeric value, and how many are usable: one
    grouped scan serves both the reference units and the conversions."""
    create = "CREATE OR REPLACE TEMP TABLE" if fresh else "CREATE TEMP TABLE IF NOT EXISTS"
    con.execute(f"""{create} unit_pairs AS SELECT itemid, unit, count(*) AS n_numeric,
        count_if(reason IS NULL) AS n_usable FROM lab_obs WHERE num IS NOT NULL GROUP BY itemid, unit""")


def reference_units_from_data(con) -> None:
    """Table ``lab_units``: each test's most frequent unit over its numeric rows (all splits: a unit says
    nothing about the outcome)."""
    _unit_pairs(con, fresh=True)
    con.execute("""CREATE OR REPLACE TABLE lab_units AS SELECT itemid, arg_max(unit, n_numeric) AS unit
        FROM unit_pairs WHERE unit <> '' GROUP BY itemid""")


@lru_cache(maxsize=1)
def unit_conversions() -> pa.Table:
    """The documented conversion table (``resources/unit_conversions.csv``, docs/predict.md)."""
    import pyarrow.csv as pacsv

    path = resources.files("medfuse.resources").joinpath("unit_conversions.csv")
    with resources.as_file(path) as p:
        return pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(
            column_types={"from_unit": pa.string(), "to_unit": pa.string(), "factor": pa.float64(),
                          "tests": pa.string(), "note": pa.string()}, strings_can_be_null=True))


def canonical_unit_sql(x: str) -> str:
    """A unit spelled for comparison: lower case, no spaces, micro as u; empty or N/A is no unit (NULL)."""
    c = f"replace(replace(regexp_replace(lower(trim({x})), '\\s+', '', 'g'), 'µ', 'u'), 'μ', 'u')"
    return f"CASE WHEN {c} IN ('', 'n/a', 'na', 'none', '-') THEN NULL ELSE {c} END"


def convert_units(con, refs: bool) -> dict[str, int]:
    """Put every usable row in its test's reference unit (``lab_units``).

    A row whose unit differs (beyond spelling) is converted when the conversion table knows the pair for
    that test, else it is dropped as ``unit_not_convertible``. A row without a unit, or a test without a
    reference unit, is taken as it is. Works on the distinct (test, unit) pairs, so it costs one grouped
    scan. Returns ``{"converted": rows, "unit_not_convertible": rows}``.
    """
    _unit_pairs(con, fresh=False)  # made by reference_units_from_data when prepare called it
    con.register("unit_conversions_src", unit_conversions())
    con.execute(f"""CREATE OR REPLACE TEMP TABLE unit_fix AS SELECT p.itemid, p.unit, any_value(p.n_usable) AS n,
          any_value(k.factor) AS factor
        FROM unit_pairs p JOIN lab_units u USING (itemid) LEFT JOIN labitems li USING (itemid)
        LEFT JOIN unit_conversions_src k ON k.from_unit = {canonical_unit_sql('p.unit')}
          AND k.to_unit = {canonical_unit_sql('u.unit')}
          AND (k.tests IS NULL OR regexp_matches(lower(COALESCE(li.label, '')), k.tests))
        WHERE p.n_usable > 0 AND {canonical_unit_sql('p.unit')} <> {canonical_unit_sql('u.unit')}
        GROUP BY p.itemid, p.unit""")
    con.unregister("unit_conversions_src")
    counts = dict(con.execute("SELECT factor IS NOT NULL, sum(n) FROM unit_fix GROUP BY ALL").fetchall())
    if counts:
        scaled = ", ".join(f"{c} = o.{c} * f.factor" for c in ("num", *(REFERENCE_RANGES if refs else ())))
        con.execute(f"""UPDATE lab_obs o SET {scaled} FROM unit_fix f
            WHERE f.itemid = o.itemid AND f.unit = o.unit AND f.factor IS NOT NULL AND o.reason IS NULL""")
        con.execute(f"""UPDATE lab_obs o SET reason = {UNIT_NOT_CONVERTIBLE} FROM unit_fix f
            WHERE f.itemid = o.itemid AND f.unit = o.unit AND f.factor IS NULL AND o.reason IS NULL""")
    con.execute("DROP TABLE unit_fix; DROP TABLE unit_pairs")
    return {"converted": int(counts.get(True, 0)), "unit_not_convertible": int(counts.get(False, 0))}


def drop_counts(con) -> dict[str, int]:
    """``{reason: rows}`` of the rows of ``lab_obs`` that are dropped."""
    rows = con.execute("SELECT reason, count(*) FROM lab_obs WHERE reason IS NOT NULL GROUP BY reason").fetchall()
    return {DROP_REASONS[code]: int(n) for code, n in rows}


def create_lab_aggregates(con, refs: bool, run: Run | None = None) -> None:
    """Table ``lab_agg``: per admission and test, last/mean/min/max/count, censored count and the last
    abnormal result, over distinct observations: exact duplicates (same admission, test, time and value)
    count once.

    Aggregating per (admission, test) is cheap; de-duplicating all rows first (a hash table with one
    entry per row) cost three times as much. So the aggregate also counts each pair's distinct
    32-bit hashes of (time, value): a pair whose rows all hash differently has no duplicate, and
    only the few others (``lab_dups``: their distinct observations, exactly) have count, mean and
    censored count recomputed. A hash collision only sends a pair down the exact path.
    """
    run = run or (lambda q, stage=None: con.execute(q))
    ref_cols = REFERENCE_RANGES if refs else ()
    flagged = "o.abnormal" + "".join(
        f" OR (o.{r} IS NOT NULL AND o.num {'>' if r == 'ref_high' else '<'} o.{r})" for r in ref_cols)
    # "last" = the latest result, the largest value among results at the same time. One HUGEINT key
    # (time in microseconds, then the value at 1e-6 resolution within +-1e9) sorts like (t, num) and
    # arg_max over it is twice as fast as over a (t, num) struct; only values closer than 1e-6 tie.
    last = ("(epoch_us(o.t)::HUGEINT * 100000000000000000000"
            " + round((greatest(least(o.num, 1e9), -1e9) + 1e9) * 1e6)::HUGEINT)")
    high_low = ("CASE WHEN o.ref_high IS NOT NULL AND o.num > o.ref_high THEN 'high' "
                "WHEN o.ref_low IS NOT NULL AND o.num < o.ref_low THEN 'low' ELSE 'abnormal' END")
    # read only where abnormal_num is set; without reference ranges every flag is plain 'abnormal'
    direction = f"arg_max({high_low}, {last}) FILTER (WHERE {flagged})" if refs else "'abnormal'"
    run(f"""CREATE OR REPLACE TABLE lab_pairs AS SELECT o.hadm_id, o.itemid, arg_max(o.num, {last}) AS last,
        avg(o.num) AS mean, min(o.num) AS min, max(o.num) AS max, count(*)::INTEGER AS count,
        count_if(o.censored) AS n_censored,
        arg_max(o.num, {last}) FILTER (WHERE {flagged}) AS abnormal_num,
        {direction} AS abnormal_direction, count(*) AS n_rows, count_if(o.from_window) AS n_window,
        list_unique(list((hash(o.t, o.num) >> 32)::UINTEGER)) AS n_hashes
        FROM lab_obs o WHERE o.reason IS NULL GROUP BY o.hadm_id, o.itemid""", stage="labs: aggregate")
    con.execute("""CREATE OR REPLACE TABLE lab_dups AS SELECT o.hadm_id, o.itemid, o.t, o.num,
          bool_or(o.censored) AS censored
        FROM lab_obs o SEMI JOIN (SELECT hadm_id, itemid FROM lab_pairs WHERE n_hashes < n_rows) USING (hadm_id, itemid)
        WHERE o.reason IS NULL GROUP BY o.hadm_id, o.itemid, o.t, o.num""")
    con.execute("""CREATE OR REPLACE TABLE lab_agg AS SELECT g.* EXCLUDE (n_hashes) REPLACE (COALESCE(d.count, g.count) AS count,
          COALESCE(d.mean, g.mean) AS mean, COALESCE(d.n_censored, g.n_censored) AS n_censored)
        FROM lab_pairs g LEFT JOIN (SELECT hadm_id, itemid, count(*)::INTEGER AS count, avg(num) AS mean,
          count_if(censored) AS n_censored FROM lab_dups GROUP BY hadm_id, itemid) d USING (hadm_id, itemid)""")
    con.execute("DROP TABLE lab_pairs")


def lab_wide_table(con) -> pa.Table:
    """One row per cohort admission (cohort row order), six columns per test of ``lab_tests``:
    ``lab_<itemid>__{last,mean,min,max,count,observed}`` (a numpy scatter, not a SQL pivot)."""
    tests = [itemid for (itemid,) in con.execute("SELECT itemid FROM lab_tests ORDER BY rank").fetchall()]
    cohort = con.execute("SELECT row, hadm_id FROM cohort ORDER BY row").fetchnumpy()
    g = con.execute("""SELECT c.row, t.rank, g.last, g.mean, g.min, g.max, g.count
        FROM lab_agg g JOIN cohort c USING (hadm_id) JOIN lab_tests t USING (itemid)""").fetchnumpy()
    n, n_tests = len(cohort["row"]), len(tests)
    at = np.asarray(g["rank"], np.int64) * n + np.asarray(g["row"], np.int64)  # test-major: columns contiguous
    count = np.zeros(n_tests * n, np.int32)
    count[at] = g["count"]
    count = count.reshape(n_tests, n)
    observed = count > 0
    values = {}
    for a in AGGREGATES:
        values[a] = np.full(n_tests * n, np.nan)
        values[a][at] = g[a]
        values[a] = values[a].reshape(n_tests, n)
    columns = {"hadm_id": np.asarray(cohort["hadm_id"], np.int64)}
    for j, itemid in enumerate(tests):
        for a in AGGREGATES:
            columns[f"lab_{itemid}__{a}"] = pa.array(values[a][j], mask=~observed[j])
        columns[f"lab_{itemid}__count"] = count[j]
        columns[f"lab_{itemid}__observed"] = observed[j]
    return pa.table(columns)


def create_lab_text(con) -> None:
    """Table ``lab_text``: per admission with an abnormal result, ``Abnormal labs: <label> <value> <unit>
    (<high|low|abnormal>); ...`` over the tests of ``lab_tests`` in rank order."""
    con.execute("""CREATE OR REPLACE TABLE lab_text AS SELECT c.row, a.hadm_id,
          'Abnormal labs: ' || string_agg(trim(t.label || ' ' || printf('%.4g', a.abnormal_num) || ' ' || t.unit)
            || ' (' || a.abnormal_direction || ')', '; ' ORDER BY t.rank) || '.' AS text,
          count(*)::INTEGER AS n_abnormal
        FROM lab_agg a JOIN lab_tests t USING (itemid) JOIN cohort c USING (hadm_id)
        WHERE a.abnormal_num IS NOT NULL GROUP BY c.row, a.hadm_id""")
