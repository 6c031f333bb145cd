"""Multi-label evaluation: metrics, patient-level bootstrap intervals, subgroups, paired differences.

Pure NumPy (no scikit-learn, no matplotlib at import time) so the CLI stays fast to import. The
results match scikit-learn's definitions (``f1_score``, ``precision_score``, ``recall_score`` with
``zero_division=0``, ``roc_auc_score``, ``average_precision_score``); see ``docs/evaluation.md``.

Conventions
-----------
* ``y_true`` and ``y_prob`` are ``[N, L]`` (a 1-D array is one label); a row is predicted positive for a
  label when ``prob >= threshold``.
* AUROC and AUPRC of a label with no positive or no negative are undefined: reported as ``None`` and
  left out of the macro / weighted averages (``labels_undefined`` counts them). Nothing here raises
  on such a label; only malformed input (shape mismatch, non-finite probabilities, labels not 0/1)
  raises ``ValueError``.
* Every returned dict is JSON-serialisable: Python ``float`` / ``int`` / ``str`` / ``None``.

All ranking metrics are computed with integer *weights* per row: weight 1 for the point estimate, and
for a bootstrap resample the number of times the row's patient was drawn. One pass over the rows,
pre-sorted once by probability, then gives AUROC / AUPRC of every resample without re-sorting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np

N_BINS = 10
CI_LEVEL = 0.95
_CHUNK_CELLS = 1_000_000  # resamples x (admission, label) cells processed at once (~8 MB per array)
_RATES = ("f1", "precision", "recall")
_PERCENTILES = 100 * np.array([(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
LIGHT_METRICS = ("macro_f1", "micro_f1", "macro_auroc", "macro_auprc")  # bootstrapped for subgroups
PAIRED_METRICS = ("macro_auprc", "macro_f1")
MIN_SUBGROUP_PATIENTS = 20


# --------------------------------------------------------------------------------------------- inputs
def _as_2d(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"y_true {np.shape(y_true)} and y_prob {np.shape(y_prob)} must both be [N, L]")
    if not np.isfinite(p).all():
        raise ValueError("y_prob contains NaN or infinite values")
    if y.dtype != bool:
        yf = y.astype(float)
        if not np.isin(yf, (0.0, 1.0)).all():
            raise ValueError("y_true must contain only 0/1 (or booleans)")
        y = yf.astype(bool)
    return y, p


def _names(label_names: Sequence[str] | None, n_labels: int) -> list[str]:
    if label_names is None:
        return [f"label_{j}" for j in range(n_labels)]
    names = [str(n) for n in label_names]
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} label names for {n_labels} labels")
    return names


def _thresholds(thresholds, names: list[str]) -> np.ndarray:
    """A float, a sequence ``[L]`` or a mapping name -> threshold, as a float array ``[L]``."""
    if isinstance(thresholds, Mapping):
        missing = [n for n in names if n not in thresholds]
        if missing:
            raise ValueError(f"no threshold for labels {missing}")
        t = np.array([float(thresholds[n]) for n in names])
    else:
        t = np.asarray(thresholds, dtype=float)
        t = np.full(len(names), float(t)) if t.ndim == 0 else t
    if t.shape != (len(names),):
        raise ValueError(f"thresholds must be a float or have one value per label ({len(names)}), got {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("thresholds must be finite")
    return t


def _f(x) -> float | None:
    """A JSON-ready float: NaN / inf -> None."""
    x = float(x)
    return x if np.isfinite(x) else None


def _safe_div(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.full(num.shape, fill, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean_defined(x: np.ndarray, axis: int = -1, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean (or weighted mean) over ``axis`` ignoring NaN entries; NaN when nothing is defined."""
    ok = np.isfinite(x)
    w = np.ones_like(x) if weights is None else np.broadcast_to(weights, x.shape).astype(float)
    w = np.where(ok, w, 0.0)
    return _safe_div((np.where(ok, x, 0.0) * w).sum(axis=axis), w.sum(axis=axis), np.nan)


