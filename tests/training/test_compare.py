"""The comparison's tuning grid and its configuration (the full run is in tests/test_pipeline.py)."""

from __future__ import annotations

import pytest

from medfuse.config import ConfigError, load_config
from medfuse.training.compare import settings_text, slug, tuning_grid, variants


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
