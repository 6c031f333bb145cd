"""Evaluation figures: valid PNG bytes of a sensible size, written to disk on request, no pyplot state, every
title and label inside the figure, the comparison axis zoomed to the values; the report's HTML parts that
the 1280 px review looked at (comparison tables on one line, lab names whole, the config box)."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from medfuse.evaluation import plots, report


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def preds():
    rng = np.random.default_rng(0)
    n, n_labels = 1500, 10
    y = rng.random((n, n_labels)) < np.linspace(0.02, 0.4, n_labels)
    y[:, 3] = False  # a label without positives gets a panel saying so
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, n_labels)) + 1.5 * y - 1.5)))
    return y, p, [f"disease_{j}" for j in range(n_labels)]


def test_roc_pr_curves(preds, tmp_path):
    y, p, names = preds
    out = tmp_path / "figs" / "roc_pr.png"
    data = plots.roc_pr_curves(y, p, names, path=out)
    w, h = _png_size(data)
    assert 600 <= w <= 2000 and h >= 5 * 150  # 10 labels: 5 rows of (ROC, PR) pairs
    assert 10_000 < len(data) < 2_000_000
    assert out.read_bytes() == data


def test_roc_pr_curves_single_label():
    rng = np.random.default_rng(1)
    data = plots.roc_pr_curves(rng.random(100) < 0.3, rng.random(100))
    assert _png_size(data)[0] > 200


def test_calibration_plot(preds):
    y, p, names = preds
    data = plots.calibration_plot(y, p, names, max_labels=3)
    w, h = _png_size(data)
    assert 300 <= w <= 1500 and 300 <= h <= 1500 and len(data) > 5_000


def test_training_curves_skip_missing_values(tmp_path):
    history = [{"epoch": e, "train_bce": 1 / e, "mi_estimate": 0.1 * e, "val_macro_auprc": 0.4 + 0.01 * e}
               for e in range(1, 9)]
    history[2]["mi_estimate"] = math.nan
    del history[5]["val_macro_auprc"]
    data = plots.training_curves(history, ["train_bce", "mi_estimate", "val_macro_auprc", "absent"],
                                 path=tmp_path / "curves.png")
    w, h = _png_size(data)
    assert w > 500 and h > 300
    assert (tmp_path / "curves.png").read_bytes() == data


def test_comparison_chart_error_bars():
    rows = [{"model": "labs", "macro_auprc": 0.40 + 0.01 * s} for s in range(3)]
    rows += [{"model": "notes", "macro_auprc": {"value": 0.5, "low": 0.45, "high": 0.56}},
             {"model": "medfuse", "macro_auprc": 0.6, "macro_auprc_std": 0.02},
             {"model": "broken", "macro_auprc": None}]
    summary = plots._summarise(rows, "macro_auprc", "model")
    assert [s[0] for s in summary] == ["labs", "notes", "medfuse"]
    labs = summary[0]
    assert labs[1] == pytest.approx(0.41) and labs[2] == pytest.approx(0.01)  # mean ± sd over seeds
    assert summary[1][2:] == pytest.approx((0.05, 0.06))  # asymmetric bootstrap interval
    assert summary[2][2:] == (0.02, 0.02)
    data = plots.comparison_chart(rows, "macro_auprc")
    assert _png_size(data)[0] >= 400
    assert plots.comparison_chart([], "macro_auprc")[:4] == b"\x89PNG"
    # rows that are the summary itself, the metric only naming the axis
    pre = [{"name": "a", "mean": 0.3, "std": 0.01}, {"name": "b", "mean": 0.35, "std": 0.02}]
    assert plots._summarise(pre, "macro-AUPRC", "model") == [("a", 0.3, 0.01, 0.01), ("b", 0.35, 0.02, 0.02)]
    assert _png_size(plots.comparison_chart(pre, "macro-AUPRC"))[0] >= 400


def test_no_pyplot_state():
    """Run in a fresh interpreter: other tests of the session may have imported pyplot themselves."""
    code = """
