"""Fixtures for the serving tests: a small synthetic hospital, a model trained on it and its bundle."""

from __future__ import annotations

import pytest

TINY_CONFIG = """
[labs]
epochs = 2
d_model = 32
encoder_layers = 2
[notes]
model = "{model}"
cache_dir = "{cache}"
line_clusters = 8
[train]
epochs = 3
device = "cpu"
batch_size = 64
[evaluate]
n_resamples = 20
"""


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_bert):
    """``(root, cfg)``: raw files (synthetic MIMIC-IV, seed 11), a cohort, a trained run and its bundle."""
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.runs.export import export_bundle
    from medfuse.runs.stages import train_run

    root = tmp_path_factory.mktemp("served")
    (root / "tiny.toml").write_text(TINY_CONFIG.format(model=tiny_bert, cache=root / "cache"))
    cfg = load_config(root / "tiny.toml")
    generate(root / "raw", "mimic4", 300, seed=11)
    prepare_cohort(root / "raw", root / "cohort", cfg.prepare.model_copy(update={"source": "mimic4"}))
    train_run(root / "cohort", root / "run", cfg)
    export_bundle(root / "run", root / "model")
    return root, cfg


@pytest.fixture(scope="session")
def bundle_dir(served):
    """A real model bundle (tiny text model) exported from a trained run."""
    return served[0] / "model"