# ------------------------------------------------------------------------------ ranking metrics core
class _Ranked:
    """One score column sorted once by decreasing score, ready for weighted AUROC / AUPRC.

    Tied scores form blocks. Only blocks holding a positive contribute to the sums below, so apart
    from one pass over all entries (cumulative weight at those blocks' edges) the work scales with
    the number of positives.
    """

    __slots__ = ("edges", "end_at", "pos_rows", "pos_seg", "rows", "size", "start_at")

    def __init__(self, rows: np.ndarray, scores: np.ndarray, y: np.ndarray):
        order = np.argsort(-scores, kind="stable")
        s, y_sorted = scores[order], y[order].astype(bool)
        self.size = len(s)
        self.rows = rows[order]
        block = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 if len(s) else np.zeros(0, int)
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(s)]
        pos_idx = np.flatnonzero(y_sorted)
        pos_block = block[pos_idx]
        first = np.r_[True, pos_block[1:] != pos_block[:-1]] if len(pos_idx) else np.zeros(0, bool)
        kb = pos_block[first]  # blocks holding at least one positive, in decreasing score
        self.pos_rows = self.rows[pos_idx]
        self.pos_seg = np.flatnonzero(first)
        # cumulative weight is needed just before each such block and at its end
        self.edges = np.unique(np.r_[0, starts[kb], ends[kb]])
        self.edges = self.edges[self.edges < len(s)]
        ext = np.r_[self.edges, len(s)]
        self.start_at = np.searchsorted(ext, starts[kb])
        self.end_at = np.searchsorted(ext, ends[kb])

    def auroc_auprc(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUROC and average precision for each weight column of ``w [N, B]`` (NaN where undefined).

        With the weighted positive / total counts ``gp``, ``gt`` of each tied block (decreasing score),
        ``cp`` the cumulative positives and ``ct`` the cumulative total weight through the block:
        AUROC = sum(gp * (Nneg - (ct - cp)) + gp * (gt - gp) / 2) / (Npos * Nneg) (Mann-Whitney, ties
        count one half, i.e. the trapezoidal ROC area) and AP = sum(gp * cp / ct) / Npos
        (scikit-learn's step-wise average precision).
        """
        b = w.shape[1]
        if self.size == 0 or self.pos_rows.size == 0:
            return np.full(b, np.nan), np.full(b, np.nan)
        seg = np.add.reduceat(w[self.rows], self.edges, axis=0)
        before = np.empty((len(seg) + 1, b))
        before[0] = 0.0
        np.cumsum(seg, axis=0, out=before[1:])
        ct = before[self.end_at]
        gt = ct - before[self.start_at]
        gp = np.add.reduceat(w[self.pos_rows], self.pos_seg, axis=0)
        cp = np.cumsum(gp, axis=0)
        n_pos, n_all = cp[-1], before[-1]
        n_neg = n_all - n_pos
        u = (gp * (n_neg - (ct - cp) + 0.5 * (gt - gp))).sum(axis=0)
        auroc = _safe_div(u, n_pos * n_neg, np.nan)
        ap = _safe_div((gp * _safe_div(cp, ct, 0.0)).sum(axis=0), n_pos, np.nan)
        undefined = (n_pos <= 0) | (n_neg <= 0)
        auroc[undefined] = np.nan
        ap[undefined] = np.nan
        return auroc, ap


class _Prepared:
    """Everything about ``(y, p)`` that does not depend on the resample weights."""

    def __init__(self, y: np.ndarray, p: np.ndarray, full: bool = True):
        n, n_labels = y.shape
        self.n, self.n_labels = n, n_labels
        self.y = y
        self.yf = y.astype(float)
        self.p = p
        rows = np.arange(n)
        self.columns = [_Ranked(rows, p[:, j], y[:, j]) for j in range(n_labels)]
        if not full:  # per-label ranking and threshold counts only (LIGHT_METRICS)
            return
        self.pooled = _Ranked(np.repeat(rows, n_labels), p.ravel(), y.ravel())
        self.sq_err = ((p - self.yf) ** 2).sum(axis=1)  # [N]
        bins = np.clip((p * N_BINS).astype(int), 0, N_BINS - 1)
        self.bin_gap = np.zeros((n, N_BINS))  # per row and bin: sum over labels of (p - y)
        np.add.at(self.bin_gap, (np.repeat(rows, n_labels), bins.ravel()), (p - self.yf).ravel())

    def threshold_counts(self, w: np.ndarray, thr: np.ndarray) -> dict[str, np.ndarray]:
        """Weighted counts for weight columns ``w [N, B]``: ``tp``, ``fp``, ``pos`` as ``[B, L]``, others ``[B]``."""
        pred = self.p >= thr
        hit = pred == self.y
        return {
            "tp": ((self.y & pred).astype(float).T @ w).T,
            "fp": ((~self.y & pred).astype(float).T @ w).T,
            "pos": (self.yf.T @ w).T,
            "correct": hit.sum(axis=1).astype(float) @ w,
            "exact": hit.all(axis=1).astype(float) @ w,
        }


def _rates(tp, fp, pos) -> dict[str, np.ndarray]:
    """Precision, recall, F1 from (weighted) counts; 0 on zero division as scikit-learn does."""
    fn = pos - tp
    return {
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn, 0.0),
        "precision": _safe_div(tp, tp + fp, 0.0),
        "recall": _safe_div(tp, pos, 0.0),
    }


# ------------------------------------------------------------------------------------------- public
def expected_calibration_error(y_true, y_prob, n_bins: int = N_BINS) -> float | None:
    """Expected calibration error over all entries: sum over ``n_bins`` equal-width bins of [0, 1] of
    (n_bin / n) * |mean(y) - mean(p)| in the bin (a probability of exactly 1 falls in the last bin).
    ``None`` for no entries."""
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.size == 0:
        return None
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    gap = np.bincount(bins, weights=p - y, minlength=n_bins)
    return float(np.abs(gap).sum() / y.size)


def compute_metrics(y_true, y_prob, thresholds=0.5, label_names: Sequence[str] | None = None) -> dict:
    """All metrics of predictions ``y_prob [N, L]`` against ``y_true [N, L]`` at ``thresholds``.

    ``thresholds``: one float, ``[L]`` values or a mapping label name -> threshold. Returns::

        {"n", "n_labels", "thresholds": {name: t},
         "per_label": {name: {f1, precision, recall, auroc, auprc, brier, ece, support, prevalence,
                              threshold, tp, fp, fn, tn}},
         "macro" | "micro" | "weighted": {f1, precision, recall, auroc, auprc},
         "hamming_accuracy", "exact_match", "brier", "ece",
         "labels_undefined", "labels_undefined_names", "labels_without_positives"}

    Macro = unweighted mean over labels, weighted = mean weighted by support (positives), micro = the
    metric of all (admission, label) cells pooled. AUROC / AUPRC are ``None`` for a label lacking
    positives or negatives and left out of the macro / weighted means. ``brier`` and ``ece`` at top
    level are pooled over all cells (ECE: 10 equal-width bins on [0, 1]). With ``N = 0`` every value is
    ``None``.
    """
    y, p = _as_2d(y_true, y_prob)
    names = _names(label_names, y.shape[1])
    thr = _thresholds(thresholds, names)
    n, n_labels = y.shape
    prep = _Prepared(y, p)
    w = np.ones((n, 1))
    c = prep.threshold_counts(w, thr)
    tp, fp, pos = c["tp"][0], c["fp"][0], c["pos"][0]
    per = _rates(tp, fp, pos)
    rank = np.array([col.auroc_auprc(w) for col in prep.columns])[:, :, 0]  # [L, 2]
    auroc, auprc = rank[:, 0], rank[:, 1]
    pooled_auroc, pooled_auprc = (v[0] for v in prep.pooled.auroc_auprc(w))
    micro = _rates(tp.sum(), fp.sum(), pos.sum())
    brier = ((p - prep.yf) ** 2).mean(axis=0) if n else np.full(n_labels, np.nan)

    per_label = {}
    for j, name in enumerate(names):
        per_label[name] = {
            "f1": _f(per["f1"][j]) if n else None,
            "precision": _f(per["precision"][j]) if n else None,
            "recall": _f(per["recall"][j]) if n else None,
            "auroc": _f(auroc[j]),
            "auprc": _f(auprc[j]),
            "brier": _f(brier[j]),
            "ece": expected_calibration_error(y[:, j].astype(float), p[:, j]),
            "support": int(pos[j]),
            "prevalence": _f(pos[j] / n) if n else None,
            "threshold": float(thr[j]),
            "tp": int(tp[j]),
            "fp": int(fp[j]),
            "fn": int(pos[j] - tp[j]),
            "tn": int(n - pos[j] - fp[j]),
        }
    undefined = [name for j, name in enumerate(names) if not np.isfinite(auroc[j])]

    def averages(weights: np.ndarray | None) -> dict:
        if n == 0:
            return dict.fromkeys((*_RATES, "auroc", "auprc"))
        out = {k: _f(_mean_defined(per[k], weights=weights)) for k in _RATES}
        if weights is not None and weights.sum() == 0:
            out = dict.fromkeys(_RATES, 0.0)  # scikit-learn: weighted average with no positive -> 0
        out["auroc"] = _f(_mean_defined(auroc, weights=weights))
        out["auprc"] = _f(_mean_defined(auprc, weights=weights))
        return out

    return {
        "n": int(n),
        "n_labels": int(n_labels),
        "thresholds": {name: float(t) for name, t in zip(names, thr)},
        "per_label": per_label,
        "macro": averages(None),
        "micro": {**({k: _f(v) for k, v in micro.items()} if n else dict.fromkeys(_RATES)),
                  "auroc": _f(pooled_auroc), "auprc": _f(pooled_auprc)},
        "weighted": averages(pos),
        "hamming_accuracy": _f(c["correct"][0] / (n * n_labels)) if n else None,
        "exact_match": _f(c["exact"][0] / n) if n else None,
        "brier": _f(prep.sq_err.sum() / (n * n_labels)) if n else None,
        "ece": expected_calibration_error(y.ravel().astype(float), p.ravel()),
        "labels_undefined": len(undefined),
        "labels_undefined_names": undefined,
        "labels_without_positives": [name for j, name in enumerate(names) if pos[j] == 0],
    }


def _single_threaded_blas():
    """Run the many small matrix products of the bootstrap on one BLAS thread.

    Multi-threaded OpenBLAS on these ``[L, N] @ [N, B]`` products is up to 40x slower than one thread
    when the cores are busy (measured on 2 cores). threadpoolctl ships with scikit-learn.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn (a dependency) brings it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _patient_index(groups, n: int) -> tuple[np.ndarray, int]:
    """Row -> patient index ``0..P-1`` (``groups=None``: every row its own patient)."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one patient id per row ({n}), got shape {g.shape}")
    uniq, inverse = np.unique(g, return_inverse=True)
    return inverse.ravel(), len(uniq)


def _resample_weights(patient: np.ndarray, n_patients: int, n_resamples: int, seed: int, cells: int):
    """Patient-level resamples as weight matrices ``[N, b]``, a chunk of ``b`` resamples at a time.

    Each resample draws ``n_patients`` patients with replacement; a row's weight is how often its patient
    was drawn. The draws depend on ``(n_patients, n_resamples, seed)`` only (not on the chunking), so
    two calls with those arguments give the same resamples.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CHUNK_CELLS // max(1, cells)))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        picks = rng.integers(0, n_patients, size=(b, n_patients))
        # times each patient is drawn in each resample, [P, b]; every admission inherits its patient's
        counts = np.bincount((picks * b + np.arange(b)[:, None]).ravel(), minlength=n_patients * b)
        yield counts.reshape(n_patients, b)[patient].astype(float)


def _headline(prep: _Prepared, w: np.ndarray, threshold_sets: list[np.ndarray], names: list[str],
              full: bool = True) -> list[dict[str, np.ndarray]]:
    """Headline metrics for each weight column of ``w [N, B]``, one dict per threshold set.

    ``full=False`` computes only :data:`LIGHT_METRICS` (no pooled ranking, calibration or per-label
    entries), for subgroups and paired differences.
    """
    rank = np.stack([np.stack(col.auroc_auprc(w), axis=1) for col in prep.columns], axis=2)  # [B, 2, L]
    total = w.sum(axis=0)
    n_labels = prep.n_labels
    shared = {"macro_auroc": _mean_defined(rank[:, 0]), "macro_auprc": _mean_defined(rank[:, 1])}
    if full:
        micro_auroc, micro_auprc = prep.pooled.auroc_auprc(w)
        shared |= {"micro_auroc": micro_auroc, "micro_auprc": micro_auprc,
                   "brier": _safe_div(prep.sq_err @ w, total * n_labels, np.nan),
                   "ece": _safe_div(np.abs(prep.bin_gap.T @ w).sum(axis=0), total * n_labels, np.nan)}
    out = []
    for thr in threshold_sets:
        c = prep.threshold_counts(w, thr)
        per = _rates(c["tp"], c["fp"], c["pos"])
        micro = _rates(c["tp"].sum(axis=1), c["fp"].sum(axis=1), c["pos"].sum(axis=1))
        m = {"macro_f1": per["f1"].mean(axis=1), "micro_f1": micro["f1"], **shared}
        if full:
            m |= {"macro_precision": per["precision"].mean(axis=1), "macro_recall": per["recall"].mean(axis=1),
                  "hamming_accuracy": _safe_div(c["correct"], total * n_labels, np.nan),
                  "exact_match": _safe_div(c["exact"], total, np.nan)}
            for j, name in enumerate(names):
                m[f"{name}/f1"] = per["f1"][:, j]
                m[f"{name}/auroc"] = rank[:, 0, j]
                m[f"{name}/auprc"] = rank[:, 1, j]
        out.append(m)
    return out


def _bootstrap(y, p, threshold_sets: list[np.ndarray], groups, n_resamples: int, seed: int,
               names: list[str], full: bool = True) -> list[dict]:
    """Bootstrap intervals for each threshold set, sharing the (threshold-free) ranking metrics."""
    n = len(y)
    patient, n_patients = _patient_index(groups, n)
    prep = _Prepared(y, p, full)
    point = _headline(prep, np.ones((n, 1)), threshold_sets, names, full)
    draws = []
    if n and n_resamples > 0:
        with _single_threaded_blas():
            draws = [_headline(prep, w, threshold_sets, names, full)
                     for w in _resample_weights(patient, n_patients, n_resamples, seed, y.size)]
    results = []
    for s, pt in enumerate(point):
        res = {}
        for key, value in pt.items():
            samples = np.concatenate([d[s][key] for d in draws]) if draws else np.zeros(0)
            res[key] = _interval(_f(value[0]) if n else None, samples)
        results.append(res)
    return results


def _interval(value: float | None, samples: np.ndarray, key: str = "value") -> dict:
    """``{key: value, "low", "high", "n_valid"}``: the 95% percentile interval of the finite ``samples``."""
    samples = samples[np.isfinite(samples)]
    if value is None or samples.size == 0:
        return {key: value, "low": None, "high": None, "n_valid": int(samples.size)}
    low, high = np.percentile(samples, _PERCENTILES)
    return {key: value, "low": float(low), "high": float(high), "n_valid": int(samples.size)}


def bootstrap_metrics(y_true, y_prob, thresholds, groups, n_resamples: int = 1000, seed: int = 0,
                      label_names: Sequence[str] | None = None) -> dict:
    """Patient-level bootstrap 95% percentile intervals of the headline metrics.

    Each resample draws ``P`` patients with replacement from the ``P`` distinct ``groups`` (patient ids,
    one per row; ``None`` = every row its own patient) and keeps all admissions of every drawn patient,
    as many times as it was drawn. Returns ``{metric: {"value", "low", "high", "n_valid"}}`` where
    ``value`` is the estimate on the full data, ``low`` / ``high`` the 2.5 / 97.5 percentiles over the
    resamples in which the metric is defined (``n_valid`` of them), ``None`` when never defined.
    Metrics: ``macro_f1``, ``micro_f1``, ``macro_precision``, ``macro_recall``, ``macro_auroc``,
    ``micro_auroc``, ``macro_auprc``, ``micro_auprc``, ``brier``, ``ece``, ``hamming_accuracy``,
    ``exact_match`` and per label ``"<name>/f1"``, ``"<name>/auroc"``, ``"<name>/auprc"``.
    Deterministic for a ``seed``.
    """
    y, p = _as_2d(y_true, y_prob)
    names = _names(label_names, y.shape[1])
    return _bootstrap(y, p, [_thresholds(thresholds, names)], groups, n_resamples, seed, names)[0]


def paired_bootstrap_difference(y_true, prob_a, prob_b, thresholds_a, thresholds_b, groups,
                                n_resamples: int = 1000, seed: int = 0,
                                label_names: Sequence[str] | None = None) -> dict:
    """Model A minus model B on the same rows, with a paired patient-level bootstrap.

    Both models are scored on the same resamples, which are also those of :func:`bootstrap_metrics` with
    the same ``groups``, ``n_resamples`` and ``seed``. Returns, for ``macro_auprc`` and ``macro_f1`` (each
    model at its own thresholds), ``{"diff", "low", "high", "p_one_sided", "n_valid"}``: ``diff`` = A - B
    on all rows, ``low`` / ``high`` the 2.5 / 97.5 percentiles of the resampled differences (over the
    ``n_valid`` resamples where both are defined) and ``p_one_sided = (1 + #{d <= 0}) / (1 + n_valid)``,
    the bootstrap p-value against "A is not better than B".
    """
    y, pa = _as_2d(y_true, prob_a)
    _, pb = _as_2d(y_true, prob_b)
    names = _names(label_names, y.shape[1])
    models = [(_Prepared(y, pa, full=False), _thresholds(thresholds_a, names)),
              (_Prepared(y, pb, full=False), _thresholds(thresholds_b, names))]
    patient, n_patients = _patient_index(groups, len(y))

    def difference(w: np.ndarray) -> dict[str, np.ndarray]:
        a, b = (_headline(prep, w, [thr], names, full=False)[0] for prep, thr in models)
        return {m: a[m] - b[m] for m in PAIRED_METRICS}

    point = difference(np.ones((len(y), 1)))
    draws = []
    if len(y) and n_resamples > 0:
        with _single_threaded_blas():
            draws = [difference(w) for w in _resample_weights(patient, n_patients, n_resamples, seed, y.size)]
    out = {}
    for m in PAIRED_METRICS:
        d = np.concatenate([x[m] for x in draws]) if draws else np.zeros(0)
        d = d[np.isfinite(d)]
        out[m] = _interval(_f(point[m][0]) if len(y) else None, d, key="diff")
        out[m]["p_one_sided"] = float((1 + (d <= 0).sum()) / (1 + d.size)) if out[m]["low"] is not None else None
    return out


def _subgroup(y, p, mask, patient, threshold_sets, names, n_resamples, seed, min_patients) -> dict:
    """One subgroup's block of ``metrics.json`` (see :func:`evaluate_predictions`)."""
    m = np.asarray(mask, dtype=bool).ravel()
    if m.shape != (len(y),):
        raise ValueError(f"subgroup mask has {m.size} entries for {len(y)} rows")
    ys, ps, n = y[m], p[m], int(m.sum())
    n_patients = len(np.unique(patient[m]))
    support = ys.sum(axis=0)
    reason = None
    if n == 0:
        reason = "no admissions"
    elif n_patients < min_patients:
        reason = f"{n_patients} patients, fewer than {min_patients}"
    elif not ((support > 0) & (support < n)).any():
        reason = "no label has both positive and negative admissions"
    if reason:
        return {"n": n, "n_patients": n_patients, "too_small": True, "reason": reason}
    ci = _bootstrap(ys, ps, threshold_sets, patient[m], n_resamples, seed, names, full=False)
    tuned, default = (compute_metrics(ys, ps, t, names) for t in threshold_sets)
    return {**tuned, "n_patients": n_patients, "too_small": False, "reason": None, "bootstrap": ci[0],
            "at_0.5": {**default, "bootstrap": ci[1]}}


def evaluate_predictions(y_true, y_prob, val_thresholds, groups, label_names: Sequence[str] | None = None,
                         subgroups: Mapping[str, Mapping[str, np.ndarray]] | None = None, n_resamples: int = 1000,
                         seed: int = 0, threshold_rule: Mapping | None = None,
                         min_subgroup_patients: int = MIN_SUBGROUP_PATIENTS) -> dict:
    """The content of ``metrics.json`` for one split, with thresholds tuned on validation and frozen here.

    Returns::

        {"n", "n_patients", "n_labels", "label_names",
         "threshold_rule": threshold_rule,              # how the thresholds were tuned (as given)
         "thresholds": {name: t},                       # the frozen validation thresholds
         "at_tuned_thresholds": {**compute_metrics(..., thresholds), "bootstrap": bootstrap_metrics(...)},
         "at_0.5":              {**compute_metrics(..., 0.5),        "bootstrap": bootstrap_metrics(...)},
         "subgroups": {family: {name: block}}, "min_subgroup_patients",
         "bootstrap_settings": {"n_resamples", "seed", "unit": "patient", "method": "percentile", "level"}}

    ``subgroups`` maps a family (``"modality"``, ``"sex"``, ...) to ``{name: boolean row mask}``. A block
    is ``{**compute_metrics(rows in mask, thresholds), "n_patients", "too_small": False, "reason": None,
    "bootstrap": {LIGHT_METRICS intervals}, "at_0.5": {... the same at 0.5}}``, its bootstrap drawing the
    subgroup's own patients; a subgroup with fewer than ``min_subgroup_patients`` patients, or without a
    label that has both positives and negatives, is ``{"n", "n_patients", "too_small": True, "reason"}``.
    ``groups`` are the patient ids of the rows. All bootstraps of the whole split share their resamples.
    """
    y, p = _as_2d(y_true, y_prob)
    names = _names(label_names, y.shape[1])
    tuned = _thresholds(val_thresholds, names)
    default = np.full(len(names), 0.5)
    patient, n_patients = _patient_index(groups, len(y))
    ci_tuned, ci_default = _bootstrap(y, p, [tuned, default], groups, n_resamples, seed, names)
    subs = {str(family): {str(name): _subgroup(y, p, mask, patient, [tuned, default], names, n_resamples, seed,
                                               min_subgroup_patients)
                          for name, mask in masks.items()}
            for family, masks in (subgroups or {}).items()}
    return {
        "n": len(y),
        "n_patients": int(n_patients),
        "n_labels": len(names),
        "label_names": names,
        "threshold_rule": dict(threshold_rule) if threshold_rule is not None else None,
        "thresholds": {name: float(t) for name, t in zip(names, tuned)},
        "at_tuned_thresholds": {**compute_metrics(y, p, tuned, names), "bootstrap": ci_tuned},
        "at_0.5": {**compute_metrics(y, p, default, names), "bootstrap": ci_default},
        "subgroups": subs,
        "min_subgroup_patients": int(min_subgroup_patients),
        "bootstrap_settings": {"n_resamples": int(n_resamples), "seed": int(seed), "unit": "patient",
                               "method": "percentile", "level": CI_LEVEL},
    }