import sys
import numpy as np
from medfuse.evaluation import plots
y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
p = np.array([[0.9, 0.2], [0.6, 0.4], [0.4, 0.7], [0.1, 0.4]])
plots.calibration_plot(y, p)
plots.roc_pr_curves(y, p)
plots.training_curves([{"loss": 1.0}], ["loss"])
plots.comparison_chart([{"model": "m", "f1": 0.5}], "f1")
import matplotlib
print("matplotlib.pyplot" in sys.modules, matplotlib.rcParams["backend"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "pdf"})
    assert out.stdout.split() == ["False", "pdf"]  # no pyplot, the caller's backend left alone


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_cohort_flow_counts_are_the_manifests(mimic3_cohort, tmp_path):
    import copy
    import json

    manifest = json.loads((mimic3_cohort / "manifest.json").read_text())
    sizes, adm = manifest["split_sizes"], manifest["tables"]["admissions"]
    text = "\n".join(_texts(plots.cohort_flow_figure(manifest, with_notes=0, with_labs=117)))
    assert f"Admissions read: {adm['read']:,}" in text
    assert f"Excluded: {adm['read'] - sizes['all']['admissions']:,} admissions" in text
    assert f"In the cohort: {sizes['all']['admissions']:,} admissions\n{sizes['all']['patients']:,} patients" in text
    assert "with a note: 0\nwith lab results: 117" in text
    for split in ("train", "val", "test"):
        assert f"{split}\n{sizes[split]['admissions']:,} admissions\n{sizes[split]['patients']:,} patients" in text
    assert sum(sizes[s]["admissions"] for s in ("train", "val", "test")) == sizes["all"]["admissions"]
    # exclusions by reason, and whatever the reasons do not account for as "other"
    dropped = copy.deepcopy(manifest)
    dropped["tables"]["admissions"].update(read=adm["read"] + 1210, dropped={"no_patient": 1200, "bad_times": 4})
    text = "\n".join(_texts(plots.cohort_flow_figure(dropped)))
    assert f"Admissions read: {adm['read'] + 1210:,}" in text
    assert "Excluded: 1,210 admissions\nno patient: 1,200\nbad times: 4\nother: 6" in text
    assert "with a note" not in text
    png = plots.cohort_flow(manifest, path=tmp_path / "flow.png")
    assert (tmp_path / "flow.png").read_bytes() == png and _png_size(png) == (800, 520)


def _outside(fig, tol: float = 0.5) -> list[tuple[str, tuple]]:
    """Texts the renderer draws beyond the figure's edges: titles (of subfigures too), axis labels, texts,
    legends. Tick labels are left out (matplotlib keeps invisible ones beyond the view limits)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    box, out = fig.bbox, []
    for t in fig.findobj(Text):
        if id(t) in ticks or not t.get_visible() or not t.get_text().strip():
            continue
        b = t.get_window_extent(renderer)
        if b.x0 < box.x0 - tol or b.y0 < box.y0 - tol or b.x1 > box.x1 + tol or b.y1 > box.y1 + tol:
            out.append((t.get_text(), tuple(round(v) for v in b.extents)))
    return out


def test_roc_pr_titles_fit_inside_the_figure(preds):
    """The review found two PR panel titles cut at the figure's right edge ("coronary_artery_disease: PR (prev. 30")."""
    y, p, _ = preds
    names = ["hypertension", "coronary_artery_disease", "atrial_fibrillation", "heart_failure", "diabetes",
             "hyperlipidemia", "chronic_kidney_disease", "acute_kidney_injury",
             "chronic_obstructive_pulmonary_disease_with_acute_exacerbation", "anemia"]
    fig = plots.roc_pr_figure(y, p, names)
    assert _outside(fig) == []
    titles = [sf.get_suptitle() for sf in fig.subfigs]
    assert titles[1] == "coronary_artery_disease" and "\n" in titles[8]  # a long name is wrapped, not cut
    assert all(t.replace("\n", "") in names for t in titles)
    assert _outside(plots.roc_pr_figure(y[:, :1], p[:, :1], ["x" * 120])) == []


