"""Bad input: structural problems stop ``prepare`` cleanly; row-level problems are counted, not fatal."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil

import pytest
from typer.testing import CliRunner

from medfuse.cli import app

DEMO_TABLES = ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD", "LABEVENTS", "D_LABITEMS", "NOTEEVENTS")


def load(demo, stem) -> tuple[list[str], list[list[str]]]:
    with gzip.open(demo / f"{stem}.csv.gz", "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def write_csv(path, header, rows, *, bom=False, crlf=False, lower=False, gz=False, extra_column=False) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    header = [h.lower() for h in header] if lower else header
    w.writerow([*header, "EXTRA_NOTE"] if extra_column else header)
    for r in rows:
        w.writerow([*r, "x"] if extra_column else r)
    data = ("\ufeff" if bom else "") + buf.getvalue()
    if gz:
        with gzip.open(path.with_suffix(".csv.gz"), "wt", newline="") as fh:
            fh.write(data)
    else:
        path.with_suffix(".csv").write_text(data, newline="")


def copy_demo(demo, dst):
    dst.mkdir()
    for stem in DEMO_TABLES:
        shutil.copy(demo / f"{stem}.csv.gz", dst / f"{stem}.csv.gz")
    return dst


def run_prepare(raw, out, source="mimic3"):
    return CliRunner().invoke(app, ["prepare", str(raw), "--source", source, "--out", str(out)])


def assert_failed_cleanly(result, out, *needles):
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for needle in needles:
        assert needle in message, message
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


def test_missing_file(mimic3_demo, tmp_path):
    raw = copy_demo(mimic3_demo, tmp_path / "raw")
    (raw / "LABEVENTS.csv.gz").unlink()
    assert_failed_cleanly(run_prepare(raw, tmp_path / "out"), tmp_path / "out", "LABEVENTS", "not found")


def test_missing_required_column(mimic3_demo, tmp_path):
    raw = copy_demo(mimic3_demo, tmp_path / "raw")
    header, rows = load(mimic3_demo, "D_LABITEMS")
    keep = [i for i, h in enumerate(header) if h != "ITEMID"]
    (raw / "D_LABITEMS.csv.gz").unlink()
    write_csv(raw / "D_LABITEMS", [header[i] for i in keep], [[r[i] for i in keep] for r in rows], gz=True)
    assert_failed_cleanly(run_prepare(raw, tmp_path / "out"), tmp_path / "out", "D_LABITEMS.csv.gz", "'ITEMID'")


def test_truncated_gzip(mimic3_demo, tmp_path):
    raw = copy_demo(mimic3_demo, tmp_path / "raw")
    data = (raw / "LABEVENTS.csv.gz").read_bytes()
    (raw / "LABEVENTS.csv.gz").write_bytes(data[: len(data) // 2])
    assert_failed_cleanly(run_prepare(raw, tmp_path / "out"), tmp_path / "out", "LABEVENTS.csv.gz", "GZIP")


def test_empty_required_table(mimic3_demo, tmp_path):
    raw = copy_demo(mimic3_demo, tmp_path / "raw")
    header, _ = load(mimic3_demo, "ADMISSIONS")
    (raw / "ADMISSIONS.csv.gz").unlink()
    write_csv(raw / "ADMISSIONS", header, [])
    assert_failed_cleanly(run_prepare(raw, tmp_path / "out"), tmp_path / "out", "ADMISSIONS.csv", "empty")


def test_existing_output_is_not_overwritten(mimic3_demo, tmp_path):
    (tmp_path / "out").mkdir()
    result = run_prepare(mimic3_demo, tmp_path / "out")
    assert result.exit_code == 2 and "already exists" in result.output


def test_row_level_problems_are_counted_and_quirky_formats_accepted(mimic3_demo, mimic3_cohort, tmp_path):
    """Inject one row per problem into plain-CSV copies with BOM, CRLF, lower-case headers, extra columns."""
    raw = tmp_path / "raw"
    raw.mkdir()
    base = json.loads((mimic3_cohort / "manifest.json").read_text())["tables"]

    header, rows = load(mimic3_demo, "ADMISSIONS")
    first = rows[0]  # hadm 142345, subject 10006
    bad_times = [*first]
    bad_times[2], bad_times[3], bad_times[4] = "999001", "2164-12-01 10:00:00", "2164-11-30 10:00:00"
    unknown_patient = [*first]
    unknown_patient[1], unknown_patient[2] = "1", "999002"
    write_csv(raw / "ADMISSIONS", header, rows + [first, bad_times, unknown_patient], bom=True, crlf=True, lower=True)

    header, rows = load(mimic3_demo, "DIAGNOSES_ICD")
    ref = next(r for r in rows if r[2] == "142345")
    extra = [[*ref[:4], ""], [*ref[:4], "4X?!"], [ref[0], ref[1], "555", ref[3], "4019"], ref, [*ref[:4], "401.9"]]
    write_csv(raw / "DIAGNOSES_ICD", header, rows + extra, extra_column=True)

    header, rows = load(mimic3_demo, "LABEVENTS")
    ref = next(r for r in rows if r[2] == "142345" and r[3] == "50912" and r[6])
    def lab(value, valuenum, hadm="142345", minute="01"):
        r = [*ref]
        r[2], r[4], r[5], r[6] = hadm, ref[4][:-5] + minute + ":00", value, valuenum
        return r
    extra = [lab("inf", "inf"), lab("ERROR", ""), lab(">10", "", minute="02"), lab("1.1", "1.1", hadm="555"), ref]
    write_csv(raw / "LABEVENTS", header, rows + extra, crlf=True)
    with (raw / "LABEVENTS.csv").open("ab") as fh:  # one row with bytes that are not UTF-8
        fh.write(b'1,10006,142345,50912,2164-10-24 05:03:00,"1\xff\xfe",1,"mg/dL",\r\n')

    for stem in ("PATIENTS", "D_LABITEMS"):
        shutil.copy(mimic3_demo / f"{stem}.csv.gz", raw / f"{stem}.csv.gz")  # NOTEEVENTS absent: optional

    out = tmp_path / "cohort"
    result = run_prepare(raw, out)
    assert result.exit_code == 0, result.output
    tables = json.loads((out / "manifest.json").read_text())["tables"]

    def delta(table, kind, reason):
        return tables[table][kind].get(reason, 0) - base[table][kind].get(reason, 0)

    for name, acc in tables.items():
        assert acc["read"] == acc["used"] + sum(acc["dropped"].values()), name
    assert tables["admissions"]["read"] == base["admissions"]["read"] + 3
    assert tables["admissions"]["used"] == base["admissions"]["used"]
    assert delta("admissions", "dropped", "duplicate") == 1
    assert delta("admissions", "dropped", "discharge_before_admission") == 1
    assert delta("admissions", "dropped", "unknown_patient") == 1

    assert delta("diagnoses", "dropped", "missing_icd_code") == 1
    assert delta("diagnoses", "dropped", "malformed_icd_code") == 1
    assert delta("diagnoses", "dropped", "unknown_admission") == 1
    assert delta("diagnoses", "dropped", "duplicate") == 1
    assert delta("diagnoses", "repaired", "normalized_icd_code") == 1
    assert tables["diagnoses"]["used"] == base["diagnoses"]["used"] + 1  # "401.9" -> 4019 is kept

    assert tables["labevents"]["read"] == base["labevents"]["read"] + 6
    assert delta("labevents", "dropped", "non_finite_value") == 1
    assert delta("labevents", "dropped", "non_numeric_value") == 1
    assert delta("labevents", "dropped", "admission_not_in_cohort") == 1
    assert delta("labevents", "dropped", "duplicate") == 1
    assert delta("labevents", "dropped", "invalid_utf8") == 1
    assert delta("labevents", "repaired", "censored_value") == 1
    assert tables["labevents"]["used"] == base["labevents"]["used"] + 1  # ">10" kept as 10
    assert "notes" not in tables or tables["notes"]["read"] == 0


def test_lab_rows_without_admission_id_attach_to_latest_covering_admission(mimic3_demo, tmp_path):
    """Admission 999001 lies inside 142345 (subject 10006): a row inside both goes to the later-admitted
    999001, a row inside 142345 only goes to 142345, a row far outside every stay is dropped."""
    import pyarrow.parquet as pq

    raw = copy_demo(mimic3_demo, tmp_path / "raw")
    header, rows = load(mimic3_demo, "ADMISSIONS")
    nested = next(r for r in rows if r[2] == "142345").copy()
    nested[0], nested[2], nested[3], nested[4] = "1", "999001", "2164-10-25 00:00:00", "2164-10-26 00:00:00"
    (raw / "ADMISSIONS.csv.gz").unlink()
    write_csv(raw / "ADMISSIONS", header, [*rows, nested], gz=True)
    header, rows = load(mimic3_demo, "DIAGNOSES_ICD")
    (raw / "DIAGNOSES_ICD.csv.gz").unlink()
    write_csv(raw / "DIAGNOSES_ICD", header, [*rows, ["1", "10006", "999001", "1", "4019"]], gz=True)
    header, rows = load(mimic3_demo, "LABEVENTS")
    extra = [["1", "10006", "", "50912", t, v, v, "mg/dL", ""]
             for t, v in (("2164-10-25 12:00:00", "111"), ("2164-10-28 12:00:00", "222"), ("2190-01-01 00:00:00", "333"))]
    (raw / "LABEVENTS.csv.gz").unlink()
    write_csv(raw / "LABEVENTS", header, [*rows, *extra], gz=True)
    result = run_prepare(raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    labs = pq.read_table(tmp_path / "out" / "labs.parquet").to_pylist()
    by_adm = {r["hadm_id"]: r for r in labs}
    assert by_adm[999001]["lab_50912__last"] == 111 and by_adm[999001]["lab_50912__count"] == 1
    assert by_adm[142345]["lab_50912__max"] == 222
    assert 333 not in [r["lab_50912__max"] for r in labs]


def test_last_value_is_the_latest_and_the_largest_among_simultaneous_results(mimic3_demo, tmp_path):
    """Creatinine (50912) of admission 142345: two results at its latest time; ``last`` is the larger one,
    whatever their order in the file, and an earlier larger value does not count."""
    import pyarrow.parquet as pq

    header, rows = load(mimic3_demo, "LABEVENTS")
    stay = sorted(r[4] for r in rows if r[1] == "10006" and r[3] == "50912" and "2164-10-23" <= r[4] <= "2164-11-01 17:15")
    late = "2164-11-01 17:14:00"  # one minute before discharge: after every real creatinine of the stay
    assert stay and stay[-1] < late
    extra = [["1", "10006", "142345", "50912", late, v, v, "mg/dL", ""] for v in ("1.25", "1.75", "1.5")]
    extra.append(["1", "10006", "142345", "50912", stay[0], "9.0", "9.0", "mg/dL", ""])
    for order in (extra, extra[::-1]):
        raw = copy_demo(mimic3_demo, tmp_path / f"raw{len(order)}{order[0][5]}")
        (raw / "LABEVENTS.csv.gz").unlink()
        write_csv(raw / "LABEVENTS", header, [*order, *rows], gz=True)
        out = tmp_path / f"out{order[0][5]}"
        result = run_prepare(raw, out)
        assert result.exit_code == 0, result.output
        labs = {r["hadm_id"]: r for r in pq.read_table(out / "labs.parquet").to_pylist()}
        assert labs[142345]["lab_50912__last"] == 1.75
        assert labs[142345]["lab_50912__max"] == 9.0


def test_exact_duplicates_count_once_in_count_and_mean(mimic3_demo, mimic3_cohort, tmp_path):
    """Creatinine (50912) of admission 142345 gets 2.5 at a new time four times (once without HADM_ID,
    attached by time) and 4.0 at the same time: three duplicates dropped, two new observations."""
    import pyarrow.parquet as pq

    base_labs = {r["hadm_id"]: r for r in pq.read_table(mimic3_cohort / "labs.parquet").to_pylist()}[142345]
    base = json.loads((mimic3_cohort / "manifest.json").read_text())["tables"]["labevents"]
    header, rows = load(mimic3_demo, "LABEVENTS")
    t = "2164-10-25 12:00:00"
    extra = [["1", "10006", hadm, "50912", t, "2.5", "2.5", "mg/dL", ""] for hadm in ("142345", "142345", "142345", "")]
    extra.append(["1", "10006", "142345", "50912", t, "4.0", "4.0", "mg/dL", ""])
    raw = copy_demo(mimic3_demo, tmp_path / "raw")
    (raw / "LABEVENTS.csv.gz").unlink()
    write_csv(raw / "LABEVENTS", header, [*extra[:2], *rows, *extra[2:]], gz=True)
    result = run_prepare(raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    tables = json.loads((tmp_path / "out" / "manifest.json").read_text())["tables"]["labevents"]
    labs = {r["hadm_id"]: r for r in pq.read_table(tmp_path / "out" / "labs.parquet").to_pylist()}[142345]

    n = base_labs["lab_50912__count"]
    assert labs["lab_50912__count"] == n + 2
    assert labs["lab_50912__mean"] == pytest.approx((base_labs["lab_50912__mean"] * n + 2.5 + 4.0) / (n + 2))
    assert tables["dropped"].get("duplicate", 0) - base["dropped"].get("duplicate", 0) == 3
    assert tables["used"] == base["used"] + 2
    assert tables["repaired"]["hadm_id_from_time_window"] - base["repaired"]["hadm_id_from_time_window"] == 1
