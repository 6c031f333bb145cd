"""Patient-level train/val/test splits by iterative stratification (Sechidis et al., ECML 2011)."""

from __future__ import annotations

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """Assign each row of a multi-hot matrix ``y [n, L]`` to a fold so every label is spread as ``fractions``.

    Rarest labels are placed first; each row goes to the fold, among those not yet full, that still
    needs most of that label (ties: the fold that needs most rows, then at random). Rows without any label fill the folds'
    remaining quotas at random. Returns fold indices ``[n]``; deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=bool)
    n = len(y)
    frac = np.asarray(fractions, dtype=float)
    need_rows = frac * n
    need_label = np.outer(frac, y.sum(axis=0)).astype(float)
    fold = np.full(n, -1)
    remaining = np.ones(n, dtype=bool)
    while True:
        counts = y[remaining].sum(axis=0)
        if not counts.any():
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        rows = np.flatnonzero(remaining & y[:, label])
        for i in rng.permutation(rows):
            open_ = np.flatnonzero(need_rows >= 1) if (need_rows >= 1).any() else np.arange(len(frac))
            want = need_label[open_, label]
            best = open_[want == want.max()]
            if len(best) > 1:
                best = best[need_rows[best] == need_rows[best].max()]
            f = int(rng.choice(best))
            fold[i] = f
            need_label[f] -= y[i]
            need_rows[f] -= 1
        remaining[rows] = False
    rest = rng.permutation(np.flatnonzero(remaining))
    quota = np.maximum(need_rows, 0)
    quota = np.floor(quota / quota.sum() * len(rest)).astype(int) if quota.sum() > 0 else np.zeros(len(frac), int)
    quota[int(np.argmax(need_rows))] += len(rest) - quota.sum()
    fold[rest] = np.repeat(np.arange(len(frac)), quota)
    return fold