def test_comparison_axis_zoomed_to_close_values():
    """0.780 against 0.785 must be visibly apart: the value axis starts near the values, not at 0, and says so."""
    rows = [{"name": "MEDFuse", "group": "MEDFuse", "mean": 0.785, "std": 0.002},
            {"name": "Concatenation + MLP", "group": "fusion", "mean": 0.780, "std": 0.001}]
    fig = plots.comparison_chart_figure(rows, "macro-AUPRC")
    ax = fig.axes[0]
    left, right = ax.get_xlim()
    assert 0.7 < left < 0.779 and 0.787 < right < 0.8
    assert (0.785 - 0.780) / (right - left) > 0.25  # the gap is a quarter of the axis at least
    assert "not 0" in ax.get_xlabel() and f"{left:.3f}" in ax.get_xlabel()
    assert _outside(fig) == []
    # values spread from near 0: the axis starts at 0 and says nothing about it
    fig = plots.comparison_chart_figure([{"name": "a", "mean": 0.05, "std": 0.01},
                                         {"name": "b", "mean": 0.6, "std": 0.02}], "macro-AUPRC")
    assert fig.axes[0].get_xlim()[0] == 0 and "not 0" not in fig.axes[0].get_xlabel()
    assert plots._value_axis_limits(-0.2, 0.3)[0] < -0.2  # negative values: below them


def test_comparison_chart_long_names_fit():
    rows = [{"model": f"MEDFuse w/o {'a very long ablation name ' * 2}{i}", "macro_auprc": 0.7 + 0.01 * i}
            for i in range(14)]
    fig = plots.comparison_chart_figure(rows, "macro_auprc")
    assert _outside(fig) == [] and len(fig.axes[0].get_yticklabels()) == 14


def test_comparison_tables_one_line_cells():
    models = []
    for i, (name, group) in enumerate([("LightGBM (labs)", "labs only"), ("Concatenation + MLP", "fusion"),
                                       ("MEDFuse", "MEDFuse"), ("MEDFuse w/o MLTM pre-training", "ablation")]):
        m = {k: {"mean": 0.7 + 0.01 * i, "std": 0.004} for k in ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")}
        b = {k: {"value": 0.7, "low": 0.68, "high": 0.72} for k in ("macro_f1", "macro_auprc")}
        row = {"name": name, "group": group, "summary": m, "bootstrap_seed0": b, "tuning": None}
        if name != "MEDFuse":
            row["vs_medfuse"] = {"macro_auprc": {"diff": 0.01, "low": -0.01, "high": 0.03, "p_one_sided": 0.2}}
        models.append(row)
    html = report.comparison_section({"models": models, "seeds": [0, 1], "n_resamples": 200, "grid": {}})
    assert html.count('<table class="nowrap">') == 2  # mean ± sd | intervals and Δ: cells kept on one line
    assert "Δ macro-AUPRC, MEDFuse − row" in html and html.count("LightGBM (labs)") == 2
    assert "vs Concatenation + MLP: " in html and 'alt="comparison chart' in html
    assert "white-space:nowrap" in report.CSS and "white-space:pre-wrap" in report.CSS  # and the config wraps


def test_lab_bars_keep_whole_names():
    items = [{"label": "Alanine Aminotransferase (ALT)", "value": 78.0, "unit": "IU/L", "score": -0.003},
             {"label": "Creatine Kinase, MB Isoenzyme", "value": 18.0, "unit": "ng/mL", "score": 0.012},
             {"label": "pH", "value": None, "unit": None, "score": 0.0}]
    html = report.lab_bars(items, 0.012)
    assert "Alanine Aminotransferase (ALT)</td>" in html and "Creatine Kinase, MB Isoenzyme</td>" in html
    assert "…" not in html and "78 IU/L" in html and "-0.003" in html and "+0.012" in html
    assert "width:100.0%;background:rgba(214,39,40" in html  # the largest score fills its half, red
    assert "width:25.0%;background:rgba(31,119,180" in html  # a quarter of it, blue, against
    assert report.lab_bars([], 1.0) == "<p class='sub'>No lab test measured.</p>"
