"""Figures for ``medfuse evaluate`` and the HTML report, as PNG bytes.

Every function builds its own ``matplotlib.figure.Figure`` on an Agg canvas: no pyplot, no global
backend switch, no figure left registered anywhere, so they are safe in a server or a test run and
leave the caller's matplotlib state alone. matplotlib is imported inside the functions (importing
this module stays cheap for the CLI). Each takes an optional ``path``: the PNG is also written there.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DPI = 100


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    fig.clear()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def _as_2d(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_prob, dtype=float)
    y = y[:, None] if y.ndim == 1 else y
    p = p[:, None] if p.ndim == 1 else p
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must both be [N, L]")
    return y, p


def _curves(y: np.ndarray, p: np.ndarray):
    """ROC (fpr, tpr) and PR (recall, precision) points of one label, thresholds at the distinct scores."""
    order = np.argsort(-p, kind="stable")
    s, t = p[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last].astype(float)
    fp = np.cumsum(~t)[last].astype(float)
    n_pos, n_neg = tp[-1], fp[-1]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    recall = np.r_[0.0, tp / n_pos]
    precision = np.r_[1.0, tp / (tp + fp)]
    return fpr, tpr, recall, precision


def roc_pr_curves(y_true, y_prob, label_names: Sequence[str] | None = None,
                  path: str | Path | None = None) -> bytes:
    """A grid with, per label, its ROC curve (with AUROC) beside its precision-recall curve (with AP).

    Two labels per row of the grid. A label lacking positives or negatives gets an empty panel that
    says so instead of a curve.
    """
    from medfuse.evaluation.metrics import compute_metrics

    y, p = _as_2d(y_true, y_prob)
    n_labels = y.shape[1]
    names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(n_labels)]
    per = compute_metrics(y, p, 0.5, names)["per_label"]
    pairs_per_row = 2 if n_labels > 1 else 1
    n_rows = math.ceil(n_labels / pairs_per_row)
    fig = _figure(4.4 * pairs_per_row, 2.3 * n_rows + 0.3)
    axes = np.asarray(fig.subplots(n_rows, 2 * pairs_per_row, squeeze=False))
    for j in range(n_rows * pairs_per_row):
        ax_roc, ax_pr = axes[j // pairs_per_row, 2 * (j % pairs_per_row): 2 * (j % pairs_per_row) + 2]
        if j >= n_labels:
            ax_roc.set_axis_off()
            ax_pr.set_axis_off()
            continue
        name, m = names[j], per[names[j]]
        for ax in (ax_roc, ax_pr):
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=7)
        ax_roc.set_title(f"{name}: ROC", fontsize=8)
        ax_pr.set_title(f"{name}: PR (prev. {m['prevalence'] or 0:.1%})", fontsize=8)
        ax_roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        if m["auroc"] is None:
            for ax in (ax_roc, ax_pr):
                ax.text(0.5, 0.5, "undefined\n(no positives or\nno negatives)", ha="center", va="center",
                        fontsize=8, color="0.4")
            continue
        fpr, tpr, recall, precision = _curves(y[:, j], p[:, j])
        ax_roc.plot(fpr, tpr, color="C0", lw=1.2, label=f"AUROC {m['auroc']:.3f}")
        ax_pr.step(recall, precision, where="post", color="C1", lw=1.2, label=f"AP {m['auprc']:.3f}")
        ax_pr.axhline(m["prevalence"], color="0.7", lw=0.8, ls="--")
        ax_roc.legend(loc="lower right", fontsize=7, frameon=False)
        ax_pr.legend(loc="upper right", fontsize=7, frameon=False)
        ax_roc.set_xlabel("false positive rate", fontsize=7)
        ax_roc.set_ylabel("true positive rate", fontsize=7)
        ax_pr.set_xlabel("recall", fontsize=7)
        ax_pr.set_ylabel("precision", fontsize=7)
    return _png(fig, path)


def _reliability(y: np.ndarray, p: np.ndarray, n_bins: int):
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    mean_p = np.bincount(bins, weights=p, minlength=n_bins)
    frac = np.bincount(bins, weights=y.astype(float), minlength=n_bins)
    ok = count > 0
    return mean_p[ok] / count[ok], frac[ok] / count[ok], count


def calibration_plot(y_true, y_prob, label_names: Sequence[str] | None = None, n_bins: int = 10,
                     max_labels: int = 4, path: str | Path | None = None) -> bytes:
    """Reliability diagram: observed frequency against mean predicted probability per equal-width bin.

    Shows all (admission, label) cells pooled, and the ``max_labels`` most prevalent labels; below, a
    histogram of the predicted probabilities. The ECE of each curve is in its legend entry.
    """
    from medfuse.evaluation.metrics import expected_calibration_error

    y, p = _as_2d(y_true, y_prob)
    n_labels = y.shape[1]
    names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(n_labels)]
    fig = _figure(5.5, 6.0)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfect calibration")
    if y.size:
        mp, fr, _ = _reliability(y.ravel(), p.ravel(), n_bins)
        ece = expected_calibration_error(y.ravel().astype(float), p.ravel(), n_bins)
        ax.plot(mp, fr, "o-", color="k", lw=1.8, ms=4, label=f"all labels pooled (ECE {ece:.3f})")
        top = np.argsort(-y.sum(axis=0), kind="stable")[:max(0, max_labels)]
        for c, j in enumerate(top):
            if not y[:, j].any():
                continue
            mp, fr, _ = _reliability(y[:, j], p[:, j], n_bins)
            ece = expected_calibration_error(y[:, j].astype(float), p[:, j], n_bins)
            ax.plot(mp, fr, "o-", color=f"C{c}", lw=1, ms=3, alpha=0.8, label=f"{names[j]} (ECE {ece:.3f})")
        ax_hist.hist(p.ravel(), bins=np.linspace(0, 1, n_bins + 1), color="0.5")
        ax_hist.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax_hist.set_xlabel("predicted probability")
    ax_hist.set_ylabel("cells")
    return _png(fig, path)


def training_curves(history: Sequence[dict], keys: Sequence[str], path: str | Path | None = None) -> bytes:
    """One panel per key (e.g. ``"train_bce"``, ``"mi_estimate"``, ``"val_macro_auprc"``) against epoch.

    ``history`` is one dict per epoch; its ``"epoch"`` entry is the x value when present (else 1, 2, ...).
    Missing or non-finite values are skipped.
    """
    keys = list(keys)
    n_cols = min(3, max(1, len(keys)))
    n_rows = max(1, math.ceil(len(keys) / n_cols))
    fig = _figure(3.6 * n_cols, 2.6 * n_rows)
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= len(keys):
            ax.set_axis_off()
            continue
        key = keys[i]
        xs, ys = [], []
        for e, row in enumerate(history):
            v = row.get(key)
            if isinstance(v, (int, float, np.number)) and math.isfinite(float(v)):
                xs.append(row.get("epoch", e + 1))
                ys.append(float(v))
        if xs:
            ax.plot(xs, ys, "o-", ms=3, lw=1.2)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png(fig, path)


def _summarise(rows: Sequence[dict], metric: str, name_key: str) -> list[tuple[str, float, float, float]]:
    """Per model (first-seen order): (name, centre, lower error, upper error).

    A row names its model with ``name_key`` (else ``"name"``) and holds ``row[metric]``: a number or a
    dict with ``"value"`` / ``"mean"`` and optionally ``"low"`` + ``"high"`` or ``"std"``. A row without
    ``metric`` is itself such a dict (``{"name", "mean", "std"}``). Several rows of one model (e.g.
    seeds): mean ± sample standard deviation of their values. One row: its value with the
    ``low``/``high`` interval, else ± ``std`` (or ``row["<metric>_std"]``), else no error bar.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get(name_key, row.get("name", "?"))), []).append(row)

    def raw_of(row: dict):
        return row.get(metric) if metric in row else row

    def centre(v) -> float | None:
        if isinstance(v, dict):
            v = v.get("value", v.get("mean"))
        return float(v) if isinstance(v, (int, float, np.number)) and math.isfinite(float(v)) else None

    out = []
    for name, rs in groups.items():
        vals = [c for c in (centre(raw_of(r)) for r in rs) if c is not None]
        if not vals:
            continue
        if len(vals) > 1:
            m, s = float(np.mean(vals)), float(np.std(vals, ddof=1))
            out.append((name, m, s, s))
            continue
        v, raw = vals[0], raw_of(rs[0])
        if isinstance(raw, dict) and raw.get("low") is not None and raw.get("high") is not None:
            out.append((name, v, max(0.0, v - raw["low"]), max(0.0, raw["high"] - v)))
        elif isinstance(raw, dict) and raw.get("std") is not None:
            out.append((name, v, float(raw["std"]), float(raw["std"])))
        elif rs[0].get(f"{metric}_std") is not None:
            s = float(rs[0][f"{metric}_std"])
            out.append((name, v, s, s))
        else:
            out.append((name, v, 0.0, 0.0))
    return out


