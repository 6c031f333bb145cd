"""The comparison's tuning grid and its configuration (the full run is in tests/test_pipeline.py)."""

from __future__ import annotations

import pytest

from medfuse.config import ConfigError, load_config
from medfuse.training.compare import (
    HEADLINE,
    PREDICTIONS_FILE,
    best_baseline,
    comparison_markdown,
    delta_text,
    save_predictions,
    settings_text,
    slug,
    tuning_grid,
    variants,
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
    table = {"n_resamples": 200, "models": [
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
    assert "200 resamples" in md
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
