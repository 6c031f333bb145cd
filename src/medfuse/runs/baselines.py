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


def _per_label(x, cohort: Cohort, candidates, stage: str, progress: ProgressFn | None) -> np.ndarray:
    """Fit every candidate of ``candidates(j)`` (callables ``(x_train, y_train, x_val, y_val) -> model``) per
    label, keep the best by validation AUPRC; ``[N, L]`` probabilities for every cohort row."""
    progress = progress or no_progress
    y = cohort.labels()
    train, val = cohort.rows("train"), cohort.rows("val")
    out = np.zeros_like(y)
    for j in range(y.shape[1]):
        if not y[train, j].any() or y[train, j].all():  # nothing to learn: the training prevalence
            out[:, j] = y[train, j].mean()
            continue
        models = [fit(x[train], y[train, j], x[val], y[val, j]) for fit in candidates]
        best = max(models, key=lambda m: _average_precision(y[val, j], m.predict_proba(x[val])[:, 1]))
        out[:, j] = best.predict_proba(x)[:, 1]
        progress(stage, (j + 1) / y.shape[1])
    return out


def lightgbm_labs(cohort: Cohort, seed: int = 0, progress: ProgressFn | None = None) -> np.ndarray:
    """Per-label LightGBM on lab features; probabilities for every cohort row ``[N, L]``."""
    import lightgbm as lgb

    def candidate(params):
        def fit(xt, yt, xv, yv):
            model = lgb.LGBMClassifier(n_estimators=500, learning_rate=0.05, subsample=0.8, subsample_freq=1,
                                       colsample_bytree=0.8, random_state=seed, n_jobs=1, verbose=-1, **params)
            return model.fit(xt, yt, eval_X=(xv,), eval_y=(yv,), eval_metric="average_precision",
                             callbacks=[lgb.early_stopping(30, verbose=False)])
        return fit

    x, _ = lab_features(cohort)
    return _per_label(x, cohort, [candidate(p) for p in LIGHTGBM_GRID], "LightGBM labs", progress)


def tfidf_logreg(cohort: Cohort, texts: list[str], seed: int = 0, progress: ProgressFn | None = None) -> np.ndarray:
    """Per-label logistic regression on TF-IDF of the note text (fitted on train); ``[N, L]`` probabilities."""
    from sklearn.linear_model import LogisticRegression

    from medfuse.notes.tfidf import TfidfNotes

    def candidate(c):
        return lambda xt, yt, xv, yv: LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xt, yt)

    x = TfidfNotes().fit([texts[i] for i in cohort.rows("train")]).transform(texts)
    return _per_label(x, cohort, [candidate(c) for c in LOGREG_C], "TF-IDF + logistic regression", progress)
