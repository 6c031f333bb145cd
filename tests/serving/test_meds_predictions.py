"""``medfuse predict --format meds``: a MEDS dataset in, MEDS-Evaluation prediction files out, one per label.

The served model was trained on the synthetic hospital of seed 11 (mimic4 CSVs); the same hospital written
as MEDS (``generate_meds``, notes as ``text_value`` events) is predicted through the bundle. The files have
the prediction schema, their truth is the cohort's label matrix, and the macro AUPRC and F1 computed from
them alone equal medfuse's own metrics (``compute_metrics`` on ``evaluate``'s probabilities) on the same
admissions.
"""

from __future__ import annotations

import json

import meds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import average_precision_score, f1_score
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.data.synth.meds import generate_meds
from medfuse.evaluation.metrics import compute_metrics
from medfuse.serving.batch import predict_file
from medfuse.serving.predict import Predictor
from tiny_config import tiny_stages

SCHEMA = pa.schema([("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")),
                    ("boolean_value", pa.bool_()), ("predicted_boolean_value", pa.bool_()),
                    ("predicted_boolean_probability", pa.float64())])
"""MEDS-Evaluation's binary prediction schema, as its README gives it."""


@pytest.fixture(scope="module")
def predicted(served, tmp_path_factory):
    root, _ = served
    tmp = tmp_path_factory.mktemp("meds_predictions")
    generate_meds(tmp / "meds", 300, seed=11)
    predictor = Predictor.load(root / "model", cache_dir=root / "cache")  # the lines training embedded
    summary = predict_file(predictor, tmp / "meds", tmp / "out", format="meds", batch_size=64)
    files = {n: pq.read_table(tmp / "out" / f"{n}.parquet") for n in predictor.label_names}
    return root, tmp, predictor, summary, files


def _keyed(root, split=None):
    """The cohort's admissions keyed by (subject_id, discharge time): the prediction time of a whole-stay model."""
    adm = pq.read_table(root / "cohort" / "admissions.parquet").to_pylist()
    labels = pq.read_table(root / "cohort" / "labels.parquet").to_pylist()
    splits = pq.read_table(root / "cohort" / "splits.parquet").column("split").to_pylist()
    return {(a["subject_id"], a["dischtime"]): (a["hadm_id"], lab) for a, lab, s in zip(adm, labels, splits, strict=True)
            if split in (None, s)}


def test_one_file_per_label_in_the_prediction_schema(predicted):
    root, tmp, predictor, summary, files = predicted
    assert sorted(p.name for p in (tmp / "out").iterdir()) == sorted(f"{n}.parquet" for n in predictor.label_names)
    assert summary.errors == 0 and summary.predicted == summary.read == 300
    for table in files.values():
        assert table.schema.equals(SCHEMA) and table.num_rows == 300
        known = table.filter(pc.is_valid(table.column("boolean_value")))
        meds.LabelSchema.validate(known.select(["subject_id", "prediction_time", "boolean_value"]))
        p = table.column("predicted_boolean_probability").to_numpy()
        assert np.all((p >= 0) & (p <= 1))
    bundle = json.loads((root / "model" / "bundle.json").read_text())
    assert bundle["transform"]["window_hours"] == 0  # prediction_time = discharge (docs/meds.md)


def test_truth_is_the_cohorts_labels(predicted):
    root, _, predictor, _, files = predicted
    cohort = _keyed(root)
    first = files[predictor.label_names[0]]
    keys = list(zip(first.column("subject_id").to_pylist(), first.column("prediction_time").to_pylist(), strict=True))
    assert len(set(keys)) == len(keys)
    in_cohort = [k in cohort for k in keys]
    assert sum(in_cohort) == len(cohort) > 250  # every cohort admission, by subject and prediction time
    for name, table in files.items():
        truth = table.column("boolean_value").to_pylist()
        for key, t, inside in zip(keys, truth, in_cohort, strict=True):
            # an admission prepare dropped (no usable diagnosis) has no known truth
            assert t == bool(cohort[key][1][name]) if inside else t is None, (name, key)


def test_metrics_from_the_files_equal_medfuses(predicted):
    root, _, predictor, _, files = predicted
    test = _keyed(root, "test")
    evaluated = pq.read_table(root / "run" / "predictions_test.parquet").to_pydict()
    row_of = {h: i for i, h in enumerate(evaluated["hadm_id"])}
    names = predictor.label_names
    auprc, f1, y, prob, hadm = [], [], [], [], []
    for name in names:
        t = files[name].to_pydict()
        keep = [i for i, k in enumerate(zip(t["subject_id"], t["prediction_time"], strict=True)) if k in test]
        hadm = [test[(t["subject_id"][i], t["prediction_time"][i])][0] for i in keep]
        truth = np.array([t["boolean_value"][i] for i in keep])
        auprc.append(average_precision_score(truth, [t["predicted_boolean_probability"][i] for i in keep]))
        f1.append(f1_score(truth, [t["predicted_boolean_value"][i] for i in keep], zero_division=0))
        y.append(truth)
        prob.append([evaluated[f"{name}__prob"][row_of[h]] for h in hadm])
    assert sorted(hadm) == sorted(evaluated["hadm_id"]) and len(hadm) > 30
    files_prob = np.array([[files[n].column("predicted_boolean_probability")[i].as_py() for n in names] for i in keep])
    assert np.abs(files_prob - np.stack(prob, 1)).max() < 1e-5  # the MEDS path gives evaluate's probabilities
    ours = compute_metrics(np.stack(y, 1).astype(np.int8), np.stack(prob, 1), predictor.bundle["thresholds"], names)
    print(f"test split, {len(hadm)} admissions: macro AUPRC {np.mean(auprc):.6f} (files) vs "
          f"{ours['macro']['auprc']:.6f}, macro F1 {np.mean(f1):.6f} vs {ours['macro']['f1']:.6f}")
    assert np.mean(auprc) == pytest.approx(ours["macro"]["auprc"], abs=1e-9)
    assert np.mean(f1) == pytest.approx(ours["macro"]["f1"], abs=1e-9)


