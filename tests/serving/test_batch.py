"""Batch prediction: JSON Lines, Parquet and cohort inputs, bad records, unit conversion, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.serving.batch import predict_file
from medfuse.serving.predict import Predictor
from medfuse.serving.records import PatientRecord, record_schema


@pytest.fixture(scope="module")
def predictor(served):
    root, _ = served
    return Predictor.load(root / "model", cache_dir=root / "cache")


def creatinine(predictor) -> tuple[int, str]:
    tests = predictor.vocab.lab_tests.to_pylist()
    t = next(t for t in tests if t["label"].lower() == "creatinine")
    return t["itemid"], t["unit"]


def test_shipped_json_schema_is_the_record_model():
    from importlib import resources

    shipped = json.loads(resources.files("medfuse.resources").joinpath("patient_record.schema.json").read_text())
    assert shipped == record_schema(), "regenerate it: python -m medfuse.serving.records"


def test_jsonl_with_bad_records_never_sinks_the_batch(predictor, tmp_path):
    itemid, unit = creatinine(predictor)
    good = {"id": "a", "admittime": "2150-01-01T00:00:00",
            "labs": [{"test": itemid, "value": 1.1, "unit": unit, "time": "2150-01-01T05:00:00"},
                     {"test": "No such test", "value": 3, "unit": "x"},
                     {"test": itemid, "value": "ERROR", "unit": unit},
                     {"test": itemid, "value": 4.0, "unit": "furlongs"}],
            "note": "Chief Complaint:\nchest pain\n"}
    lines = [json.dumps(good), "{not json", json.dumps({"id": "b", "labs": [{"test": 1, "value": [1, 2]}]}),
             "", json.dumps({"id": "c", "note": "HPI: dyspnea on exertion."}), json.dumps({"labs": []})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    s = predict_file(predictor, tmp_path / "in.jsonl", tmp_path / "out" / "pred.parquet")
    assert (s.read, s.predicted, s.errors) == (5, 2, 3)
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [2, 3, 6]
    assert "not valid JSON" in errors[0]["error"] and errors[1]["error"].startswith("labs.0.value")
    assert errors[2]["error"].startswith("id: Field required")
    out = pq.read_table(tmp_path / "out" / "pred.parquet").to_pylist()
    assert [o["id"] for o in out] == ["a", "c"]
    warnings = " | ".join(out[0]["warnings"])
    for reason in ("unknown test label(s): No such test", "non_numeric_value", "unit_not_convertible"):
        assert reason in warnings
    assert out[1]["warnings"] == []
    assert all(0 <= out[0][f"{n}__prob"] <= 1 for n in predictor.label_names)


def test_non_finite_values_in_a_file_are_warnings_not_errors(predictor, tmp_path):
    itemid, unit = creatinine(predictor)
    values = ("NaN", "Infinity", "-Infinity", "1e999", "1.3")  # JSON literals Python's reader accepts
    labs = ", ".join(f'{{"test": {itemid}, "value": {v}, "unit": "{unit}"}}' for v in values)
    line = f'{{"id": "x", "labs": [{labs}]}}'
    (tmp_path / "in.jsonl").write_text(line + "\n")
    s = predict_file(predictor, tmp_path / "in.jsonl", tmp_path / "o.parquet")
    assert (s.predicted, s.errors) == (1, 0)
    assert pq.read_table(tmp_path / "o.parquet").column("warnings").to_pylist() == [
        ["4 lab value(s) not used: non_finite_value"]]


def test_times_with_utc_offsets_are_compared_in_utc(predictor):
    from medfuse.serving.features import records_to_cohort

    itemid, unit = creatinine(predictor)
    record = PatientRecord.model_validate({
        "id": "tz", "admittime": "2150-01-01T00:00:00Z", "dischtime": "2150-01-05T00:00:00Z",
        "labs": [{"test": itemid, "value": 1.0, "unit": unit, "time": "2150-01-01T10:00:00+00:00"},
                 {"test": itemid, "value": 5.0, "unit": unit, "time": "2150-01-01T08:00:00-05:00"},  # 13:00 UTC
                 {"test": itemid, "value": 9.0, "unit": unit, "time": "2150-01-05T02:00:00+05:00"}]})  # 21:00 UTC
    cohort, warnings = records_to_cohort([record], predictor.vocab)
    labs = cohort.table("labs").to_pylist()[0]
    assert labs[f"lab_{itemid}__last"] == 9.0 and labs[f"lab_{itemid}__count"] == 3 and warnings == [[]]


def test_odd_records_are_errors_or_warnings_never_crashes(predictor, tmp_path):
    import gzip

    lines = [{"id": "sup", "labs": [{"test": "\u00b2", "value": 3.5}]},  # a digit to isdigit(), not to int()
             {"id": "back", "admittime": "2150-01-05T00:00:00", "dischtime": "2150-01-01T00:00:00"}]
    with gzip.open(tmp_path / "in.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
    (tmp_path / "errors.jsonl").write_text('{"line": 9, "error": "stale"}\n')
    s = predict_file(predictor, tmp_path / "in.jsonl.gz", tmp_path / "o.parquet")
    assert (s.read, s.predicted, s.errors) == (2, 1, 1)
    out = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert out[0]["id"] == "sup" and "unknown_test" in " ".join(out[0]["warnings"])
    error = json.loads((tmp_path / "errors.jsonl").read_text())
    assert error["line"] == 2 and "dischtime is before admittime" in error["error"]
    (tmp_path / "clean.jsonl").write_text(json.dumps({"id": 1}) + "\n")
    predict_file(predictor, tmp_path / "clean.jsonl", tmp_path / "o.parquet")
    assert not (tmp_path / "errors.jsonl").exists()  # no stale errors beside a clean run's output


def test_a_record_that_fails_inside_the_model_is_isolated(predictor, tmp_path, monkeypatch):
    real = predictor.predict

    def fragile(records, explain=False):
        if any(r.id == "boom" for r in records):
            raise RuntimeError("simulated failure")
        return real(records, explain=explain)

    monkeypatch.setattr(predictor, "predict", fragile)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in ("a", "boom", "c")))
    s = predict_file(predictor, tmp_path / "in.jsonl", tmp_path / "o.parquet")
    assert (s.predicted, s.errors) == (2, 1)
    assert pq.read_table(tmp_path / "o.parquet").column("id").to_pylist() == ["a", "c"]
    error = json.loads((tmp_path / "errors.jsonl").read_text())
    assert error == {"line": 2, "error": "cannot be predicted (RuntimeError)"}  # never the message: it may quote values


def test_known_unit_conversion_gives_the_same_prediction(predictor):
    itemid, unit = creatinine(predictor)
    assert unit.lower() == "mg/dl"
    same = [PatientRecord.model_validate({"id": i, "labs": [{"test": itemid, "value": v, "unit": u}]})
            for i, (v, u) in enumerate([(2.0, "mg/dL"), (2.0 * 88.4, "umol/L"), (2.0 * 88.4, "µmol/L")])]
    out = predictor.predict(same)
    p = np.array([[o["probabilities"][n] for n in predictor.label_names] for o in out])
    np.testing.assert_allclose(p[1], p[0], atol=1e-5)
    np.testing.assert_allclose(p[2], p[0], atol=1e-5)
    assert not any(o["warnings"] for o in out)
    other = predictor.predict([PatientRecord.model_validate({"id": 9, "labs": [{"test": itemid, "value": 9.0}]})])
    assert max(abs(other[0]["probabilities"][n] - p[0][j]) for j, n in enumerate(predictor.label_names)) > 1e-4


def test_parquet_input_equals_jsonl_input(predictor, served, tmp_path):
    from medfuse.serving.raw_records import records_from_raw

    root, _ = served
    rows = records_from_raw(root / "raw", "mimic4", limit=12)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    records = [PatientRecord.model_validate(r).model_dump(mode="json") for r in rows]
    for r in records:
        r["note"] = r["note"] if isinstance(r["note"], list) else [r["note"]] if r["note"] else []
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "p.parquet")
    a = predict_file(predictor, tmp_path / "p.jsonl", tmp_path / "a.parquet")
    b = predict_file(predictor, tmp_path / "p.parquet", tmp_path / "b.parquet")
    assert a.predicted == b.predicted == 12 and a.errors == b.errors == 0
    ta, tb = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    for n in predictor.label_names:
        np.testing.assert_allclose(ta.column(f"{n}__prob").to_numpy(), tb.column(f"{n}__prob").to_numpy(), atol=1e-6)


def test_cohort_folder_input_equals_evaluate(predictor, served, tmp_path):
    root, _ = served
    s = predict_file(predictor, root / "cohort", tmp_path / "c.parquet", split="test", batch_size=20)
    got = pq.read_table(tmp_path / "c.parquet").to_pydict()
    want = pq.read_table(root / "run" / "predictions_test.parquet").to_pydict()
    assert s.predicted == len(want["hadm_id"]) and got["id"] == [str(h) for h in want["hadm_id"]]
    for n in predictor.label_names:
        assert np.abs(np.array(got[f"{n}__prob"]) - np.array(want[f"{n}__prob"])).max() < 1e-5
        assert got[f"{n}__true"] == want[f"{n}__true"]


def test_cli_export_info_predict_records(served, tmp_path):
    root, _ = served
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(root / "run"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "test macro_auprc" in result.output and (tmp_path / "m" / "README.md").is_file()
    card = (tmp_path / "m" / "README.md").read_text()
    for part in ("## Intended use", "## Training data", "## Metrics", "## Subgroups", "## Limitations"):
        assert part in card
    assert "| sex: F |" in card and "| modality: note_and_labs |" in card
    hypertension = next(line for line in card.splitlines() if line.startswith("| Hypertension |"))
    assert hypertension.count("(") == 3 and "–" in hypertension  # test AUPRC, AUROC and F1 with intervals
    result = runner.invoke(app, ["info", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["labels"]
    result = runner.invoke(app, ["records", str(root / "raw"), "--source", "mimic4", "--limit", "3",
                                 "--out", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--input", str(tmp_path / "p.jsonl"), "--out",
                                 str(tmp_path / "pred.parquet"), "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "pred.parquet").num_rows == 3
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--input", str(tmp_path / "p.jsonl"), "--out",
                                 str(tmp_path / "explained.parquet"), "--explain", "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "explained.parquet").to_pylist()
    for row in table:
        explanations = json.loads(row["explanations"])
        positive = {n.removesuffix("__pred") for n, v in row.items() if n.endswith("__pred") and v}
        assert set(explanations) == positive
        for e in explanations.values():
            assert e["labs"] or e["note_lines"]
    assert any(json.loads(row["explanations"]) for row in table)  # at least one positive was explained
    result = runner.invoke(app, ["predict", str(tmp_path), "--input", str(tmp_path / "p.jsonl"), "--out",
                                 str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "not a medfuse model bundle" in result.output
    assert not (tmp_path / "x.parquet").exists()
    # CSV by suffix, with the Parquet file's rows and columns; another suffix is refused before anything is read
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--input", str(tmp_path / "p.jsonl"), "--out",
                                 str(tmp_path / "pred.csv"), "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    import pyarrow.csv as pacsv

    csv, parquet = pacsv.read_csv(tmp_path / "pred.csv"), pq.read_table(tmp_path / "pred.parquet")
    assert csv.column_names == parquet.column_names and csv.num_rows == 3
    np.testing.assert_allclose(csv.column(2).to_numpy(), parquet.column(2).to_numpy(), rtol=1e-6)
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--input", str(tmp_path / "p.jsonl"), "--out",
                                 str(tmp_path / "pred.xlsx")])
    assert result.exit_code == 2 and "name the output .parquet or .csv" in result.output
    assert not list(tmp_path.glob("*pred.xlsx*"))
    # a refused record: the others are predicted, errors.jsonl lists it, and the exit code says so
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    (tmp_path / "q.jsonl").write_text("\n".join([*lines, '{"admittime": "2150-01-01"}']) + "\n")
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--input", str(tmp_path / "q.jsonl"), "--out",
                                 str(tmp_path / "q.parquet"), "--cache-dir", str(root / "cache")])
    assert result.exit_code == 3, result.output
    assert pq.read_table(tmp_path / "q.parquet").num_rows == 3 and (tmp_path / "errors.jsonl").is_file()
    # a device this machine lacks: one line, no traceback, nothing written
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["predict", str(tmp_path / "m"), "--input", str(tmp_path / "p.jsonl"),
                                     "--out", str(tmp_path / "gpu.parquet"), "--device", "cuda"])
        assert result.exit_code == 2 and "CUDA is not available" in result.output
        assert "Traceback" not in result.output and not (tmp_path / "gpu.parquet").exists()


def test_records_read_notes_kept_in_their_own_folder(served, tmp_path):
    """MIMIC-IV-Note ships apart from MIMIC-IV: `records --notes-dir` reads it as `prepare` does; without it the
    records carry labs only and the command says so."""
    import shutil

    root, _ = served
    raw, notes = tmp_path / "mimic-iv", tmp_path / "mimic-iv-note"
    shutil.copytree(root / "raw", raw)
    notes.mkdir()
    (raw / "note").rename(notes / "note")
    runner = CliRunner()
    whole = runner.invoke(app, ["records", str(root / "raw"), "--source", "mimic4", "--limit", "20",
                                "--out", str(tmp_path / "whole.jsonl")])
    apart = runner.invoke(app, ["records", str(raw), "--source", "mimic4", "--limit", "20", "--notes-dir", str(notes),
                                "--out", str(tmp_path / "apart.jsonl")])
    alone = runner.invoke(app, ["records", str(raw), "--source", "mimic4", "--limit", "20",
                                "--out", str(tmp_path / "alone.jsonl")])
    assert whole.exit_code == apart.exit_code == alone.exit_code == 0, (whole.output, apart.output, alone.output)
    read = {name: [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
            for name in ("whole", "apart", "alone")}
    assert read["apart"] == read["whole"] and sum("note" in r for r in read["whole"]) > 10
    assert not any("note" in r for r in read["alone"])
    assert "no notes table" in alone.output and "--notes-dir" in alone.output
    assert "no notes table" not in apart.output
