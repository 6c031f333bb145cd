"""Evaluation metrics against hand computations and scikit-learn; thresholds; patient-level bootstrap."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from medfuse.evaluation.metrics import (
    _Prepared,
    bootstrap_metrics,
    compute_metrics,
    evaluate_predictions,
    expected_calibration_error,
    paired_bootstrap_difference,
)
from medfuse.evaluation.thresholds import tune_thresholds


def _data(n: int = 2000, n_labels: int = 6, seed: int = 0, decimals: int | None = 2):
    """Multi-label data with informative, partly tied (rounded) probabilities."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < np.linspace(0.03, 0.45, n_labels)).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, n_labels)) + 1.6 * y - 1.4)))
    if decimals is not None:
        p = np.round(p, decimals)
    return y, p


def _json_ok(obj) -> None:
    json.dumps(obj, allow_nan=False)


# ------------------------------------------------------------------------------------ compute_metrics
def test_hand_computed_example():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.6, 0.4], [0.4, 0.7], [0.1, 0.4]])
    m = compute_metrics(y, p, 0.5, ["a", "b"])
    a, b = m["per_label"]["a"], m["per_label"]["b"]
    # label a: predicted [1, 1, 0, 0] -> tp 1, fp 1, fn 1, tn 1
    assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (1, 1, 1, 1)
    assert a["precision"] == 0.5 and a["recall"] == 0.5 and a["f1"] == 0.5
    # AUROC a: positives {0.9, 0.4} vs negatives {0.6, 0.1}: pairs won 0.9>0.6, 0.9>0.1, 0.4>0.1 -> 3/4
    assert a["auroc"] == pytest.approx(0.75)
    # AP a: ranking 0.9(+) 0.6(-) 0.4(+) 0.1(-): 0.5 * 1 + 0.5 * 2/3
    assert a["auprc"] == pytest.approx(0.5 + 1 / 3)
    # label b: predicted [0, 0, 1, 0] -> tp 1, fn 1, precision 1, recall 0.5, f1 2/3
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (1, 0, 1, 2)
    assert b["f1"] == pytest.approx(2 / 3)
    # AUROC b: positives {0.4, 0.7} vs negatives {0.2, 0.4}: 0.7 wins both, 0.4 beats 0.2 and ties 0.4
    assert b["auroc"] == pytest.approx((2 + 1.5) / 4)
    assert b["brier"] == pytest.approx(np.mean([0.04, 0.36, 0.09, 0.16]))
    assert m["micro"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert m["macro"]["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # cells right: row0 both, row1 neither, row2 only b, row3 both -> 5/8; rows fully right: 2/4
    assert m["hamming_accuracy"] == 0.625 and m["exact_match"] == 0.5
    assert m["per_label"]["a"]["support"] == 2 and m["per_label"]["b"]["prevalence"] == 0.5
    _json_ok(m)


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_matches_sklearn_on_random_data(decimals):
    y, p = _data(decimals=decimals)
    thr = np.linspace(0.3, 0.6, y.shape[1])
    m = compute_metrics(y, p, thr)
    pred = (p >= thr).astype(int)
    names = list(m["per_label"])
    for j, name in enumerate(names):
        got = m["per_label"][name]
        assert got["f1"] == pytest.approx(skm.f1_score(y[:, j], pred[:, j]), abs=1e-9)
        assert got["precision"] == pytest.approx(skm.precision_score(y[:, j], pred[:, j]), abs=1e-9)
        assert got["recall"] == pytest.approx(skm.recall_score(y[:, j], pred[:, j]), abs=1e-9)
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y[:, j], p[:, j]), abs=1e-9)
        assert got["auprc"] == pytest.approx(skm.average_precision_score(y[:, j], p[:, j]), abs=1e-9)
        assert got["brier"] == pytest.approx(skm.brier_score_loss(y[:, j], p[:, j]), abs=1e-12)
    for avg in ("macro", "micro", "weighted"):
        got = m[avg]
        assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average=avg, zero_division=0), abs=1e-9)
        assert got["precision"] == pytest.approx(skm.precision_score(y, pred, average=avg, zero_division=0),
                                                 abs=1e-9)
        assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average=avg, zero_division=0), abs=1e-9)
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, p, average=avg), abs=1e-9)
        assert got["auprc"] == pytest.approx(skm.average_precision_score(y, p, average=avg), abs=1e-9)
    assert m["hamming_accuracy"] == pytest.approx(1 - skm.hamming_loss(y, pred), abs=1e-12)
    assert m["exact_match"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    assert m["labels_undefined"] == 0
    _json_ok(m)


def test_thresholds_as_mapping_and_float():
    y, p = _data(300, 3)
    names = ["x", "y", "z"]
    a = compute_metrics(y, p, {"z": 0.3, "x": 0.5, "y": 0.4}, names)
    b = compute_metrics(y, p, [0.5, 0.4, 0.3], names)
    assert a == b
    assert set(compute_metrics(y, p, 0.5, names)["thresholds"].values()) == {0.5}
    with pytest.raises(ValueError):
        compute_metrics(y, p, {"x": 0.5}, names)
    with pytest.raises(ValueError):
        compute_metrics(y, p[:, :2], 0.5)


def test_label_without_positives_is_reported_not_crashed():
    y, p = _data(800, 4)
    y[:, 1] = 0  # no positive
    y[:, 2] = 1  # no negative
    m = compute_metrics(y, p, 0.5, ["a", "none", "all", "d"])
    for name in ("none", "all"):
        assert m["per_label"][name]["auroc"] is None and m["per_label"][name]["auprc"] is None
    assert m["labels_undefined"] == 2 and m["labels_undefined_names"] == ["none", "all"]
    assert m["labels_without_positives"] == ["none"]
    assert m["per_label"]["none"]["support"] == 0 and m["per_label"]["none"]["recall"] == 0.0
    keep = [0, 3]
    assert m["macro"]["auroc"] == pytest.approx(skm.roc_auc_score(y[:, keep], p[:, keep], average="macro"))
    assert m["macro"]["auprc"] == pytest.approx(skm.average_precision_score(y[:, keep], p[:, keep]))
    pred = (p >= 0.5).astype(int)
    assert m["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert m["micro"]["auroc"] == pytest.approx(skm.roc_auc_score(y.ravel(), p.ravel()))
    _json_ok(m)


def test_all_labels_undefined_and_empty_input():
    y = np.zeros((50, 3), int)
    p = np.random.default_rng(0).random((50, 3))
    m = compute_metrics(y, p, 0.5)
    assert m["macro"]["auroc"] is None and m["micro"]["auroc"] is None and m["weighted"]["f1"] == 0.0
    assert m["labels_undefined"] == 3
    _json_ok(m)
    e = compute_metrics(np.zeros((0, 3)), np.zeros((0, 3)), 0.5)
    assert e["n"] == 0 and e["macro"]["f1"] is None and e["ece"] is None and e["hamming_accuracy"] is None
    _json_ok(e)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([[1], [0]], [[np.nan], [0.2]])
    with pytest.raises(ValueError, match="0/1"):
        compute_metrics([[2], [0]], [[0.1], [0.2]])


# --------------------------------------------------------------------------------------------- ECE
def test_ece_small_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(3)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.03
    logit = np.log(p / (1 - p))
    over = 1 / (1 + np.exp(-3 * logit))  # same ranking, pushed towards 0 and 1
    assert expected_calibration_error(y, over) > 0.1
    m = compute_metrics(y[:, None], over[:, None])
    assert m["ece"] == pytest.approx(expected_calibration_error(y, over))
    assert m["per_label"]["label_0"]["ece"] == pytest.approx(m["ece"])


def test_ece_hand_computed():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.95, 0.9, 1.0])  # bins 0, 1, 9, 9, 9 (1.0 goes to the last bin)
    expected = (abs(0.05 - 0) + abs(0.15 - 1) + abs((0.95 + 0.9 + 1.0) - 2)) / 5
    assert expected_calibration_error(y, p) == pytest.approx(expected)