def test_cli_meds_input_errors_and_atomic_output(predicted, tmp_path):
    root, _, predictor, _, _ = predicted
    runner = CliRunner()
    meds_dir = tmp_path / "meds"
    generate_meds(meds_dir, 40, seed=12)
    # one admission without a discharge: it is reported in errors.jsonl, the others are predicted; another
    # without diagnoses: predicted, its truth unknown
    data = min((meds_dir / "data").rglob("*.parquet"))
    events = pq.read_table(data)
    is_end = pc.starts_with(events.column("code"), "HOSPITAL_DISCHARGE//")
    dropped, undiagnosed = events.filter(is_end).column("hadm_id").to_pylist()[:2]
    end = events.filter(pc.and_(is_end, pc.equal(events.column("hadm_id"), undiagnosed))).to_pylist()[0]
    gone = pc.or_(pc.and_(is_end, pc.equal(events.column("hadm_id"), dropped)),
                  pc.and_(pc.starts_with(events.column("code"), "DIAGNOSIS//"),
                          pc.equal(events.column("hadm_id"), undiagnosed)))
    pq.write_table(events.filter(pc.invert(gone)), data)
    out = tmp_path / "pred"
    args = ["predict", str(root / "model"), "--input", str(meds_dir), "--format", "meds", "--out", str(out),
            "--cache-dir", str(root / "cache")]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output  # written, one admission refused
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert errors == [{"hadm_id": dropped, "error": "admission not usable: missing_time"}]
    for name in predictor.label_names:
        rows = pq.read_table(out / f"{name}.parquet").to_pylist()
        assert len(rows) == 39 and sum(r["boolean_value"] is None for r in rows) == 1
        unknown = next(r for r in rows if r["boolean_value"] is None)
        assert (unknown["subject_id"], unknown["prediction_time"]) == (end["subject_id"], end["time"])
    # the plain Parquet output from the same MEDS input carries the known labels as <label>__true
    result = runner.invoke(app, [*args[:4], "--out", str(tmp_path / "p.parquet"), "--cache-dir", str(root / "cache")])
    assert result.exit_code == 3, result.output
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.num_rows == 39 and table.column("id").to_pylist().count(str(undiagnosed)) == 1
    for name in predictor.label_names:
        truth = dict(zip(table.column("id").to_pylist(), table.column(f"{name}__true").to_pylist(), strict=True))
        assert truth.pop(str(undiagnosed)) is None and None not in truth.values()
    # refused before anything is written: not MEDS input, explanations, a folder of something else
    for extra, message in ((["--input", str(root / "cohort")], "needs a MEDS dataset"),
                           (["--explain"], "--explain needs the Parquet output")):
        result = runner.invoke(app, [*args, *extra, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output and not (tmp_path / "x").exists()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "keep")])
    assert result.exit_code == 2 and "not a folder of MEDS predictions" in result.output
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_records_from_meds(predicted, tmp_path):
    root, tmp, _, _, _ = predicted
    result = CliRunner().invoke(app, ["records", str(tmp / "meds"), "--source", "meds", "--limit", "5",
                                      "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    csv = CliRunner().invoke(app, ["records", str(root / "raw"), "--source", "mimic4", "--limit", "5",
                                   "--out", str(tmp_path / "c.jsonl")])
    assert csv.exit_code == 0
    same = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in same]
    assert [len(r["labs"]) for r in rows] == [len(r["labs"]) for r in same]
    assert [r.get("note") for r in rows] == [r.get("note") for r in same]


def test_demo_runs_on_a_meds_hospital(tiny_bert, tmp_path):
    """``medfuse demo`` with ``synth.format = "meds"``: generate_meds, prepare --source meds, ..., new patients."""
    cfg = tmp_path / "demo.toml"
    cfg.write_text("""
[synth]
admissions = 300
format = "meds"
""" + tiny_stages(tiny_bert) + """
[train]
epochs = 2
device = "cpu"
[evaluate]
n_resamples = 20
[compare]
seeds = [0]
n_resamples = 10
models = ["LightGBM (labs)", "MEDFuse"]
[compare.grid]
dropout = [0.1]
""")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "demo" / "cohort" / "manifest.json").read_text())
    assert manifest["source"] == "meds" and manifest["notes_status"] == "present"
    assert (tmp_path / "demo" / "new_patients.jsonl").read_text().count("\n") == 3
    assert "new patients, predicted through the model bundle" in result.output
    # the bundle keeps the [prepare.meds] mapping its cohort was read with, for predict --format meds
    from medfuse.config import MedsConfig

    predictor = Predictor.load(tmp_path / "demo" / "run" / "model", cache_dir=False)
    assert predictor.bundle["transform"]["meds"] == manifest["config"]["meds"]
    assert predictor.meds_config() == MedsConfig.model_validate(manifest["config"]["meds"])
