"""Per-label decision thresholds from validation predictions, and out-of-fold scoring of a threshold rule.

The raw F1-maximising threshold of a label overfits a small validation split: F1 as a function of the
threshold is flat near its maximum and noisy, so its argmax jumps between distant values from one
sample to the next. The rules here (see ``docs/evaluation.md``):

* ``"f1_max"``: the threshold maximising the label's validation F1 (exact search over its distinct
  predicted probabilities);
* ``"shrunk"``: that threshold pulled toward 0.5 by ``w = n_pos / (n_pos + shrinkage)``, ``n_pos`` the
  label's validation positives: ``t = w * t_f1max + (1 - w) * 0.5``;
* ``"plateau"``: the median of all candidate thresholds whose F1 is within ``tolerance`` of the best
  (the centre of the near-optimal plateau, which moves much less between samples than its peak);
* ``"half_best_f1"``: half the best validation F1, the F1-optimal threshold of a *calibrated* model
  (Lipton et al. 2014, "Optimal thresholding of classifiers to maximize F1 measure");
* ``"fixed"``: 0.5 for every label.

Every rule gives 0.5 to a label with fewer than ``min_positives`` validation positives (at least one).
NumPy only.
"""

from __future__ import annotations

import numpy as np

from medfuse.evaluation.metrics import _as_2d, _patient_index

THRESHOLD_RULES = ("plateau", "f1_max", "shrunk", "half_best_f1", "fixed")
DEFAULT = 0.5


def _f1_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds (distinct probabilities, decreasing) and the F1 of ``p >= t`` at each."""
    order = np.argsort(-p, kind="stable")
    score, hit = p[order], y[order]
    last = np.r_[score[1:] != score[:-1], True]  # last row of each block of tied scores
    tp = np.cumsum(hit)[last]
    predicted = np.flatnonzero(last) + 1  # rows predicted positive with the block's score as threshold
    return score[last], 2 * tp / (predicted + y.sum())


def tune_thresholds(y_true, y_prob, rule: str = "plateau", tolerance: float = 0.08, shrinkage: float = 10.0,
                    min_positives: int = 1) -> np.ndarray:
    """Per-label thresholds ``float [L]`` for ``prob >= threshold``, from validation ``y_true`` / ``y_prob [N, L]``.

    ``rule`` is one of :data:`THRESHOLD_RULES` (module docstring). ``"f1_max"`` tries every distinct
    predicted probability of the label (the candidates of ``sklearn.metrics.precision_recall_curve``) and
    keeps the highest among equally good ones. ``shrinkage`` (validation positives at which the tuned
    threshold gets weight one half) is used by ``"shrunk"``, ``tolerance`` (absolute F1) by ``"plateau"``.
    A label with fewer than ``min_positives`` positives (or none) gets 0.5.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, not {rule!r}")
    if shrinkage < 0 or tolerance < 0:
        raise ValueError("shrinkage and tolerance must be >= 0")
    y, p = _as_2d(y_true, y_prob)
    out = np.full(y.shape[1], DEFAULT)
    for j in range(y.shape[1]):
        n_pos = int(y[:, j].sum())
        if rule == "fixed" or n_pos < max(1, min_positives):
            continue
        cand, f1 = _f1_curve(y[:, j], p[:, j])
        if rule == "plateau":
            out[j] = float(np.median(cand[f1 >= f1.max() - tolerance]))
            continue
        if rule == "half_best_f1":
            out[j] = float(f1.max()) / 2
            continue
        best = cand[int(np.argmax(f1))]
        w = 1.0 if rule == "f1_max" else n_pos / (n_pos + shrinkage)
        out[j] = w * best + (1 - w) * DEFAULT
    return out


def _folds(groups, k: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number ``0..k-1`` per row; all rows of one group (patient) share a fold."""
    patient, n_patients = _patient_index(groups, len(groups))
    return (rng.permutation(n_patients) % k)[patient]


def cross_fitted_f1(y_true, y_prob, groups=None, folds: int = 5, repeats: int = 20, seed: int = 0,
                    **rule) -> dict[str, float]:
    """Out-of-fold macro-F1 / micro-F1 of a threshold rule on one (validation) split.

    Each repeat splits the rows into ``folds`` patient-disjoint folds (``groups`` = patient ids; ``None``:
    one patient per row); every fold is predicted at thresholds tuned by ``tune_thresholds(**rule)`` on the
    other folds; macro- and micro-F1 of the pooled out-of-fold predictions are averaged over the repeats.
    This scores a rule with data the thresholds never saw, so rules can be compared without a test split.
    """
    y, p = _as_2d(y_true, y_prob)
    patient, _ = _patient_index(groups, len(y))
    rng = np.random.default_rng(seed)
    macro, micro = [], []
    for _ in range(repeats):
        fold = _folds(patient, folds, rng)
        pred = np.zeros_like(y)
        for k in range(folds):
            held = fold == k
            pred[held] = p[held] >= tune_thresholds(y[~held], p[~held], **rule)
        tp, fp, fn = ((y & pred).sum(0), (~y & pred).sum(0), (y & ~pred).sum(0))
        den = 2 * tp + fp + fn
        macro.append(float(np.mean(np.divide(2 * tp, den, out=np.zeros(len(tp)), where=den > 0))))
        micro.append(float(2 * tp.sum() / max(1, den.sum())))
    return {"macro_f1": float(np.mean(macro)), "micro_f1": float(np.mean(micro))}


def rule_from_config(evaluate) -> dict:
    """The ``tune_thresholds`` keywords of an ``[evaluate]`` section (``EvaluateConfig``)."""
    return {"rule": evaluate.threshold_rule, "tolerance": evaluate.threshold_tolerance,
            "shrinkage": evaluate.threshold_shrinkage, "min_positives": evaluate.threshold_min_positives}
