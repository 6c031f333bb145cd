"""MLTM pre-training: learning, reproducibility, early stopping, train-split only, run folder, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import medfuse.labs.pretraining as train_mod
from conftest import make_cohort, tiny_config
from medfuse.data.cohort import Cohort
from medfuse.labs import pretrain
from medfuse.labs.model import MLTM, MLTMConfig


def test_short_training_lowers_validation_reconstruction_error(trained_run):
    _, result = trained_run
    h = result.history
    initial = h["initial_val_loss"]
    assert len(h["step_loss"]) == 12 * math.ceil(result.train_admissions / 42)
    assert result.best_val_loss < 0.85 * initial, (initial, h["val_loss"])
    # the training loss goes down too: last epoch clearly below the first
    assert h["train_loss"][-1] < 0.9 * h["train_loss"][0]


def test_run_folder_contents(trained_run, cohort_dir):
    run, result = trained_run
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "config.json", "vocab.json", "history.json"}
    cohort = Cohort(cohort_dir)
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab["keys"] == cohort.lab_keys
    assert vocab["itemids"] == cohort.lab_tests.column("itemid").to_pylist()
    assert vocab["units"] == cohort.lab_tests.column("unit").to_pylist()
    assert np.allclose(vocab["median"], cohort.lab_tests.column("median").to_numpy())
    assert vocab["clip"] == 5.0 and vocab["aggregates"] == ["last"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["n_tests"] == len(cohort.lab_keys) and config["train"]["mask_ratio"] == 0.75
    state = load_file(str(run / "model.safetensors"))
    assert set(state) == set(MLTM(MLTMConfig(**config["model"])).state_dict())
    history = json.loads((run / "history.json").read_text())
    assert len(history["val_loss"]) == len(history["train_loss"]) == result.epochs_run == 12
    assert history["summary"]["best_val_loss"] == pytest.approx(min(history["val_loss"]))
    # admissions without any lab value are not used for training
    n_train = len(cohort.rows("train"))
    has_lab = ~np.isnan(cohort.lab_values("train")).all(1)
    assert result.train_admissions == int(has_lab.sum()) < n_train
    assert result.admissions_per_second > 0 and result.peak_memory_mb > 0


def test_saved_weights_are_the_best_epoch(trained_run, cohort_dir):
    """Early stopping restores the best epoch: re-evaluating the saved model gives the best val loss."""
    from medfuse.labs import LabEmbedder

    run, result = trained_run
    emb = LabEmbedder.load(run, device="cpu")
    x_val = torch.from_numpy(Cohort(cohort_dir).lab_values("val"))
    x_val = x_val[(~torch.isnan(x_val)).any(1)]
    val = train_mod.evaluate(emb.model, x_val, 0.75, 0 + train_mod.VAL_MASK_SEED_OFFSET)
    assert val == pytest.approx(result.best_val_loss, rel=1e-5)


def test_training_is_reproducible(cohort_dir, tmp_path):
    a = pretrain(cohort_dir, tmp_path / "a", tiny_config(epochs=2))
    b = pretrain(cohort_dir, tmp_path / "b", tiny_config(epochs=2))
    c = pretrain(cohort_dir, tmp_path / "c", tiny_config(epochs=2, seed=1))
    assert a.history["step_loss"] == b.history["step_loss"]
    wa, wb = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history["step_loss"] != c.history["step_loss"]


def test_training_never_reads_the_test_split(tmp_path):
    """Two cohorts that differ only in the test split's lab values give identical training runs."""
    base = make_cohort(tmp_path / "base", n=300, seed=3)
    shifted = make_cohort(tmp_path / "shifted", n=300, seed=3, test_shift=3.0)
    assert not np.allclose(Cohort(base).lab_values("test"), Cohort(shifted).lab_values("test"), equal_nan=True)
    assert np.array_equal(Cohort(base).lab_values("train"), Cohort(shifted).lab_values("train"), equal_nan=True)
    a = pretrain(base, tmp_path / "a", tiny_config(epochs=2))
    b = pretrain(shifted, tmp_path / "b", tiny_config(epochs=2))
    assert a.history["step_loss"] == b.history["step_loss"] and a.history["val_loss"] == b.history["val_loss"]


def test_early_stopping_after_patience(cohort_dir, tmp_path, monkeypatch):
    scores = iter([1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.4])  # initial, then one per epoch

    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: next(scores))
    result = pretrain(cohort_dir, tmp_path / "run", tiny_config(epochs=6, patience=3))
    assert result.stopped_early and result.epochs_run == 4
    assert result.best_epoch == 1 and result.best_val_loss == 0.9


def test_warmup_cosine_schedule():
    from medfuse.torch_utils import warmup_cosine

    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def test_progress_reports_loss_and_validation(cohort_dir, tmp_path):
    seen = []
    pretrain(cohort_dir, tmp_path / "run", tiny_config(epochs=2), progress=lambda s, f, info="": seen.append((s, f, info)))
    training = [(f, info) for s, f, info in seen if s == "MLTM: training"]
    fractions = [f for f, _ in training]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all("loss" in info for f, info in training if f < 1.0)
    assert sum("val" in info for _, info in training) == 2  # one line per epoch


def test_resume_continues_a_killed_run_to_the_same_result(cohort_dir, tmp_path):
    import torch

    whole = pretrain(cohort_dir, tmp_path / "whole", tiny_config(epochs=4))

    def kill_after_two_epochs(stage, fraction, info=""):
        if stage == "MLTM: training" and fraction >= 0.5 and "val" in info:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cohort_dir, tmp_path / "part", tiny_config(epochs=4), progress=kill_after_two_epochs)
    assert (tmp_path / "part" / "checkpoint.safetensors").exists()
    resumed = pretrain(cohort_dir, tmp_path / "part", tiny_config(epochs=4), resume=True)
    assert resumed.history["val_loss"] == pytest.approx(whole.history["val_loss"], rel=1e-6)
    assert resumed.history["step_loss"] == pytest.approx(whole.history["step_loss"], rel=1e-6)
    assert not (tmp_path / "part" / "checkpoint.safetensors").exists()
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_pretrain_labs(cohort_dir, tmp_path):
    from medfuse.cli import app

    cfg = tmp_path / "labs.toml"
    cfg.write_text('[labs]\nd_model = 16\nencoder_layers = 1\ndecoder_layers = 1\nheads = 2\ndevice = "cpu"\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["pretrain-labs", str(cohort_dir), "--out", str(out), "--epochs", "2",
                                   "--seed", "3", "--mask-ratio", "0.3", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "best val reconstruction MSE" in res.output
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["train"]["seed"] == 3 and config["model"]["d_model"] == 16
    assert config["mask_ratio"] == 0.3
    bad = CliRunner().invoke(app, ["pretrain-labs", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2 and "not a medfuse cohort" in bad.output
