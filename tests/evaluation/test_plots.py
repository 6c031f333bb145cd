"""Evaluation figures: valid PNG bytes of a sensible size, written to disk on request, no pyplot state."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from medfuse.evaluation import plots


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