def comparison_chart(rows: Sequence[dict], metric: str, name_key: str = "model",
                     path: str | Path | None = None) -> bytes:
    """Bar chart of ``metric`` per model with error bars: mean ± spread (see ``_summarise`` for the rows).

    ``metric`` is also the axis label, so ``comparison_chart([{"name": ..., "mean": ..., "std": ...}],
    "macro-AUPRC")`` works as well as rows keyed by the metric.
    """
    summary = _summarise(rows, metric, name_key)
    fig = _figure(max(4.0, 0.9 * len(summary) + 1.5), 3.6)
    ax = fig.subplots()
    if summary:
        names, centres, lo, hi = zip(*summary)
        x = np.arange(len(names))
        ax.bar(x, centres, color=[f"C{i % 10}" for i in range(len(names))], alpha=0.85)
        ax.errorbar(x, centres, yerr=[lo, hi], fmt="none", ecolor="k", capsize=4, lw=1)
        high = max(c + e for c, e in zip(centres, hi))
        low = min(0.0, min(c - e for c, e in zip(centres, lo)))  # bars start at 0 unless values are negative
        pad = 0.08 * (high - low) if high > low else 0.05
        for xi, c, e in zip(x, centres, hi):
            ax.text(xi, c + e + pad / 4, f"{c:.3f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center",
                      fontsize=8)
        ax.set_ylim(low, high + pad)
    else:
        ax.text(0.5, 0.5, f"no values for {metric}", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig, path)


