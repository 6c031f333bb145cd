"""The comparison's tuning grid, its configuration, and parallel trials (the CLI run is in tests/runs/test_stages.py)."""

from __future__ import annotations

import json

import pytest

from medfuse.config import ConfigError, load_config
from medfuse.evaluation.comparison import (
    HEADLINE,
    best_baseline,
    comparison_markdown,
    delta_text,
    settings_text,
)
from medfuse.runs.compare import (
    PREDICTIONS_FILE,
    compare,
    save_predictions,
    slug,
    tuning_grid,
    variants,
    worker_count,
)


def test_grid_is_every_combination_first_values_first():
    grid = {"dropout": [0.1, 0.3], "modality_dropout": [0.15, 0.3], "lr": [1e-3]}
    trials = tuning_grid(grid, "medfuse")
    assert len(trials) == 4 and trials[0] == {"dropout": 0.1, "modality_dropout": 0.15, "lr": 1e-3}
    assert {(t["dropout"], t["modality_dropout"]) for t in trials} == {(0.1, 0.15), (0.1, 0.3), (0.3, 0.15), (0.3, 0.3)}


@pytest.mark.parametrize("kind", ["labs_only", "notes_only"])
def test_single_modality_models_skip_modality_dropout(kind):
    assert tuning_grid({"dropout": [0.1, 0.3], "modality_dropout": [0.15, 0.3]}, kind) == [
        {"dropout": 0.1}, {"dropout": 0.3}]


def test_empty_grid_is_one_untuned_trial():
    assert tuning_grid({}, "concat") == [{}]
    assert settings_text({}) == "defaults" and settings_text({"dropout": 0.3, "d": 64}) == "dropout=0.3, d=64"


def test_every_neural_row_names_its_kind():
    rows = variants([0.0, 0.1, 0.5])
    assert all(v.classical or v.train["kind"] for v in rows)
    assert [v.name for v in rows if v.group == "lambda sweep"] == ["MEDFuse lambda=0.5"]


def test_grid_config_replaces_the_default_whole_and_is_validated():
    assert load_config().compare.grid == {"dropout": [0.1, 0.3], "modality_dropout": [0.15, 0.3]}
    assert load_config(overrides={"compare": {"grid": {}}}).compare.grid == {}
    assert load_config(overrides={"compare": {"grid": {"lr": [1e-3, 3e-4]}}}).compare.grid == {"lr": [1e-3, 3e-4]}
    for bad, message in (({"seed": [1, 2]}, "not a tunable train setting"), ({"dropout": [1.5]}, "less than 1"),
                         ({"dropout": []}, "at least one value")):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides={"compare": {"grid": bad}})


def test_slug_names_a_folder():
    assert slug("Concatenation + MLP") == "concatenation-mlp" and slug("MEDFuse lambda=0.01") == "medfuse-lambda-0-01"


def _row(name: str, group: str, auprc: float, vs: dict | None = None) -> dict:
    summary = {m: {"mean": auprc - 0.1 if m.endswith("f1") else auprc, "std": 0.002} for m in HEADLINE}
    row = {"name": name, "group": group, "train": {}, "classical": "", "runs": [], "tuning": None,
           "summary": summary, "bootstrap_seed0": {m: {"value": s["mean"], "low": s["mean"] - 0.03,
                                                       "high": s["mean"] + 0.03} for m, s in summary.items()}}
    if vs is not None:
        row["vs_medfuse"] = vs
    return row


def _vs(diff: float, p: float) -> dict:
    return {m: {"diff": diff, "low": diff - 0.02, "high": diff + 0.02, "p_one_sided": p, "n_valid": 200}
            for m in ("macro_auprc", "macro_f1")}