# --------------------------------------------------------------------------------------- thresholds
def test_tuned_thresholds_maximise_validation_f1():
    y, p = _data(1500, 5, seed=4)
    y[:, 4] = 0
    t = tune_thresholds(y, p, rule="f1_max")
    assert t[4] == 0.5
    grid = np.linspace(0, 1, 1001)
    for j in range(4):
        best = skm.f1_score(y[:, j], p[:, j] >= t[j])
        assert t[j] in set(p[:, j])  # one of the predicted probabilities
        pred = p[:, j, None] >= grid  # [N, grid]
        tp = (pred & (y[:, j, None] == 1)).sum(axis=0)
        on_grid = (2 * tp / (pred.sum(axis=0) + y[:, j].sum())).max()
        assert best >= on_grid - 1e-12
        _, _, cand = skm.precision_recall_curve(y[:, j], p[:, j])
        assert best == pytest.approx(max(skm.f1_score(y[:, j], p[:, j] >= c) for c in cand), abs=1e-12)
        assert compute_metrics(y, p, t)["per_label"][f"label_{j}"]["f1"] == pytest.approx(best)


def test_tuned_thresholds_beat_half_on_validation():
    y, p = _data(3000, 4, seed=5, decimals=None)
    t = tune_thresholds(y, p, rule="f1_max")
    tuned = compute_metrics(y, p, t)["per_label"]
    default = compute_metrics(y, p, 0.5)["per_label"]
    assert all(tuned[k]["f1"] >= default[k]["f1"] for k in tuned)


