"""How well MLTM reconstructs lab values it did not see: the table the report shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfuse.data.cohort import Cohort


def hide(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of exactly round(fraction * n_observed) randomly chosen observed entries."""
    obs = np.flatnonzero(~np.isnan(x))
    mask = np.zeros(x.size, bool)
    mask[rng.choice(obs, size=round(fraction * len(obs)), replace=False)] = True
    return mask.reshape(x.shape)


def nrmse(pred: np.ndarray, true: np.ndarray, hidden: np.ndarray, sd: np.ndarray) -> tuple[float, np.ndarray]:
    """Pooled NRMSE over all hidden entries and per test (NaN for a test with nothing hidden)."""
    err = np.where(hidden, (pred - true) / sd, 0.0)
    n = hidden.sum(0)
    per_test = np.sqrt((err**2).sum(0) / np.maximum(n, 1))
    per_test[n == 0] = np.nan
    return float(np.sqrt((err**2).sum() / hidden.sum())), per_test


def reconstruction_table(cohort: Cohort, labs_run: str | Path, split: str = "test", fraction: float = 0.2,
                         seed: int = 0) -> dict:
    """Hide ``fraction`` of the observed ``split`` values; NRMSE (original units, / train sd) of MLTM vs the train mean."""
    from medfuse.labs import LabEmbedder

    embedder = LabEmbedder.load(labs_run)
    train, x = embedder.cohort_values(cohort, "train"), embedder.cohort_values(cohort, split)
    mean, sd = np.nanmean(train, axis=0), np.nanstd(train, axis=0)
    keep = ~np.isnan(mean) & (sd > 0)
    x, mean, sd = x[:, keep], mean[keep], sd[keep]
    hidden = hide(x, fraction, np.random.default_rng(seed))
    if not hidden.any():
        return {}
    masked = np.where(hidden, np.nan, x)
    full = np.full((len(x), len(embedder.token_names)), np.nan)
    full[:, keep] = masked
    mltm = embedder.impute(full)[:, keep]
    names = np.asarray(embedder.token_names)[keep]
    mltm_all, mltm_per = nrmse(mltm, x, hidden, sd)
    mean_all, mean_per = nrmse(np.broadcast_to(mean, x.shape), x, hidden, sd)
    return {
        "description": f"{fraction:.0%} of the observed {split}-split lab values hidden (seed {seed}); NRMSE in "
                       "original units divided by the training standard deviation; lower is better.",
        "overall": {"MLTM": mltm_all, "training mean": mean_all},
        "per_test": {n: {"MLTM": float(a), "training mean": float(b)} for n, a, b in zip(names, mltm_per, mean_per)},
        "hidden_values": int(hidden.sum()),
    }