def test_markdown_shows_the_paired_differences_and_the_best_baseline():
    table = {"n_resamples": 200, "seeds": [0, 1], "models": [
        _row("LightGBM (labs)", "labs only", 0.60, _vs(0.14, 0.005)),
        _row("Concatenation + MLP", "fusion", 0.74, _vs(0.004, 0.31)),
        _row("MEDFuse", "MEDFuse", 0.743),
        _row("MEDFuse w/o MI loss", "ablation", 0.75, _vs(-0.007, 0.8))]}
    assert best_baseline(table)["name"] == "Concatenation + MLP"  # ablations are not baselines
    md = comparison_markdown(table)
    assert "Δ macro-AUPRC, MEDFuse − row [95% CI], p" in md.splitlines()[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| +0.140 [+0.120, +0.160], p = 0.005 |" in lines["LightGBM (labs)"]
    assert "| vs Concatenation + MLP: +0.004 [-0.016, +0.024], p = 0.310 |" in lines["MEDFuse"]
    assert "| -0.007 [-0.027, +0.013], p = 0.800 |" in lines["MEDFuse w/o MI loss"]
    assert "200 resamples" in md and "mean ± sd over 2 training seeds (0, 1); bracketed: seed 0's" in md
    for r in table["models"]:
        del r["bootstrap_seed0"]["macro_f1"]
        r.pop("vs_medfuse", None)
    plain = comparison_markdown(table)  # a table without MEDFuse differences has no Δ columns
    assert "Δ" not in plain and plain.splitlines()[0].count("|") == 8  # model, group, 4 metrics, tuning
    assert "| 0.500 ± 0.002 | 0.500 ± 0.002 [0.470, 0.530] |" in plain  # no interval for the missing macro-F1 one
    assert delta_text(None) == "–" and delta_text({"diff": 0.1, "low": None}) == "–"


def test_saved_predictions_hold_both_splits(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import pyarrow.parquet as pq

    data = SimpleNamespace(hadm_ids=np.arange(10) + 100, subject_ids=np.arange(10) // 2, label_names=["a", "b"],
                           y=(np.arange(20).reshape(10, 2) % 3 == 0).astype(np.float32))
    prob = np.linspace(0, 1, 20).reshape(10, 2)
    save_predictions(tmp_path / "m" / PREDICTIONS_FILE, data, prob, np.array([0.5, 0.2]),
                     (np.array([1, 2]), np.array([7, 8, 9])))
    t = pq.read_table(tmp_path / "m" / PREDICTIONS_FILE).to_pydict()
    assert t["split"] == ["val"] * 2 + ["test"] * 3 and t["hadm_id"] == [101, 102, 107, 108, 109]
    assert t["b__prob"] == prob[[1, 2, 7, 8, 9], 1].tolist()
    assert t["b__pred"] == (prob[[1, 2, 7, 8, 9], 1] >= 0.2).tolist() and t["a__true"] == [0, 0, 0, 0, 1]


def _without_seconds(x):
    """``x`` with every ``seconds`` entry removed (wall times differ between runs)."""
    if isinstance(x, dict):
        return {k: _without_seconds(v) for k, v in x.items() if k != "seconds"}
    return [_without_seconds(v) for v in x] if isinstance(x, list) else x


def test_parallel_trials_give_the_sequential_table(tmp_path, tiny_bert):
    """Two worker processes and one process train the same jobs to the same numbers, and report progress."""
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate

    generate(tmp_path / "raw", "mimic4", 200, seed=5)
    cfg = load_config(overrides={"prepare": {"source": "mimic4"}})
    prepare_cohort(tmp_path / "raw", tmp_path / "cohort", cfg.prepare)
    overrides = {"labs": {"epochs": 1, "d_model": 32, "encoder_layers": 2},
                 "notes": {"model": str(tiny_bert), "cache": False}, "train": {"epochs": 2, "device": "cpu"},
                 "compare": {"seeds": [0, 1], "n_resamples": 20, "grid": {"dropout": [0.1, 0.3]},
                             "models": ["TF-IDF + logistic regression (notes)", "Concatenation + MLP", "MEDFuse",
                                        "MEDFuse w/o Kronecker term"]}}
    tables, reports = {}, {}
    for workers in (1, 2):
        overrides["compare"]["workers"] = workers
        reports[workers] = []
        compare(tmp_path / "cohort", tmp_path / f"w{workers}", load_config(overrides=overrides),
                progress=lambda stage, f, info="", log=reports[workers]: log.append((stage, f, info)))
        tables[workers] = json.loads((tmp_path / f"w{workers}" / "compare.json").read_text())
        overrides["train"].update(labs_run=str(tmp_path / "w1" / "labs"), notes_run=str(tmp_path / "w1" / "notes"))
    sequential, parallel = (_without_seconds(tables[w]["models"]) for w in (1, 2))
    assert parallel == sequential
    assert [r["name"] for r in parallel] == ["TF-IDF + logistic regression (notes)", "Concatenation + MLP", "MEDFuse",
                                             "MEDFuse w/o Kronecker term"]
    assert 0.3 < parallel[2]["summary"]["macro_auprc"]["mean"] < 1 and len(parallel[2]["runs"]) == 2
    for log in reports.values():  # 2 seeds x 4 rows + 1 extra grid point x 2 tuned rows = 10 jobs, each finished once
        ends = [(stage, info) for stage, f, info in log if stage.startswith("compare") and f == 1.0]
        assert sorted(stage for stage, _ in ends) == sorted(f"compare {i}/10" for i in range(1, 11))
        assert all("val macro-AUPRC 0." in info for _, info in ends)
    trained = [info for stage, f, info in reports[2] if stage.startswith("compare") and 0 < f < 1]
    assert any(info.startswith("epoch") for info in trained)  # the workers' training progress is relayed
    order = [(stage, f) for stage, f, _ in reports[2] if stage.startswith("compare") and f in (0.0, 1.0)]
    assert order.index(("compare 2/10", 0.0)) < order.index(("compare 1/10", 1.0))  # two jobs ran at once


def test_worker_count():
    import torch

    assert worker_count(3, torch.device("cpu")) == 3 and worker_count(1, torch.device("cpu")) == 1
    assert worker_count(0, torch.device("cpu")) >= 1  # one per usable core
    assert worker_count(4, torch.device("cuda")) == 1  # one GPU: one training at a time


def test_finetuned_notes_add_the_papers_baseline_and_keep_the_frozen_rows(tmp_path, tiny_bert):
    """With notes.finetune, compare fine-tunes the note model, runs MEDFuse on its vectors, adds the
    fine-tuned model's own head as a baseline and keeps MEDFuse on the frozen model's vectors beside it."""
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate

    generate(tmp_path / "raw", "mimic4", 200, seed=6)
    cfg = load_config(overrides={"prepare": {"source": "mimic4"}})
    prepare_cohort(tmp_path / "raw", tmp_path / "cohort", cfg.prepare)
    rows = ["Fine-tuned language model (notes)", "MEDFuse", "MEDFuse (frozen note model)"]
    cfg = load_config(overrides={
        "labs": {"epochs": 1, "d_model": 32, "encoder_layers": 2},
        "notes": {"model": str(tiny_bert), "cache": False, "finetune": True, "epochs": 1, "train_batch_size": 16},
        "train": {"epochs": 2, "device": "cpu"},
        "compare": {"seeds": [0], "n_resamples": 20, "grid": {}, "models": rows, "workers": 1}})
    table = compare(tmp_path / "cohort", tmp_path / "cmp", cfg)
    assert [r["name"] for r in table["models"]] == rows
    assert json.loads((tmp_path / "cmp" / "notes" / "embed_config.json").read_text())["adapter"]
    assert json.loads((tmp_path / "cmp" / "notes-frozen" / "embed_config.json").read_text())["adapter"] is None
    finetuned, medfuse, frozen = (r["summary"]["macro_auprc"]["mean"] for r in table["models"])
    assert 0 < finetuned < 1 and 0 < medfuse < 1 and 0 < frozen < 1 and medfuse != frozen
    assert "vs_medfuse" in table["models"][0] and "vs_medfuse" in table["models"][2]