# ---------------------------------------------------------------------------------------- bootstrap
def test_weighted_ranking_equals_sklearn_on_repeated_rows():
    """Resample weights = row multiplicities: AUROC / AP must equal scikit-learn on the expanded data."""
    y, p = _data(400, 3, seed=6, decimals=1)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=(400, 5)).astype(float)
    prep = _Prepared(y.astype(bool), p)
    for j, col in enumerate(prep.columns):
        auroc, ap = col.auroc_auprc(w)
        for b in range(w.shape[1]):
            rep = np.repeat(np.arange(400), w[:, b].astype(int))
            assert auroc[b] == pytest.approx(skm.roc_auc_score(y[rep, j], p[rep, j]), abs=1e-12)
            assert ap[b] == pytest.approx(skm.average_precision_score(y[rep, j], p[rep, j]), abs=1e-12)
    auroc, ap = prep.pooled.auroc_auprc(w)
    rep = np.repeat(np.arange(400), w[:, 0].astype(int))
    assert auroc[0] == pytest.approx(skm.roc_auc_score(y[rep], p[rep], average="micro"), abs=1e-12)
    assert ap[0] == pytest.approx(skm.average_precision_score(y[rep], p[rep], average="micro"), abs=1e-12)


def test_bootstrap_point_values_and_intervals():
    y, p = _data(1500, 4, seed=7)
    groups = np.random.default_rng(7).integers(0, 600, 1500)
    t = tune_thresholds(y, p)
    names = ["a", "b", "c", "d"]
    b = bootstrap_metrics(y, p, t, groups, n_resamples=300, seed=1, label_names=names)
    m = compute_metrics(y, p, t, names)
    assert b["macro_f1"]["value"] == pytest.approx(m["macro"]["f1"])
    assert b["micro_f1"]["value"] == pytest.approx(m["micro"]["f1"])
    assert b["macro_auroc"]["value"] == pytest.approx(m["macro"]["auroc"])
    assert b["micro_auroc"]["value"] == pytest.approx(m["micro"]["auroc"])
    assert b["macro_auprc"]["value"] == pytest.approx(m["macro"]["auprc"])
    assert b["ece"]["value"] == pytest.approx(m["ece"])
    assert b["brier"]["value"] == pytest.approx(m["brier"])
    assert b["exact_match"]["value"] == pytest.approx(m["exact_match"])
    assert b["c/auprc"]["value"] == pytest.approx(m["per_label"]["c"]["auprc"])
    for key, ci in b.items():
        assert ci["low"] <= ci["value"] <= ci["high"], key
        assert ci["high"] - ci["low"] > 0, key
        assert ci["n_valid"] == 300
    _json_ok(b)


