"""Classical single-modality baselines: LightGBM on lab features, TF-IDF + logistic regression on text.

Both get the same selection rule as the neural models: hyper-parameters and the number of boosting
rounds are chosen by validation macro-AUPRC (per label), never by the test split.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from medfuse.data.cohort import Cohort
from medfuse.progress import ProgressFn, no_progress

LIGHTGBM_GRID = ({"num_leaves": 15, "min_child_samples": 20}, {"num_leaves": 63, "min_child_samples": 10})
LOGREG_C = (0.1, 1.0, 10.0)


def lab_features(cohort: Cohort) -> tuple[np.ndarray, list[str]]:
    """Every aggregate of every selected lab test (original units, NaN when not measured) ``[N, F]``."""
    table = pq.read_table(cohort.path / "labs.parquet")
    names = [c for c in table.column_names if "__" in c and not c.endswith("__observed")]
    x = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in names], axis=1)
    return x.astype(np.float32), names


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p)) if y.any() else 0.0


def lightgbm_labs(cohort: Cohort, seed: int = 0, progress: ProgressFn | None = None) -> np.ndarray:
    """Per-label LightGBM on lab features; probabilities for every cohort row ``[N, L]``."""
    import lightgbm as lgb

    progress = progress or no_progress
    x, _ = lab_features(cohort)
    y = cohort.labels()
    train, val = cohort.rows("train"), cohort.rows("val")
    out = np.zeros_like(y)
    for j in range(y.shape[1]):
        if not y[train, j].any() or y[train, j].all():
            out[:, j] = y[train, j].mean()
            continue
        best = (-1.0, None)
        for params in LIGHTGBM_GRID:
            model = lgb.LGBMClassifier(n_estimators=500, learning_rate=0.05, subsample=0.8, subsample_freq=1,
                                       colsample_bytree=0.8, random_state=seed, n_jobs=2, verbose=-1, **params)
            model.fit(x[train], y[train, j], eval_X=(x[val],), eval_y=(y[val, j],), eval_metric="average_precision",
                      callbacks=[lgb.early_stopping(30, verbose=False)])
            score = _average_precision(y[val, j], model.predict_proba(x[val])[:, 1])
            if score > best[0]:
                best = (score, model)
        out[:, j] = best[1].predict_proba(x)[:, 1]
        progress("LightGBM labs", (j + 1) / y.shape[1])
    return out


def tfidf_logreg(cohort: Cohort, texts: list[str], seed: int = 0, progress: ProgressFn | None = None) -> np.ndarray:
    """Per-label logistic regression on TF-IDF of the note text (fitted on train); ``[N, L]`` probabilities."""
    from sklearn.linear_model import LogisticRegression

    from medfuse.notes.tfidf import TfidfNotes

    progress = progress or no_progress
    y = cohort.labels()
    train, val = cohort.rows("train"), cohort.rows("val")
    vec = TfidfNotes().fit([texts[i] for i in train])
    x = vec.transform(texts)
    out = np.zeros_like(y)
    for j in range(y.shape[1]):
        if not y[train, j].any() or y[train, j].all():
            out[:, j] = y[train, j].mean()
            continue
        best = (-1.0, None)
        for c in LOGREG_C:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x[train], y[train, j])
            score = _average_precision(y[val, j], model.predict_proba(x[val])[:, 1])
            if score > best[0]:
                best = (score, model)
        out[:, j] = best[1].predict_proba(x)[:, 1]
        progress("TF-IDF + logistic regression", (j + 1) / y.shape[1])
    return out
