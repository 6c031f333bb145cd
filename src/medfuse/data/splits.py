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
    folds = list(range(len(frac)))
    while True:
        counts = y[remaining].sum(axis=0)
        if not counts.any():
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        rows = np.flatnonzero(remaining & y[:, label])
        # Per row, plain Python over the few folds (numpy's per-call cost dominated); the other
        # labels' needs are updated once per label below, with the same exact float results.
        rows_need, label_need = need_rows.tolist(), need_label[:, label].tolist()
        for i in rng.permutation(rows):
            open_ = [f for f in folds if rows_need[f] >= 1] or folds
            top = max(label_need[f] for f in open_)
            best = [f for f in open_ if label_need[f] == top]
            if len(best) > 1:
                top = max(rows_need[f] for f in best)
                best = [f for f in best if rows_need[f] == top]
            f = best[int(rng.integers(0, len(best)))]  # what rng.choice(best) draws
            fold[i] = f
            label_need[f] -= 1
            rows_need[f] -= 1
        need_rows = np.asarray(rows_need)
        for f in folds:
            need_label[f] -= y[rows[fold[rows] == f]].sum(axis=0)
        remaining[rows] = False
    rest = rng.permutation(np.flatnonzero(remaining))
    quota = np.maximum(need_rows, 0)
    quota = np.floor(quota / quota.sum() * len(rest)).astype(int) if quota.sum() > 0 else np.zeros(len(frac), int)
    quota[int(np.argmax(need_rows))] += len(rest) - quota.sum()
    fold[rest] = np.repeat(np.arange(len(frac)), quota)
    return fold
