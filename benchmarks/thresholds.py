"""Which decision-threshold rule holds up: chosen on validation only, reported on four test splits.

Cohorts (MEDFuse, `src/medfuse/resources/demo.toml` settings, seed 0 model):

* ``synth-seed0``: 2,000 synthetic MIMIC-III admissions, synthetic seed 0, the development seed (the rule
  is chosen on its validation split, nothing else);
* ``synth-seed7``: the same simulator with seed 7, which no choice looked at;
* ``mimic-iii-demo`` / ``mimic-iv-demo``: the real public demo extracts (``../shared/data``).

Step 1 (choice, validation only): every candidate rule is scored by repeated K-fold cross-validation
*inside* the development cohort's validation split (thresholds tuned on K-1 folds, macro-F1 / micro-F1
on the held-out fold), and by a simulation with known probabilities. Step 2 (report): per cohort, test
macro-F1 / micro-F1 at 0.5, at the old F1-max thresholds and at the chosen rule, all tuned on the full
validation split. Runs are cached under ``runs/thresholds/``; delete a folder to rebuild it.

Writes benchmarks/results/thresholds.json and thresholds.md.
Usage: python benchmarks/thresholds.py [--data ../shared/data] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, offline, save

RUNS = ROOT.parent / "runs" / "thresholds"
DEMO_CONFIG = ROOT.parent / "src" / "medfuse" / "resources" / "demo.toml"
SYNTH = {"synth-seed0": 0, "synth-seed7": 7}
REAL = {"mimic-iii-demo": "mimic3", "mimic-iv-demo": "mimic4"}
DEVELOPMENT = "synth-seed0"


def build(name: str, data: Path) -> Path:
    """The run folder of cohort ``name`` with ``predictions_val.parquet`` and ``predictions_test.parquet``."""
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.runs.stages import evaluate_run, train_run

    base, run = RUNS / name, RUNS / name / "run"
    if (run / "predictions_val.parquet").exists() and (run / "predictions_test.parquet").exists():
        return run
    source = REAL.get(name, "mimic3")
    cfg = load_config(DEMO_CONFIG, overrides={"prepare": {"source": source}})
    if name in SYNTH:
        raw = base / "raw"
        if not (raw / ".complete").exists():
            generate(raw, "mimic3", 2000, seed=SYNTH[name])
            (raw / ".complete").touch()
    else:
        raw = data / name
    if not (base / "cohort" / "manifest.json").exists():
        prepare_cohort(raw, base / "cohort", cfg.prepare, overwrite=True)
    if not (run / "thresholds.json").exists():
        train_run(base / "cohort", run, cfg)
    for split in ("val", "test"):
        evaluate_run(run, split, n_resamples=0)
    return run


def _table(path: Path, split: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, prob, subject_id)`` from a predictions parquet (``__true`` / ``__prob`` columns per label)."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    if split is not None:
        t = t.filter(np.asarray(t.column("split").to_pylist()) == split)
    names = [c[: -len("__prob")] for c in t.column_names if c.endswith("__prob")]
    y = np.stack([t.column(f"{n}__true").to_numpy() for n in names], axis=1).astype(int)
    p = np.stack([t.column(f"{n}__prob").to_numpy() for n in names], axis=1)
    return y, p, t.column("subject_id").to_numpy()


def classical(name: str) -> Path:
    """LightGBM (labs) and TF-IDF + logistic regression (notes) of a synthetic cohort, val + test rows, seed 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medfuse.config import load_config
    from medfuse.data.cohort import Cohort
    from medfuse.notes.text import build_texts
    from medfuse.runs.baselines import lightgbm_labs, tfidf_logreg

    out = RUNS / name / "classical.parquet"
    if out.exists():
        return out
    cohort = Cohort(RUNS / name / "cohort")
    keep = np.isin(cohort.split, ("val", "test"))
    labels = cohort.table("labels")
    admissions = cohort.table("admissions")
    assert labels.column("hadm_id").equals(admissions.column("hadm_id"))
    texts = build_texts(cohort, load_config(DEMO_CONFIG).notes.template).texts
    columns = {"split": cohort.split[keep], "subject_id": admissions.column("subject_id").to_numpy()[keep]}
    for model, prob in (("lightgbm", lightgbm_labs(cohort, seed=0)), ("tfidf", tfidf_logreg(cohort, texts, seed=0))):
        for j, label in enumerate(cohort.label_names):
            columns[f"{model}:{label}__prob"] = prob[keep, j]
            columns[f"{model}:{label}__true"] = labels.column(label).to_numpy()[keep]
    pq.write_table(pa.table(columns), out)
    return out


