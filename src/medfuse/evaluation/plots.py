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


def _wrap(text: str, width: int) -> str:
    """``text`` on lines of at most ``width`` characters, broken at spaces or underscores (kept)."""
    import re
    import textwrap

    words = re.findall(r"[^ _]+(?:_|$| )", text) or [text]
    lines, line = [], ""
    for w in words:
        if line and len(line + w.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += w
    lines.append(line.rstrip())
    return "\n".join(textwrap.fill(ln, width, break_long_words=True) for ln in lines if ln)


def roc_pr_figure(y_true, y_prob, label_names: Sequence[str] | None = None):
    """A grid with, per label, its ROC curve (with AUROC) beside its precision-recall curve (with AP), as a
    matplotlib ``Figure``.

    Two labels per row of the grid, each pair in its own subfigure titled with the label's name (wrapped
    when long), so no title is wider than its panels. A label lacking positives or negatives gets empty
    panels that say so instead of curves.
    """
    from medfuse.evaluation.metrics import compute_metrics

    y, p = _as_2d(y_true, y_prob)
    n_labels = y.shape[1]
    names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(n_labels)]
    per = compute_metrics(y, p, 0.5, names)["per_label"]
    pairs_per_row = 2 if n_labels > 1 else 1
    n_rows = math.ceil(n_labels / pairs_per_row)
    fig = _figure(5.3 * pairs_per_row, 2.75 * n_rows + 0.1)
    subfigs = np.asarray(fig.subfigures(n_rows, pairs_per_row, squeeze=False, wspace=0.04, hspace=0.03))
    for j, sub in enumerate(subfigs.ravel()):
        if j >= n_labels:
            continue
        name, m = names[j], per[names[j]]
        sub.suptitle(_wrap(name, 60), fontsize=9, fontweight="bold")
        ax_roc, ax_pr = sub.subplots(1, 2)
        for ax in (ax_roc, ax_pr):
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=7)
        ax_roc.set_title("ROC", fontsize=8)
        ax_pr.set_title(f"precision-recall (prevalence {m['prevalence'] or 0:.1%})", fontsize=8)
        ax_roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax_roc.set_xlabel("false positive rate", fontsize=7)
        ax_roc.set_ylabel("true positive rate", fontsize=7)
        ax_pr.set_xlabel("recall", fontsize=7)
        ax_pr.set_ylabel("precision", fontsize=7)
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
    return fig


def roc_pr_curves(y_true, y_prob, label_names: Sequence[str] | None = None,
                  path: str | Path | None = None) -> bytes:
    """:func:`roc_pr_figure` as PNG bytes."""
    return _png(roc_pr_figure(y_true, y_prob, label_names), path)


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


def _value_axis_limits(low: float, high: float, pad_fraction: float = 0.12) -> tuple[float, float]:
    """Axis limits for values (error bars included) from ``low`` to ``high``: the range, padded, where the
    values lie further from 0 than the range is wide (so 0.780 and 0.785 stay apart); else from 0 (from
    below the values when some are negative)."""
    span = max(high - low, 0.02 * max(abs(high), abs(low)), 1e-3)
    left, right = low - pad_fraction * span, high + pad_fraction * span
    if low < 0:
        return left, max(right, 0.0)
    return (left if left > 0 and low > span else 0.0), right


def comparison_chart_figure(rows: Sequence[dict], metric: str, name_key: str = "model",
                            group_key: str = "group"):
    """Dot plot of ``metric`` per model, one row per model (first row at the top), with error bars: mean ±
    spread (see ``_summarise`` for the rows), as a matplotlib ``Figure``.

    The value axis is zoomed to the models' range so that 0.780 and 0.785 stay apart; when it does not
    start at 0 its label says so and a break mark sits at its left end (dots, not bars, so no length is
    read from an axis that does not start at 0). A dashed line marks the best mean. Dots are coloured by
    ``row[group_key]`` when the rows have one (legend below). ``metric`` is also the axis label, so
    ``comparison_chart_figure([{"name": ..., "mean": ..., "std": ...}], "macro-AUPRC")`` works as well as
    rows keyed by the metric.
    """
    from matplotlib.transforms import blended_transform_factory

    summary = _summarise(rows, metric, name_key)
    groups: dict[str, str] = {}
    for row in rows:
        groups.setdefault(str(row.get(name_key, row.get("name", "?"))), str(row.get(group_key, "")))
    fig = _figure(8.0, 0.27 * len(summary) + 1.5)
    ax = fig.subplots()
    if not summary:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no values for {metric}", ha="center", va="center", transform=ax.transAxes)
        return fig
    names, centres, lo, hi = (list(v) for v in zip(*summary))
    y = np.arange(len(names))
    palette = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(groups[n] for n in names))}
    coloured = len(palette) > 1 or "" not in palette
    for yi, n, c, el, eh in zip(y, names, centres, lo, hi):
        colour = palette[groups[n]] if coloured else "C0"
        ax.errorbar(c, yi, xerr=[[el], [eh]], fmt="o", ms=5, color=colour, ecolor=colour, elinewidth=1.4,
                    capsize=3, label=groups[n] if coloured else None)
    best = max(centres)
    ax.axvline(best, color="0.45", lw=0.8, ls="--", zorder=0)
    left, right = _value_axis_limits(min(c - e for c, e in zip(centres, lo)),
                                     max(c + e for c, e in zip(centres, hi)))
    ax.set_xlim(left, right)
    ax.set_ylim(len(names) - 0.4, -0.6)  # first row at the top
    ax.set_yticks(y, names, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    beside = blended_transform_factory(ax.transAxes, ax.transData)
    any_spread = any(lo) or any(hi)
    for yi, c, el, eh in zip(y, centres, lo, hi):
        spread = (f" ± {el:.3f}" if el == eh else f" [{c - el:.3f}, {c + eh:.3f}]") if any_spread else ""
        ax.text(1.01, yi, f"{c:.3f}{spread}", transform=beside, ha="left", va="center", fontsize=7.5,
                fontweight="bold" if c == best else "normal")
    if left > 0:
        ax.set_xlabel(f"{metric} (axis starts at {left:.3f}, not 0; dashed: best mean {best:.3f})", fontsize=8)
        mark = {"marker": [(-1, -1.5), (1, 1.5)], "markersize": 9, "linestyle": "none", "color": "k",
                "mec": "k", "mew": 1, "clip_on": False}
        ax.plot([0.0, 0.012], [0, 0], transform=ax.transAxes, **mark)  # break mark: the axis does not start at 0
    else:
        ax.set_xlabel(f"{metric} (dashed: best mean {best:.3f})", fontsize=8)
    ax.set_title(metric, fontsize=10)
    if coloured:
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=min(6, len(unique)),
                   fontsize=7.5, frameon=False)
    return fig


def comparison_chart(rows: Sequence[dict], metric: str, name_key: str = "model",
                     path: str | Path | None = None, group_key: str = "group") -> bytes:
    """:func:`comparison_chart_figure` as PNG bytes."""
    return _png(comparison_chart_figure(rows, metric, name_key, group_key), path)


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