def test_bootstrap_is_seeded():
    y, p = _data(500, 3)
    g = np.arange(500) // 3
    a = bootstrap_metrics(y, p, 0.5, g, n_resamples=100, seed=3)
    assert a == bootstrap_metrics(y, p, 0.5, g, n_resamples=100, seed=3)
    assert a != bootstrap_metrics(y, p, 0.5, g, n_resamples=100, seed=4)


def _width(ci: dict) -> float:
    return ci["high"] - ci["low"]


def test_bootstrap_narrows_with_more_patients():
    small = _data(300, 3, seed=8)
    large = _data(6000, 3, seed=8)
    bs = bootstrap_metrics(*small, 0.5, np.arange(300), n_resamples=200)
    bl = bootstrap_metrics(*large, 0.5, np.arange(6000), n_resamples=200)
    for key in ("macro_auroc", "micro_f1", "macro_auprc"):
        assert _width(bl[key]) < 0.5 * _width(bs[key]), key


def test_bootstrap_keeps_a_patients_admissions_together():
    # 150 patients, each with 20 identical admissions (same labels, same predictions)
    y1, p1 = _data(150, 3, seed=9)
    reps = 20
    y, p = np.repeat(y1, reps, axis=0), np.repeat(p1, reps, axis=0)
    patients = np.repeat(np.arange(150) * 7 + 1000, reps)
    patient_level = bootstrap_metrics(y, p, 0.5, patients, n_resamples=200, seed=2)
    admission_level = bootstrap_metrics(y, p, 0.5, None, n_resamples=200, seed=2)
    for key in ("macro_auroc", "micro_auroc", "macro_f1", "micro_f1", "macro_auprc"):
        assert _width(patient_level[key]) > 2.5 * _width(admission_level[key]), key
    # drawing whole patients: identical to bootstrapping one admission per patient (metrics are
    # invariant to multiplying every weight by 20), resample for resample
    one_each = bootstrap_metrics(y1, p1, 0.5, np.arange(150) * 7 + 1000, n_resamples=200, seed=2)
    for key, ci in one_each.items():
        for part in ("value", "low", "high"):
            assert patient_level[key][part] == pytest.approx(ci[part], abs=1e-12), (key, part)