def cohort_flow_figure(manifest: dict, with_notes: int | None = None, with_labs: int | None = None):
    """A CONSORT-style flow of admissions from a cohort's ``manifest.json``, as a matplotlib ``Figure``.

    Admissions read -> excluded, by reason (``tables.admissions.dropped``; a difference to the cohort not
    covered by a reason is shown as ``other``) -> in the cohort (with a note / with lab results when
    ``with_notes`` / ``with_labs`` are given) -> the train / val / test splits (``split_sizes``).
    """
    admissions, sizes = manifest["tables"]["admissions"], manifest["split_sizes"]
    read, cohort = int(admissions["read"]), int(sizes["all"]["admissions"])
    reasons = {k.replace("_", " "): int(v) for k, v in admissions.get("dropped", {}).items() if v}
    if read - cohort - sum(reasons.values()):
        reasons["other"] = read - cohort - sum(reasons.values())
    excluded = "\n".join([f"Excluded: {read - cohort:,} admissions", *[f"{k}: {v:,}" for k, v in reasons.items()]])
    kept = [f"In the cohort: {cohort:,} admissions", f"{sizes['all']['patients']:,} patients"]
    if with_notes is not None:
        kept.append(f"with a note: {with_notes:,}")
    if with_labs is not None:
        kept.append(f"with lab results: {with_labs:,}")
    splits = [s for s in ("train", "val", "test") if s in sizes]

    fig = _figure(8.0, 5.2)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    box = {"boxstyle": "round,pad=0.5", "fc": "#f3f5f9", "ec": "#5b6578"}
    arrow = {"arrowstyle": "-|>", "color": "#5b6578", "lw": 1.2}
    ax.text(0.35, 0.92, f"Admissions read: {read:,}", ha="center", va="center", fontsize=10, bbox=box)
    ax.text(0.78, 0.7, excluded, ha="center", va="center", fontsize=8.5, bbox={**box, "fc": "#fdf1f0"})
    ax.annotate("", xy=(0.35, 0.56), xytext=(0.35, 0.87), arrowprops=arrow)
    ax.annotate("", xy=(0.65, 0.7), xytext=(0.35, 0.7), arrowprops=arrow)
    ax.text(0.35, 0.45, "\n".join(kept), ha="center", va="center", fontsize=9.5, bbox={**box, "fc": "#eef7ee"})
    for i, s in enumerate(splits):
        x = (i + 0.5) / len(splits)
        ax.annotate("", xy=(x, 0.18), xytext=(0.35, 0.34), arrowprops=arrow)
        ax.text(x, 0.1, f"{s}\n{sizes[s]['admissions']:,} admissions\n{sizes[s]['patients']:,} patients",
                ha="center", va="center", fontsize=9, bbox=box)
    return fig


def cohort_flow(manifest: dict, with_notes: int | None = None, with_labs: int | None = None,
                path: str | Path | None = None) -> bytes:
    """:func:`cohort_flow_figure` as PNG bytes."""
    return _png(cohort_flow_figure(manifest, with_notes, with_labs), path)