def _model(path: Path, model: str, split: str):
    """One classical model's ``(y, prob, subject_id)`` from :func:`classical`'s file."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    t = t.filter(np.asarray(t.column("split").to_pylist()) == split)
    names = [c[len(model) + 1: -len("__prob")] for c in t.column_names if c.startswith(f"{model}:") and c.endswith("__prob")]
    y = np.stack([t.column(f"{model}:{n}__true").to_numpy() for n in names], axis=1).astype(int)
    p = np.stack([t.column(f"{model}:{n}__prob").to_numpy() for n in names], axis=1)
    return y, p, t.column("subject_id").to_numpy()


def candidates() -> list[dict]:
    """The rules the choice is made among (each a ``tune_thresholds`` keyword set)."""
    rules = [{"rule": "fixed"}, {"rule": "f1_max"}, {"rule": "half_best_f1"}]
    rules += [{"rule": "f1_max", "min_positives": m} for m in (10, 20)]
    rules += [{"rule": "shrunk", "shrinkage": k} for k in (5.0, 10.0, 20.0, 40.0, 80.0)]
    rules += [{"rule": "plateau", "tolerance": t} for t in (0.01, 0.02, 0.04, 0.08, 0.12, 0.16)]
    return rules


def rule_text(rule: dict) -> str:
    extra = ", ".join(f"{k}={v:g}" for k, v in rule.items() if k != "rule")
    return rule["rule"] + (f" ({extra})" if extra else "")


def simulate(n_val: int, rule: dict, label_sets: int = 50, n_test: int = 20000, seed: int = 0) -> dict:
    """Expected test macro/micro-F1 of ``rule`` tuned on ``n_val`` rows of a calibrated simulated model.

    Ten labels (prevalence 5-40%); per label a score ``s ~ N(0, 1) + d * y`` with ``d = 1.3`` and the
    calibrated probability ``P(y = 1 | s)``. Averaged over ``label_sets`` independent validation/test draws.
    """
    from medfuse.evaluation.thresholds import tune_thresholds

    prev = np.array([0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.random((n, len(prev))) < prev
        logit = np.log(prev / (1 - prev)) + 1.3 * (rng.normal(size=y.shape) + 1.3 * y) - 1.3**2 / 2
        return y, 1 / (1 + np.exp(-logit))

    macro, micro = [], []
    for _ in range(label_sets):
        (yv, pv), (yt, pt) = draw(n_val), draw(n_test)
        pred = pt >= tune_thresholds(yv, pv, **rule)
        tp, fp, fn = (yt & pred).sum(0), (~yt & pred).sum(0), (yt & ~pred).sum(0)
        macro.append(np.mean(2 * tp / np.maximum(1, 2 * tp + fp + fn)))
        micro.append(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    return {"macro_f1": float(np.mean(macro)), "micro_f1": float(np.mean(micro))}


def choose(dev: dict[str, tuple], repeats: int) -> tuple[list[dict], dict]:
    """Score every candidate by out-of-fold F1 inside the development validation split; the best one."""
    from medfuse.evaluation.thresholds import cross_fitted_f1

    rows = []
    for rule in candidates():
        per_model = {m: cross_fitted_f1(y, p, g, folds=5, repeats=repeats, seed=0, **rule)
                     for m, (y, p, g) in dev.items()}
        score = float(np.mean([(s["macro_f1"] + s["micro_f1"]) / 2 for s in per_model.values()]))
        rows.append({"rule": rule, "cv": per_model, "score": score,
                     "simulation": {f"n_val={n}": simulate(n, rule) for n in (50, 200)}})
    return rows, max(rows, key=lambda r: r["score"])["rule"]


def report(y_val, p_val, y, p, groups, rules: dict[str, dict], n_resamples: int) -> dict:
    """Test macro/micro-F1 at each rule's validation thresholds; paired bootstrap of the chosen rule's gain."""
    from medfuse.evaluation.metrics import compute_metrics, paired_bootstrap_difference
    from medfuse.evaluation.thresholds import tune_thresholds

    thr = {name: tune_thresholds(y_val, p_val, **rule) for name, rule in rules.items()}
    out = {"val_admissions": len(y_val), "test_admissions": len(y), "test_patients": len(np.unique(groups)),
           "val_positives": y_val.sum(axis=0).tolist()}
    for name, t in thr.items():
        m = compute_metrics(y, p, t)
        out[name] = {"macro_f1": m["macro"]["f1"], "micro_f1": m["micro"]["f1"], "thresholds": t.round(4).tolist()}
    for other in ("0.5", "f1_max"):
        out[f"chosen_minus_{other}"] = paired_bootstrap_difference(y, p, p, thr["chosen"], thr[other], groups,
                                                                   n_resamples=n_resamples)["macro_f1"]
    return out


def markdown(result: dict) -> str:
    chosen = rule_text(result["chosen"])
    lines = [
        "# Decision thresholds: a rule chosen on validation only", "",
        (f"Chosen rule: **{chosen}** (library default: {rule_text(result['library_default'])}). "
         "Test macro-F1 / micro-F1 of the MEDFuse model of each cohort at 0.5, at the per-label F1-maximising "
         "validation thresholds (`f1_max`, the old default) and at the chosen rule; thresholds tuned on the whole "
         "validation split and frozen. Δ: chosen minus the other, test macro-F1, paired patient-level bootstrap "
         f"({result['n_resamples']} resamples) 95% interval. {result['description']}"), "",
        "| cohort | role | val / test adm. | 0.5 | f1_max | chosen | Δ macro-F1 vs 0.5 | Δ macro-F1 vs f1_max |",
        "|---|---|---|---|---|---|---|---|"]

    def delta(d):
        return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" if d["low"] is not None else f"{d['diff']:+.3f}"

    for name, r in result["cohorts"].items():
        cells = [f"{r[k]['macro_f1']:.3f} / {r[k]['micro_f1']:.3f}" for k in ("0.5", "f1_max", "chosen")]
        lines.append(f"| {name} | {r['role']} | {r['val_admissions']} / {r['test_admissions']} | " + " | ".join(cells)
                     + f" | {delta(r['chosen_minus_0.5'])} | {delta(r['chosen_minus_f1_max'])} |")
    lines += ["", "## The choice (validation data of the development cohort only)", "",
              (f"Each rule scored by {result['folds']}-fold cross-fitting repeated {result['repeats']} times inside the "
               "validation split of `synth-seed0` (thresholds tuned on 4/5 of the patients, macro- and micro-F1 of the "
               "pooled held-out predictions), for three models of that cohort: MEDFuse, LightGBM (labs) and TF-IDF + "
               "logistic regression (notes). Score = mean over the models of (macro-F1 + micro-F1) / 2; the best "
               "score is chosen. Simulation: expected test F1 of a calibrated simulated model tuned on n_val rows "
               "(50 label sets; for reading, not part of the score)."), "",
              "| rule | MEDFuse | LightGBM | TF-IDF | score | simulation n_val=50 | simulation n_val=200 |",
              "|---|---|---|---|---|---|---|"]
    for row in result["selection"]:
        cv = [f"{row['cv'][m]['macro_f1']:.3f} / {row['cv'][m]['micro_f1']:.3f}" for m in ("MEDFuse", "LightGBM", "TF-IDF")]
        sim = [f"{s['macro_f1']:.3f} / {s['micro_f1']:.3f}" for s in row["simulation"].values()]
        mark = "**" if row["rule"] == result["chosen"] else ""
        lines.append(f"| {mark}{rule_text(row['rule'])}{mark} | " + " | ".join(cv) + f" | {row['score']:.4f} | "
                     + " | ".join(sim) + " |")
    if result.get("other_models"):
        lines += ["", "## Other models (seed-0 classical baselines of the synthetic cohorts)", "",
                  "| cohort | model | 0.5 | f1_max | chosen | Δ macro-F1 vs 0.5 | Δ macro-F1 vs f1_max |",
                  "|---|---|---|---|---|---|---|"]
        for key, r in result["other_models"].items():
            cohort, model = key.split(" / ")
            cells = [f"{r[k]['macro_f1']:.3f} / {r[k]['micro_f1']:.3f}" for k in ("0.5", "f1_max", "chosen")]
            lines.append(f"| {cohort} | {model} | " + " | ".join(cells)
                         + f" | {delta(r['chosen_minus_0.5'])} | {delta(r['chosen_minus_f1_max'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    offline()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=20, help="cross-fitting repeats per rule")
    ap.add_argument("--n-resamples", type=int, default=1000, help="paired bootstrap resamples")
    ap.add_argument("--build-only", action="store_true", help="only train the four runs")
    args = ap.parse_args()
    t_start = time.perf_counter()
    runs = {}
    for name in (*SYNTH, *REAL):
        t0 = time.perf_counter()
        runs[name] = build(name, args.data)
        print(f"{name}: run ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.build_only:
        return
    from medfuse.config import EvaluateConfig
    from medfuse.evaluation.thresholds import rule_from_config

    extra = {name: classical(name) for name in SYNTH}
    dev_file = extra[DEVELOPMENT]
    dev = {"MEDFuse": _table(runs[DEVELOPMENT] / "predictions_val.parquet"),
           "LightGBM": _model(dev_file, "lightgbm", "val"), "TF-IDF": _model(dev_file, "tfidf", "val")}
    selection, chosen = choose(dev, args.repeats)
    print(f"chosen on {DEVELOPMENT} validation: {rule_text(chosen)}", flush=True)
    rules = {"0.5": {"rule": "fixed"}, "f1_max": {"rule": "f1_max"}, "chosen": chosen}
    cohorts, others = {}, {}
    for name, run in runs.items():
        y_val, p_val, _ = _table(run / "predictions_val.parquet")
        cohorts[name] = {"role": "development" if name == DEVELOPMENT else "held out",
                         **report(y_val, p_val, *_table(run / "predictions_test.parquet"), rules, args.n_resamples)}
        r = cohorts[name]
        print(name, {k: (round(r[k]["macro_f1"], 3), round(r[k]["micro_f1"], 3)) for k in rules}, flush=True)
    for name, path in extra.items():
        for model, label in (("lightgbm", "LightGBM (labs)"), ("tfidf", "TF-IDF + logistic regression (notes)")):
            y_val, p_val, _ = _model(path, model, "val")
            others[f"{name} / {label}"] = report(y_val, p_val, *_model(path, model, "test"), rules, args.n_resamples)
    default = {k: v for k, v in rule_from_config(EvaluateConfig()).items()
               if k == "rule" or k in chosen}
    result = {"description": DESCRIPTION, "chosen": chosen, "library_default": default, "folds": 5,
              "repeats": args.repeats, "n_resamples": args.n_resamples, "selection": selection,
              "cohorts": cohorts, "other_models": others, "seconds": round(time.perf_counter() - t_start, 1)}
    print(save("thresholds", result))
    (RESULTS / "thresholds.md").write_text(markdown(result))


DESCRIPTION = ("MEDFuse with the `medfuse demo` settings (src/medfuse/resources/demo.toml), model seed 0. synth-seed0: "
               "2,000 synthetic MIMIC-III admissions, seed 0 (development: the rule is chosen on its validation "
               "split); synth-seed7: the same with seed 7 (held out, no choice looked at it); mimic-iii-demo / "
               "mimic-iv-demo: the real public demo extracts (no note text; tiny validation and test splits, so "
               "their figures are noisy).")


if __name__ == "__main__":
    main()
