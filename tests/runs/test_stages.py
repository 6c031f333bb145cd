"""End to end on a small synthetic hospital: synth -> prepare -> train -> evaluate -> compare -> report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.data import Cohort
from medfuse.evaluation.comparison import best_baseline
from medfuse.runs.compare import slug
from tiny_config import tiny_stages


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate

    root = tmp_path_factory.mktemp("pipeline")
    generate(root / "raw", "mimic4", 500, seed=3)
    prepare_cohort(root / "raw", root / "cohort", load_config(overrides={"prepare": {"source": "mimic4"}}).prepare)
    return root / "cohort"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, tiny_bert):
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(tiny_stages(tiny_bert) + """
[train]
epochs = 4
device = "cpu"
[evaluate]
n_resamples = 50
[compare]
seeds = [0, 1]
n_resamples = 20
models = ["LightGBM (labs)", "TF-IDF + logistic regression (notes)", "Concatenation + MLP", "MEDFuse",
          "MEDFuse w/o Kronecker term"]
[compare.grid]
dropout = [0.1, 0.3]
""")
    return path


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_train_evaluate_compare_report(cohort, config_file, tmp_path):
    run = tmp_path / "run"
    invoke("train", cohort, "--out", run, "--config", config_file)
    for name in ("model.safetensors", "checkpoint.safetensors", "history.json", "thresholds.json", "run.json",
                 "labs/model.safetensors", "notes/note_embeddings.parquet"):
        assert (run / name).exists(), name
    history = json.loads((run / "history.json").read_text())
    assert 1 <= len(history) <= 4 and all(np.isfinite(h["train_bce"]) for h in history)

    invoke("evaluate", run, "--split", "test", "--config", config_file)
    metrics = json.loads((run / "metrics_test.json").read_text())
    preds = pq.read_table(run / "predictions_test.parquet")
    n_test = json.loads((cohort / "manifest.json").read_text())["split_sizes"]["test"]["admissions"]
    assert metrics["n"] == preds.num_rows == n_test
    tuned = metrics["at_tuned_thresholds"]
    assert 0.5 < tuned["macro"]["auroc"] <= 1.0
    ci = tuned["bootstrap"]["macro_f1"]
    assert ci["low"] <= tuned["macro"]["f1"] <= ci["high"]
    assert metrics["threshold_rule"]["rule"] == "plateau"
    subgroups = metrics["subgroups"]
    assert set(subgroups["modality"]) == {"without_note", "without_labs", "without_any_text", "note_and_labs"}
    assert {"sex", "age_band"} <= set(subgroups)
    assert ("race" in subgroups) != ("race" in metrics["subgroups_not_available"])
    for family in ("sex", "age_band"):
        assert sum(g["n"] for g in subgroups[family].values()) == metrics["n"]
        for g in subgroups[family].values():
            assert g["too_small"] == (g["n_patients"] < 20) or g["reason"].startswith("no label")
    recon = json.loads((run / "labs" / "reconstruction.json").read_text())
    assert recon["hidden_values"] > 100 and set(recon["overall"]) == {"MLTM", "training mean"}
    assert 0.5 < recon["overall"]["training mean"] < 2.0  # about 1 by construction

    out = tmp_path / "compare"
    invoke("compare", cohort, "--out", out, "--config", config_file, "--labs-run", run / "labs",
           "--notes-run", run / "notes")
    table = json.loads((out / "compare.json").read_text())
    rows = {m["name"]: m for m in table["models"]}
    assert list(rows) == ["LightGBM (labs)", "TF-IDF + logistic regression (notes)", "Concatenation + MLP",
                          "MEDFuse", "MEDFuse w/o Kronecker term"]
    for m in table["models"]:
        assert len(m["runs"]) == 2 and 0 <= m["summary"]["macro_auprc"]["mean"] <= 1
    # every neural row is tuned on validation with the first seed; the ablation reuses MEDFuse's choice
    assert rows["LightGBM (labs)"]["tuning"] is None
    for name in ("Concatenation + MLP", "MEDFuse"):
        t = rows[name]["tuning"]
        assert [x["settings"] for x in t["trials"]] == [{"dropout": 0.1}, {"dropout": 0.3}]
        assert t["settings"] == max(t["trials"], key=lambda x: x["val_macro_auprc"])["settings"]
        assert t["inherited_from"] is None
        runs = sorted(p.name for p in (out / "models" / slug(name)).iterdir() if p.is_dir())
        assert runs == ["seed1", "tune0", "tune1"]  # the chosen trial is seed 0's run
    ablation = rows["MEDFuse w/o Kronecker term"]["tuning"]
    assert ablation["inherited_from"] == "MEDFuse" and ablation["trials"] == []
    assert ablation["settings"] == rows["MEDFuse"]["tuning"]["settings"]
    assert table["threshold_rule"]["rule"] == "plateau"
    for name, m in rows.items():  # paired bootstrap of MEDFuse minus every other row, on its first seed
        assert ("vs_medfuse" in m) == (name != "MEDFuse")
        assert (out / "models" / slug(name) / "predictions_seed0.parquet").exists()
    vs = rows["LightGBM (labs)"]["vs_medfuse"]["macro_auprc"]
    assert vs["low"] <= vs["diff"] <= vs["high"] and 0 < vs["p_one_sided"] <= 1 and vs["n_valid"] == 20
    seed0 = pq.read_table(out / "models" / slug("MEDFuse") / "predictions_seed0.parquet")
    assert set(seed0.column("split").to_pylist()) == {"val", "test"}
    md = (out / "compare.md").read_text()
    assert "| LightGBM (labs) |" in md and "tuned on validation" in md and "(as MEDFuse) |" in md
    assert "Δ macro-AUPRC, MEDFuse − row" in md and f"vs {best_baseline(table)['name']}: " in md

    result = invoke("report", run, "--compare", out)
    page = (run / "report.html").read_text()
    assert result.output.strip().endswith("report.html")
    for heading in ("Cohort", "Operating points", "Subgroups", "Baselines and ablations",
                    "ROC and precision-recall curves", "Calibration", "Explained test patients", "Training",
                    "Masked lab-test modelling",
                    "Configuration and versions"):
        assert heading in page
    assert "tuned on validation (plateau, tolerance 0.08)" in page and "0.5 for every label" in page
    assert "alt=\"cohort flow\"" in page and "Δ macro-AUPRC, MEDFuse − row" in page
    census = Cohort(cohort).manifest["notes_census"]  # every note header of the cohort, and what was done with it
    assert "<h2>Note headers</h2>" in page and f"{census['kept']:,} headers kept" in page
    assert "labs: the whole stay" in page
    assert page.count("data:image/png;base64,") >= 6 and "src=\"http" not in page
    assert page.count("<h3>Admission ") == 3 and "Not available" not in page


def test_commands_refuse_what_is_not_a_cohort_or_run(tmp_path):
    for args in (["train", tmp_path, "--out", tmp_path / "r"], ["evaluate", tmp_path], ["report", tmp_path]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 2 and str(tmp_path) in " ".join(result.output.split())


def test_demo_command_runs_every_stage(config_file, tmp_path):
    cfg = tmp_path / "demo.toml"
    cfg.write_text(config_file.read_text().replace("seeds = [0, 1]", "seeds = [0]")
                   + "\n[synth]\nadmissions = 300\nformat = \"mimic3\"\n")
    result = invoke("demo", "--out", tmp_path / "demo", "--config", cfg)
    assert result.output.strip().endswith("report.html")
    assert "macro-AUPRC" in result.output and "LightGBM (labs)" in result.output
    for path in ("raw/LABEVENTS.csv.gz", "cohort/manifest.json", "run/metrics_test.json", "compare/compare.json",
                 "run/report.html"):
        assert (tmp_path / "demo" / path).exists(), path
