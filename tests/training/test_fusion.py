"""The fusion trainer on small in-memory data: learning, early stopping, resume, checkpoints."""

import json

import numpy as np
import pytest
import torch

from medfuse.config import TrainConfig
from medfuse.training.fusion import CHECKPOINT_FILE, MODEL_FILE, fit, load_net, macro_auprc, predict
from medfuse.training.inputs import FusionData


def make_data(n: int = 400, seed: int = 0) -> FusionData:
    """Label 0 from the note, label 1 from the labs, label 2 from their interaction."""
    rng = np.random.default_rng(seed)
    note = rng.normal(size=(n, 16)).astype(np.float32)
    lab_x = rng.normal(size=(n, 6)).astype(np.float32)
    observed = rng.random((n, 6)) < 0.8
    tokens = (lab_x[:, :, None] * rng.normal(size=(1, 6, 8))).astype(np.float32) * observed[:, :, None]
    pooled = tokens.mean(axis=1)
    y = np.stack([note[:, 0] > 0, (lab_x[:, 0] * observed[:, 0]) > 0.3,
                  (note[:, 1] * lab_x[:, 1] * observed[:, 1]) > 0], axis=1).astype(np.float32)
    split = np.array(["train"] * int(n * 0.7) + ["val"] * int(n * 0.1) + ["test"] * (n - int(n * 0.7) - int(n * 0.1)))
    note_missing = rng.random(n) < 0.1
    values = np.concatenate([np.repeat((lab_x * observed)[:, :, None], 4, axis=2), observed[:, :, None]], axis=2)
    return FusionData(hadm_ids=np.arange(n), subject_ids=np.arange(n) // 2, split=split, y=y,
                      label_names=["a", "b", "c"], note=note, note_missing=note_missing, lab_x=lab_x * observed,
                      lab_observed=observed, lab_tokens=tokens, lab_pooled=pooled,
                      lab_values=values.astype(np.float32))


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 6, "batch_size": 64, "lr": 3e-3, "device": "cpu", "patience": 10, **kw})


def test_training_learns_and_keeps_the_best_epoch(tmp_path):
    data = make_data()
    val = data.rows("val")
    summary = fit(data, tmp_path, config(epochs=15))
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 15 and summary["best_epoch"] >= 1
    assert history[-1]["train_bce"] < 0.8 * history[0]["train_bce"]
    assert all("train_mi" in h and "val_macro_auprc" in h for h in history)
    net = load_net(tmp_path)
    score = macro_auprc(data.y[val], predict(net, data, val, torch.device("cpu")))
    assert score == pytest.approx(summary["best_val_macro_auprc"], abs=1e-6)
    assert score == pytest.approx(max(h["val_macro_auprc"] for h in history), abs=1e-6)
    assert score > data.y[val].mean() + 0.2  # far above the prevalence a random model scores


@pytest.mark.parametrize("kind", ["medfuse", "concat"])
def test_lab_value_channels_reach_the_model(tmp_path, kind):
    """Label from a test's within-admission range (max - min), which the encoder tokens do not carry:
    learnable only through the value skip (``lab_values``)."""
    data = make_data()
    rng = np.random.default_rng(1)
    spread = rng.exponential(size=len(data.y)).astype(np.float32)
    data.lab_values[:, 0, 2], data.lab_values[:, 0, 3] = -spread / 2, spread / 2  # min, max of test 0
    data.lab_values[:, 0, 4] = 1.0
    data.lab_observed[:, 0] = True
    data.y[:, 1] = (spread > np.median(spread)).astype(np.float32)
    val = data.rows("val")
    scores = {}
    for skip in (True, False):
        fit(data, tmp_path / str(skip), config(kind=kind, epochs=15, lab_values=skip))
        net = load_net(tmp_path / str(skip))
        scores[skip] = macro_auprc(data.y[val][:, 1:2], predict(net, data, val, torch.device("cpu"))[:, 1:2])
    assert scores[True] > 0.85 and scores[False] < 0.75, scores


def test_resume_after_a_kill_reaches_the_same_weights(tmp_path):
    data = make_data()
    fit(data, tmp_path / "straight", config())

    class Killed(Exception):
        pass

    def kill_after_epoch_3(stage, fraction, info=""):
        if info.startswith("epoch 3 bce") and "val AUPRC" in info:
            raise Killed

    with pytest.raises(Killed):
        fit(data, tmp_path / "resumed", config(), progress=kill_after_epoch_3)
    assert (tmp_path / "resumed" / CHECKPOINT_FILE).exists()
    fit(data, tmp_path / "resumed", config(), resume=True)
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / MODEL_FILE)) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("straight", "resumed"))
    assert [h["val_macro_auprc"] for h in h1] == [h["val_macro_auprc"] for h in h2]


def test_early_stopping_on_validation_metric(tmp_path):
    data = make_data()
    data.y[data.rows("val")] = np.random.default_rng(1).integers(0, 2, size=data.y[data.rows("val")].shape)
    summary = fit(data, tmp_path, config(epochs=30, patience=2))
    assert summary["epochs"] == summary["best_epoch"] + 2 < 30


@pytest.mark.parametrize("kind", ["concat", "tfn", "notes_only", "labs_only"])
def test_baseline_kinds_train_without_an_estimator(tmp_path, kind):
    data = make_data(200)
    fit(data, tmp_path, config(kind=kind, epochs=2))
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[-1]["train_mi"] == 0.0 and history[-1]["train_estimator"] == 0.0