def test_bootstrap_with_undefined_label():
    y, p = _data(400, 3, seed=10)
    y[:, 1] = 0
    y[:5, 2] = 1
    y[5:, 2] = 0  # very rare: absent from some resamples
    b = bootstrap_metrics(y, p, 0.5, np.arange(400) // 2, n_resamples=200, label_names=["a", "none", "rare"])
    assert b["none/auroc"] == {"value": None, "low": None, "high": None, "n_valid": 0}
    assert b["none/f1"]["value"] == 0.0
    assert 0 < b["rare/auroc"]["n_valid"] < 200
    assert b["macro_auroc"]["n_valid"] == 200
    _json_ok(b)


# -------------------------------------------------------------------------------- evaluate_predictions
def test_evaluate_predictions_structure():
    y_val, p_val = _data(1000, 4, seed=12)
    y, p = _data(1200, 4, seed=13)
    y[:, 3] = 0
    names = ["a", "b", "c", "d"]
    t = tune_thresholds(y_val, p_val)
    groups = np.arange(1200) // 2
    rng = np.random.default_rng(0)
    female = rng.random(1200) < 0.5
    subgroups = {"modality": {"missing_note": rng.random(1200) < 0.3, "missing_labs": np.zeros(1200, bool)},
                 "sex": {"F": female, "M": ~female},
                 "tiny": {"ten_patients": groups < 10, "no_positive": (groups >= 100) & (y[:, :3].sum(axis=1) == 0)}}
    rule = {"rule": "plateau", "tolerance": 0.08}
    out = evaluate_predictions(y, p, t, groups, names, subgroups, n_resamples=100, seed=0, threshold_rule=rule)
    assert set(out) == {"n", "n_patients", "n_labels", "label_names", "threshold_rule", "thresholds",
                        "at_tuned_thresholds", "at_0.5", "subgroups", "min_subgroup_patients", "bootstrap_settings"}
    _json_ok(out)
    assert out["threshold_rule"] == rule and out["min_subgroup_patients"] == 20
    assert out["n"] == 1200 and out["n_patients"] == 600 and out["label_names"] == names
    assert out["thresholds"] == {n: float(v) for n, v in zip(names, t)}  # frozen from validation
    assert out["at_tuned_thresholds"]["thresholds"] == out["thresholds"]
    assert set(out["at_0.5"]["thresholds"].values()) == {0.5}
    assert out["at_tuned_thresholds"]["macro"] == compute_metrics(y, p, t, names)["macro"]
    for at in ("at_tuned_thresholds", "at_0.5"):
        boot = out[at]["bootstrap"]
        for key in ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc"):
            group, metric = key.split("_")
            assert boot[key]["value"] == pytest.approx(out[at][group][metric])
            assert boot[key]["low"] <= boot[key]["value"] <= boot[key]["high"]
    # threshold-free metrics: both bootstraps use the same resamples
    assert out["at_0.5"]["bootstrap"]["macro_auroc"] == out["at_tuned_thresholds"]["bootstrap"]["macro_auroc"]
    assert out["at_tuned_thresholds"]["per_label"]["d"]["auroc"] is None
    assert out["at_tuned_thresholds"]["labels_undefined"] == 1

    assert list(out["subgroups"]) == ["modality", "sex", "tiny"]
    sub = out["subgroups"]["modality"]["missing_note"]
    mask = subgroups["modality"]["missing_note"]
    assert sub["n"] == int(mask.sum()) and sub["n_patients"] == len(np.unique(groups[mask]))
    assert sub["too_small"] is False and sub["reason"] is None
    expected = compute_metrics(y[mask], p[mask], t, names)
    assert {k: v for k, v in sub.items() if k in expected} == expected
    assert {k: v for k, v in sub["at_0.5"].items() if k != "bootstrap"} == compute_metrics(y[mask], p[mask], 0.5, names)
    # the subgroup's interval: a bootstrap of its own patients, the same as bootstrap_metrics on its rows
    own = bootstrap_metrics(y[mask], p[mask], t, groups[mask], n_resamples=100, seed=0, label_names=names)
    assert set(sub["bootstrap"]) == {"macro_f1", "micro_f1", "macro_auprc", "macro_auroc"}
    for key, ci in sub["bootstrap"].items():
        assert ci == pytest.approx(own[key]), key
    for name, g in out["subgroups"]["sex"].items():
        assert g["too_small"] is False and g["n"] == int(subgroups["sex"][name].sum())
    assert out["subgroups"]["sex"]["F"]["n"] + out["subgroups"]["sex"]["M"]["n"] == 1200
    # too small: reported with counts and a reason, no metrics
    assert out["subgroups"]["modality"]["missing_labs"] == {"n": 0, "n_patients": 0, "too_small": True,
                                                            "reason": "no admissions"}
    assert out["subgroups"]["tiny"]["ten_patients"] == {"n": 20, "n_patients": 10, "too_small": True,
                                                        "reason": "10 patients, fewer than 20"}
    none = out["subgroups"]["tiny"]["no_positive"]
    assert none["too_small"] and none["reason"] == "no label has both positive and negative admissions"
    assert none["n_patients"] >= 20
    assert out["bootstrap_settings"]["n_resamples"] == 100 and out["bootstrap_settings"]["unit"] == "patient"
    fewer = evaluate_predictions(y, p, t, groups, names, subgroups, n_resamples=0, min_subgroup_patients=5)
    assert fewer["subgroups"]["tiny"]["ten_patients"]["too_small"] is False


# ---------------------------------------------------------------------------------- paired bootstrap
def test_paired_difference_of_identical_models_is_zero_with_p_one():
    y, p = _data(600, 4, seed=14)
    g = np.arange(600) // 3
    d = paired_bootstrap_difference(y, p, p, 0.4, 0.4, g, n_resamples=200, seed=1)
    assert set(d) == {"macro_auprc", "macro_f1"}
    for m in d.values():
        assert m["diff"] == 0 and m["low"] == 0 and m["high"] == 0
        assert m["p_one_sided"] == 1.0 and m["n_valid"] == 200
    _json_ok(d)


def test_paired_difference_of_a_clearly_better_model():
    y, p = _data(800, 5, seed=15)
    rng = np.random.default_rng(2)
    worse = np.clip(p + rng.normal(0, 0.25, p.shape), 0, 1)  # the same model with noise added
    g = np.arange(800) // 2
    d = paired_bootstrap_difference(y, p, worse, 0.4, 0.4, g, n_resamples=300, seed=0)
    auprc = d["macro_auprc"]
    expected = compute_metrics(y, p)["macro"]["auprc"] - compute_metrics(y, worse)["macro"]["auprc"]
    assert auprc["diff"] == pytest.approx(expected) and auprc["diff"] > 0.05
    assert auprc["p_one_sided"] < 0.05 and auprc["p_one_sided"] >= 1 / 301
    for m in d.values():
        assert m["low"] <= m["diff"] <= m["high"]
    # reversed: the difference flips sign and p is about 1
    r = paired_bootstrap_difference(y, worse, p, 0.4, 0.4, g, n_resamples=300, seed=0)["macro_auprc"]
    assert r["diff"] == pytest.approx(-auprc["diff"]) and r["p_one_sided"] > 0.95
    assert (r["low"], r["high"]) == pytest.approx((-auprc["high"], -auprc["low"]))


def test_paired_difference_uses_the_resamples_of_bootstrap_metrics():
    """Against a perfect model (AUPRC 1 and F1 1 in every resample with all labels present) the differences
    are the resampled metrics minus 1, so their percentiles are bootstrap_metrics' minus 1."""
    y, p = _data(500, 3, seed=16)
    y[:60] = 1  # every label common enough to be present in every resample
    g = np.arange(500) // 2
    perfect = y.astype(float)
    d = paired_bootstrap_difference(y, p, perfect, 0.3, 0.5, g, n_resamples=150, seed=7)
    b = bootstrap_metrics(y, p, 0.3, g, n_resamples=150, seed=7)
    for key in ("macro_auprc", "macro_f1"):
        assert d[key]["n_valid"] == b[key]["n_valid"] == 150
        assert d[key]["diff"] == pytest.approx(b[key]["value"] - 1)
        assert d[key]["low"] == pytest.approx(b[key]["low"] - 1, abs=1e-12)
        assert d[key]["high"] == pytest.approx(b[key]["high"] - 1, abs=1e-12)


def test_importing_metrics_and_plots_does_not_import_matplotlib_or_sklearn():
    code = ("import sys, medfuse.evaluation.metrics, medfuse.evaluation.plots; "
            "print(sorted(m for m in ('matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
