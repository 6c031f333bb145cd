"""LabEmbedder: save/load round trip, embeddings, imputation in original units."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import tiny_config
from medfuse.data.cohort import Cohort
from medfuse.labs import LabEmbedder
from medfuse.labs.model import MLTM
from medfuse.labs.pretraining import lab_vocab, model_config, save_run


@pytest.fixture(scope="module")
def embedder(trained_run) -> LabEmbedder:
    return LabEmbedder.load(trained_run[0], device="cpu")


@pytest.fixture(scope="module")
def test_values(cohort_dir) -> np.ndarray:
    return Cohort(cohort_dir).lab_values("test", normalized=False).astype(np.float64)


def test_save_load_round_trip_gives_identical_embeddings(cohort_dir, tmp_path, test_values):
    cohort = Cohort(cohort_dir)
    cfg = tiny_config()
    torch.manual_seed(0)
    model = MLTM(model_config(len(cohort.lab_keys), cfg)).eval()
    save_run(tmp_path, model, cfg, lab_vocab(cohort, cfg.aggregates))
    loaded = LabEmbedder.load(tmp_path, device="cpu")
    in_memory = LabEmbedder(model, lab_vocab(cohort, cfg.aggregates), device="cpu")
    p1, t1 = loaded.embed(test_values)
    p2, t2 = in_memory.embed(test_values)
    assert torch.equal(p1, p2) and torch.equal(t1, t2)
    assert np.array_equal(loaded.impute(test_values), in_memory.impute(test_values))
    # loading twice is deterministic too
    p3, _ = LabEmbedder.load(tmp_path, device="cpu").embed(test_values)
    assert torch.equal(p1, p3)


def test_embed_shapes_types_and_cohort_convenience(embedder, cohort_dir, test_values):
    n, n_tests = test_values.shape
    pooled, tokens = embedder.embed(test_values)
    assert isinstance(pooled, torch.Tensor) and pooled.dtype == torch.float32 and pooled.device.type == "cpu"
    assert pooled.shape == (n, 32) and tokens.shape == (n, n_tests, 32)
    assert (tokens[torch.from_numpy(np.isnan(test_values))] == 0).all()
    p_np, t_np = embedder.embed(Cohort(cohort_dir), "test", numpy=True)
    assert isinstance(p_np, np.ndarray) and np.allclose(p_np, pooled.numpy(), atol=1e-6)
    assert np.allclose(t_np, tokens.numpy(), atol=1e-6)
    # batching does not change the result
    p_small, _ = embedder.embed(test_values, batch_size=7)
    assert torch.allclose(p_small, pooled, atol=1e-5)
    # accepts torch input, rejects wrong widths
    p_t, _ = embedder.embed(torch.from_numpy(test_values))
    assert torch.allclose(p_t, pooled, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        embedder.embed(test_values[:, :3])


def test_impute_returns_original_units_and_keeps_measured_values(embedder, cohort_dir, test_values):
    cohort = Cohort(cohort_dir)
    completed = embedder.impute(test_values)
    missing = np.isnan(test_values)
    assert completed.shape == test_values.shape and np.isfinite(completed).all()
    assert np.array_equal(completed[~missing], test_values[~missing])
    # imputed values live on each test's own scale (original units), not on the z-score scale
    med = cohort.lab_tests.column("median").to_numpy()
    scale = cohort.lab_tests.column("scale").to_numpy()
    imputed_z = (completed - med) / scale
    assert np.abs(imputed_z[missing]).max() < 6
    assert np.abs(np.nanmean(np.where(missing, completed, np.nan), axis=0) - med).max() < 3 * scale.max()
    assert np.all(med > 1.0)  # so that a z-score output would be caught by the check above
    # consistent with the model's normalised reconstruction, denormalised
    rec = embedder.reconstruct(test_values)
    assert np.allclose(completed[missing], rec[missing])
    assert np.allclose(embedder.denormalize(embedder.normalize(test_values)), np.clip(
        test_values, med - 5 * scale, med + 5 * scale), equal_nan=True)


def test_imputation_beats_the_training_mean_on_hidden_values(embedder, cohort_dir, test_values):
    rng = np.random.default_rng(0)
    obs = np.flatnonzero(~np.isnan(test_values))
    hide = np.zeros(test_values.size, bool)
    hide[rng.choice(obs, size=len(obs) // 5, replace=False)] = True
    hide = hide.reshape(test_values.shape)
    x_in = np.where(hide, np.nan, test_values)
    completed = embedder.impute(x_in)
    train_mean = np.nanmean(Cohort(cohort_dir).lab_values("train", normalized=False), axis=0)
    sd = np.nanstd(Cohort(cohort_dir).lab_values("train", normalized=False), axis=0)
    err_model = (((completed - test_values) / sd)[hide] ** 2).mean()
    err_mean = (((train_mean - test_values) / sd)[hide] ** 2).mean()
    assert err_model < 0.8 * err_mean, (err_model, err_mean)


def test_tests_missing_everywhere_in_a_batch(embedder, test_values):
    x = test_values[:16].copy()
    x[:, 2] = np.nan  # one test measured in no admission of the batch
    x[3] = np.nan  # an admission without labs
    completed = embedder.impute(x)
    pooled, tokens = embedder.embed(x)
    assert np.isfinite(completed).all() and torch.isfinite(pooled).all() and torch.isfinite(tokens).all()
    assert (tokens[:, 2] == 0).all() and (tokens[3] == 0).all()
    # an all-missing row is imputed with one fixed profile per test, the same for every such row
    empty = np.full((2, x.shape[1]), np.nan)
    both = embedder.impute(empty)
    assert np.allclose(both[0], both[1]) and np.allclose(both[0], completed[3], atol=1e-5)


def test_cohort_with_different_lab_columns_is_aligned_by_key(embedder, cohort_dir, tmp_path, test_values):
    """A cohort lacking one of the run's tests (or ordering them differently) is mapped by ``key``."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(cohort_dir, other)
    tests = pq.read_table(other / "lab_tests.parquet")
    keep = list(reversed(range(1, tests.num_rows)))  # drop the first test, reverse the order
    pq.write_table(tests.take(keep), other / "lab_tests.parquet")
    x = embedder.cohort_values(Cohort(other), "test")
    assert np.isnan(x[:, 0]).all()
    assert np.array_equal(x[:, 1:], test_values[:, 1:], equal_nan=True)
