"""The new-patient path agrees with ``evaluate`` (no training/serving skew), and a bundle stands alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfuse.data import Cohort
from medfuse.serving.predict import Predictor
from medfuse.serving.raw_records import records_from_raw
from medfuse.serving.records import PatientRecord


def max_difference_to_evaluate(run, model, raw, source, hours_before, cache) -> tuple[float, int]:
    """Predict the test split's raw rows through the bundle; the largest |p - evaluate's p|.

    The line-embedding cache that training filled is used: a line recomputed in another batch differs by
    float rounding (about 1e-7) and that alone would move probabilities by about 1e-4. Every line must be a
    cache hit, which also shows that the records' note and lab texts are the training texts.
    """
    truth = pq.read_table(run / "predictions_test.parquet").to_pydict()
    ids = truth["hadm_id"]
    records = [PatientRecord.model_validate(r) for r in records_from_raw(raw, source, ids, hours_before)]
    assert sorted(r.id for r in records) == sorted(ids)
    predictor = Predictor.load(model, cache_dir=cache)
    results = {r["id"]: r for r in predictor.predict(records)}
    assert predictor.embedder.last_stats.get("computed", 0) == 0
    labels = [k.removesuffix("__prob") for k in truth if k.endswith("__prob")]
    diff = max(abs(results[h]["probabilities"][n] - truth[f"{n}__prob"][i])
               for i, h in enumerate(ids) for n in labels)
    return diff, len(ids)


def test_bundle_predictions_match_evaluate_on_synthetic_raw_rows(served):
    root, cfg = served
    diff, n = max_difference_to_evaluate(root / "run", root / "model", root / "raw", "mimic4",
                                         cfg.prepare.lab_hours_before_admission, root / "cache")
    print(f"synthetic MIMIC-IV test split: {n} admissions, max |bundle - evaluate| = {diff:.2e}")
    assert n > 30 and diff < 1e-5


@pytest.mark.parametrize("source", ["mimic3", "mimic4"])
def test_bundle_predictions_match_evaluate_on_real_demo(source, request, served, tmp_path):
    from medfuse.runs.export import export_bundle
    from medfuse.runs.stages import train_run

    _, cfg = served
    raw, cohort = request.getfixturevalue(f"{source}_demo"), request.getfixturevalue(f"{source}_cohort")
    train_run(cohort, tmp_path / "run", cfg)
    export_bundle(tmp_path / "run", tmp_path / "model")
    diff, n = max_difference_to_evaluate(tmp_path / "run", tmp_path / "model", raw, source,
                                         cfg.prepare.lab_hours_before_admission, cfg.notes.cache_dir)
    print(f"real {source} demo test split: {n} admissions, max |bundle - evaluate| = {diff:.2e}")
    assert n >= 20 and diff < 1e-5


def test_bundle_predicts_without_its_cohort_and_runs(served, tmp_path):
    root, _ = served
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(root / "model", copy)
    away = tmp_path / "away"
    away.mkdir()
    for name in ("cohort", "run"):
        shutil.move(root / name, away / name)
    try:
        bundle = json.loads((copy / "bundle.json").read_text())
        assert not any(name.endswith((".pkl", ".pt", ".bin", ".pickle")) for name in bundle["files"])
        predictor = Predictor.load(copy)
        record = PatientRecord.model_validate({
            "id": "new-1", "admittime": "2150-03-01T08:00:00",
            "labs": [{"test": "Creatinine", "value": "2.9", "unit": "mg/dL", "time": "2150-03-01T09:00:00"},
                     {"test": 50912, "value": ">12", "unit": "mg/dL"}],
            "note": "Chief Complaint:\nshortness of breath\n\nHistory of Present Illness:\nworse dyspnea.\n"})
        out = predictor.predict([record, PatientRecord(id=7)])
        assert [o["id"] for o in out] == ["new-1", 7]
        assert set(out[0]["probabilities"]) == set(bundle["labels"])
        assert all(0.0 <= p <= 1.0 for o in out for p in o["probabilities"].values())
        assert out[0]["probabilities"] != out[1]["probabilities"]
        assert out[0]["model_version"] == bundle["model_version"]
    finally:
        for name in ("cohort", "run"):
            shutil.move(away / name, root / name)


def test_bundle_refuses_a_modified_file(served, tmp_path):
    from medfuse.serving.bundle import BundleError

    root, _ = served
    copy = tmp_path / "model"
    shutil.copytree(root / "model", copy)
    with (copy / "fusion" / "thresholds.json").open("a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="thresholds.json: content differs"):
        Predictor.load(copy)


def test_a_bundle_of_the_old_format_is_refused_by_its_version(served, tmp_path):
    """Format v1 (medfuse 0.1) kept the note statistics beside the notes and no input sizes: refused, named."""
    import json

    from medfuse.serving.bundle import BundleError

    root, _ = served
    copy = tmp_path / "model"
    shutil.copytree(root / "model", copy)
    meta = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**meta, "format_version": 1, "medfuse_version": "0.1.0"}))
    with pytest.raises(BundleError, match=r"medfuse-bundle format v1 \(medfuse 0.1.0\); this medfuse reads v2"):
        Predictor.load(copy)


def test_a_bundle_loads_from_its_own_files_alone(served):
    """The fusion model describes its inputs: loading builds the network from model_config.json, no dummy record."""
    import json

    root, _ = served
    config = json.loads((root / "model" / "fusion" / "model_config.json").read_text())
    assert set(config) == {"train", "inputs"} and config["inputs"]["n_labels"] == len(Cohort(root / "cohort").label_names)
    model = Predictor.load(root / "model")
    assert model.net.fusion is not None and model._con is None  # no record went through the transforms


def test_cohort_in_memory_reads_like_the_folder(served):
    root, _ = served
    disk = Cohort(root / "cohort")
    memory = Cohort.from_tables({n: disk.table(n) for n in ("admissions", "labs", "lab_tests", "splits", "labels")},
                                disk.manifest)
    np.testing.assert_array_equal(memory.lab_values("test", "mean"), disk.lab_values("test", "mean"))
    np.testing.assert_array_equal(memory.labels("val"), disk.labels("val"))


def test_bundle_carries_a_lora_adapter_of_a_llama_model(served, tiny_llama, tmp_path):
    """``notes.finetune``: one train command fine-tunes a Llama-style note model with LoRA, embeds with the
    adapter and trains fusion; the bundle holds the adapter and head, and its predictions equal evaluate's."""
    from medfuse.runs.export import export_bundle
    from medfuse.runs.stages import train_run

    root, cfg = served
    notes_cfg = cfg.notes.model_copy(update={"model": str(tiny_llama), "finetune": True, "epochs": 1,
                                             "train_batch_size": 16, "max_length": 64})
    run_cfg = cfg.model_copy(update={"notes": notes_cfg, "train": cfg.train.model_copy(
        update={"labs_run": str(root / "run" / "labs")})})
    train_run(root / "cohort", tmp_path / "run", run_cfg)
    embedded = json.loads((tmp_path / "run" / "notes" / "embed_config.json").read_text())
    # the adapter embeds the unit it was fine-tuned on
    assert embedded["adapter"] == str((tmp_path / "run" / "finetune").resolve()) and embedded["unit"] == notes_cfg.unit
    finetuned = json.loads((tmp_path / "run" / "finetune" / "finetune_config.json").read_text())
    assert finetuned["unit"] == notes_cfg.unit
    export_bundle(tmp_path / "run", tmp_path / "model")
    files = json.loads((tmp_path / "model" / "bundle.json").read_text())["files"]
    assert "notes/finetune/adapter/adapter_model.safetensors" in files and "notes/finetune/head.safetensors" in files
    diff, n = max_difference_to_evaluate(tmp_path / "run", tmp_path / "model", root / "raw", "mimic4",
                                         cfg.prepare.lab_hours_before_admission, cfg.notes.cache_dir)
    print(f"LoRA tiny Llama: {n} admissions, max |bundle - evaluate| = {diff:.2e}")
    assert diff < 1e-5
