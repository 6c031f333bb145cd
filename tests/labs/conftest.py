"""A small cohort folder (the documented layout of docs/data.md) with correlated synthetic lab values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from medfuse.config import LabsConfig

torch.set_num_threads(1)  # pytest runs with -n 2 on 2 cores

N_TESTS = 10
AGGREGATES = ("last", "mean", "min", "max")


def make_cohort(path: Path, n: int = 600, n_tests: int = N_TESTS, seed: int = 0, test_shift: float = 0.0) -> Path:
    """Write a cohort whose lab values follow a 2-factor model (so masked values are predictable).

    ``test_shift`` is added to the test split's normalised values only (to check that training never
    reads them).
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    hadm = np.arange(100_000, 100_000 + n)
    split = rng.choice(np.array(["train", "val", "test"]), size=n, p=[0.7, 0.1, 0.2])
    factors = rng.normal(size=(n, 2))
    loadings = rng.normal(size=(2, n_tests))
    z = factors @ loadings + 0.25 * rng.normal(size=(n, n_tests))
    z[split == "test"] += test_shift
    medians = rng.uniform(1.0, 150.0, size=n_tests).round(1)
    scales = medians * rng.uniform(0.05, 0.3, size=n_tests)
    values = medians + scales * z
    p_obs = np.linspace(0.95, 0.4, n_tests)
    p_obs[-1] = 0.08  # a rarely measured test
    observed = rng.random((n, n_tests)) < p_obs
    observed[:5] = False  # a few admissions without any lab
    values[~observed] = np.nan

    cols: dict[str, pa.Array] = {"hadm_id": pa.array(hadm)}
    keys = [f"lab_{50_000 + t}" for t in range(n_tests)]
    for t, key in enumerate(keys):
        v = values[:, t]
        spread = np.abs(scales[t]) * 0.1
        for agg, off in zip(AGGREGATES, (0.0, 0.0, -spread, spread)):
            cols[f"{key}__{agg}"] = pa.array(v + off, from_pandas=True)
        cols[f"{key}__count"] = pa.array(observed[:, t].astype(np.int64))
        cols[f"{key}__observed"] = pa.array(observed[:, t])
    pq.write_table(pa.table(cols), path / "labs.parquet")

    train = values[split == "train"]
    med = np.nanmedian(train, axis=0)
    q75, q25 = np.nanpercentile(train, 75, axis=0), np.nanpercentile(train, 25, axis=0)
    pq.write_table(pa.table({
        "key": keys, "itemid": [50_000 + t for t in range(n_tests)], "label": [f"Test {t}" for t in range(n_tests)],
        "fluid": ["Blood"] * n_tests, "category": ["Chemistry"] * n_tests, "unit": ["mg/dL"] * n_tests,
        "train_fraction": observed[split == "train"].mean(0), "median": med, "scale": (q75 - q25) / 1.349,
        "q01": np.nanpercentile(train, 1, axis=0), "q99": np.nanpercentile(train, 99, axis=0),
    }), path / "lab_tests.parquet")
    pq.write_table(pa.table({
        "subject_id": hadm + 1, "hadm_id": hadm, "age": rng.uniform(20, 90, n), "sex": rng.choice(["F", "M"], n),
        "has_labs": observed.any(1), "has_notes": np.ones(n, bool),
    }), path / "admissions.parquet")
    pq.write_table(pa.table({"subject_id": hadm + 1, "hadm_id": hadm, "split": split}), path / "splits.parquet")
    labels = {"hadm_id": hadm, "sepsis": (factors[:, 0] > 0.5).astype(np.int8),
              "aki": (factors[:, 1] > 0.5).astype(np.int8)}
    pq.write_table(pa.table(labels), path / "labels.parquet")
    manifest = {"schema_version": 1, "source": "test", "labels": ["sepsis", "aki"],
                "lab_normalization": {"clip": 5.0}, "split_sizes": {s: int((split == s).sum()) for s in ("train", "val", "test")}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def tiny_config(**overrides) -> LabsConfig:
    base = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 1, "heads": 4, "epochs": 3, "batch_size": 42,
            "lr": 3e-3, "warmup_fraction": 0.1, "patience": 5, "seed": 0, "device": "cpu"}
    return LabsConfig(**(base | overrides))


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("cohort") / "cohort")


@pytest.fixture(scope="session")
def trained_run(cohort_dir, tmp_path_factory):
    """A short but real training run (tiny model) shared by the embedder tests."""
    from medfuse.labs import pretrain

    out = tmp_path_factory.mktemp("run") / "run"
    result = pretrain(cohort_dir, out, tiny_config(epochs=12, patience=12))
    return out, result
