"""Baselines, ablations and the lambda sweep on one split, several seeds, one table.

Every neural model is trained by the same :func:`~medfuse.training.trainer.fit` with the same
budget, schedule and early-stopping rule (validation macro-AUPRC) and gets the same tuning: each
combination of ``compare.grid`` is trained with the first seed and the best on validation macro-AUPRC
is kept for every seed (MEDFuse's ablations and lambda sweep reuse MEDFuse's choice). The classical
models choose their hyper-parameters on the same validation split. Thresholds are tuned on validation
for every model (``evaluate.threshold_rule``), then frozen for test.

MEDFuse is compared with every other row by a paired patient-level bootstrap of the test difference
(MEDFuse minus the row) in macro-AUPRC and macro-F1, both models' first seed, on the same resamples.
The first seed's validation and test probabilities of every row are kept in
``models/<slug>/predictions_seed0.parquet`` so the differences can be recomputed.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfuse.config import MedfuseConfig
from medfuse.progress import ProgressFn, no_progress

HEADLINE = ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")
SINGLE_MODALITY = ("labs_only", "notes_only")
INHERITS_MEDFUSE = ("ablation", "lambda sweep")  # groups that reuse MEDFuse's tuned settings
BASELINE_GROUPS = ("labs only", "notes only", "fusion")  # rows MEDFuse's "vs best baseline" is taken among
PREDICTIONS_FILE = "predictions_seed0.parquet"


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a neural model (``train`` overrides) or a classical one (``classical``)."""

    name: str
    group: str
    train: dict = field(default_factory=dict)
    classical: str = ""


def variants(mi_weights: list[float]) -> list[Variant]:
    """Baselines, MEDFuse, its ablations and the lambda sweep (MEDFuse's default lambda is 0.1)."""
    rows = [
        Variant("LightGBM (labs)", "labs only", classical="lightgbm"),
        Variant("MLTM + MLP (labs)", "labs only", {"kind": "labs_only"}),
        Variant("TF-IDF + logistic regression (notes)", "notes only", classical="tfidf"),
        Variant("Note embedding + MLP (notes)", "notes only", {"kind": "notes_only"}),
        Variant("Concatenation + MLP", "fusion", {"kind": "concat"}),
        Variant("Tensor Fusion Network", "fusion", {"kind": "tfn"}),
        Variant("MEDFuse", "MEDFuse", {"kind": "medfuse"}),
        Variant("MEDFuse w/o MI loss", "ablation", {"kind": "medfuse", "mi_weight": 0.0}),
        Variant("MEDFuse w/o Kronecker term", "ablation", {"kind": "medfuse", "use_kronecker": False}),
        Variant("MEDFuse w/o MLTM pre-training", "ablation", {"kind": "medfuse", "labs_encoder": "scratch"}),
    ]
    covered = {0.0, 0.1}
    rows += [Variant(f"MEDFuse lambda={w:g}", "lambda sweep", {"kind": "medfuse", "mi_weight": w})
             for w in mi_weights if w not in covered]
    return rows


def headline(metrics: dict) -> dict[str, float]:
    """The HEADLINE figures of a :func:`~medfuse.training.metrics.compute_metrics` result, e.g. ``macro_f1``."""
    return {m: metrics[m.split("_")[0]][m.split("_")[1]] for m in HEADLINE}


def tuning_grid(grid: dict[str, list], kind: str) -> list[dict]:
    """Every combination of ``grid``'s values that can change a model of ``kind``, the first values first.

    ``modality_dropout`` is left out for single-modality models, which ignore it.
    """
    keys = [k for k in grid if not (k == "modality_dropout" and kind in SINGLE_MODALITY)]
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _inherits(v: Variant, chosen: list[Variant]) -> bool:
    """Whether ``v`` reuses MEDFuse's tuned settings: an ablation or lambda row, with MEDFuse in the run."""
    return v.group in INHERITS_MEDFUSE and any(c.name == "MEDFuse" for c in chosen)


def slug(name: str) -> str:
    """A row's folder name under ``models/``: ``"Concatenation + MLP"`` -> ``"concatenation-mlp"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def compare(cohort_path: str | Path, out: str | Path, cfg: MedfuseConfig, progress: ProgressFn | None = None) -> dict:
    """Train and evaluate every variant with every seed; write ``compare.json`` and ``compare.md``."""
    from medfuse.notes.text import build_texts
    from medfuse.pipeline import lab_encoder, run_inputs
    from medfuse.torch_utils import resolve_device
    from medfuse.training.classical import lightgbm_labs, tfidf_logreg
    from medfuse.training.metrics import compute_metrics, evaluate_predictions
    from medfuse.training.thresholds import rule_from_config, tune_thresholds
    from medfuse.training.trainer import fit, load_net, macro_auprc, predict

    progress = progress or no_progress
    out = Path(out)
    cohort, labs_run, _, data = run_inputs(cohort_path, out, cfg, progress)
    texts = build_texts(cohort, cfg.notes.template).texts
    val, test = data.rows("val"), data.rows("test")
    device = resolve_device(cfg.train.device)
    chosen = [v for v in variants(cfg.compare.mi_weights) if not cfg.compare.models or v.name in cfg.compare.models]
    total = sum(len(cfg.compare.seeds) + (0 if v.classical or _inherits(v, chosen) else
                                          len(tuning_grid(cfg.compare.grid, v.train["kind"])) - 1) for v in chosen)
    done = 0  # runs started, for the progress label
    medfuse_settings: dict = {}  # MEDFuse's validation choice, reused by its ablations and lambda sweep
    rule = rule_from_config(cfg.evaluate)
    first_seed: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # row name -> (probabilities, thresholds)

    def neural(v: Variant, settings: dict, seed: int, run_dir: Path, label: str) -> np.ndarray:
        """Train one neural row with ``settings`` and ``seed``; its val and test probabilities."""
        nonlocal done
        done += 1
        stage = f"compare {done}/{total}"
        progress(stage, 0.0, label)
        tcfg = cfg.train.model_validate({**cfg.train.model_dump(), **settings, **v.train, "seed": seed})
        encoder = lab_encoder(tcfg.labs_encoder, labs_run, seed)
        fit(data, run_dir, tcfg, encoder, progress=lambda s, f, info="", stage=stage: progress(stage, f, info))
        net = load_net(run_dir, data, lab_encoder(tcfg.labs_encoder, labs_run, seed)).to(device)
        prob = np.zeros_like(data.y)
        prob[val], prob[test] = predict(net, data, val, device), predict(net, data, test, device)
        return prob

    results = []
    for v in chosen:
        runs, tuning, first = [], None, None
        if not v.classical:
            trials, probs = [], []
            if _inherits(v, chosen):
                settings, inherited = medfuse_settings, "MEDFuse"
            else:
                inherited, grid = None, tuning_grid(cfg.compare.grid, v.train["kind"])
                for i, trial in enumerate(grid):
                    t0 = time.perf_counter()
                    label = f"{v.name}, tuning {i + 1}/{len(grid)}: {settings_text(trial)}"
                    probs.append(neural(v, trial, cfg.compare.seeds[0], out / "models" / slug(v.name) / f"tune{i}", label))
                    trials.append({"settings": trial, "val_macro_auprc": macro_auprc(data.y[val], probs[-1][val]),
                                   "seconds": round(time.perf_counter() - t0, 2)})
                best = int(np.argmax([t["val_macro_auprc"] for t in trials]))  # ties: the earlier trial
                settings, first = trials[best]["settings"], (probs[best], trials[best]["seconds"])
            if v.name == "MEDFuse":
                medfuse_settings = settings
            tuning = {"settings": settings, "inherited_from": inherited, "trials": trials}
        for k, seed in enumerate(cfg.compare.seeds):
            t0 = time.perf_counter()
            if v.classical:
                done += 1
                progress(f"compare {done}/{total}", 0.0, f"{v.name}, seed {seed}")
            if v.classical == "lightgbm":
                prob = lightgbm_labs(cohort, seed=seed)
            elif v.classical == "tfidf":
                prob = tfidf_logreg(cohort, texts, seed=seed)
            elif k == 0 and first is not None:
                prob, trained_seconds = first  # the chosen trial was trained with this seed already
                t0 -= trained_seconds
            else:
                prob = neural(v, settings, seed, out / "models" / slug(v.name) / f"seed{seed}", f"{v.name}, seed {seed}")
            thresholds = tune_thresholds(data.y[val], prob[val], **rule)
            metrics = compute_metrics(data.y[test], prob[test], thresholds, data.label_names)
            runs.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 2),
                         **headline(metrics)})
            if k == 0:
                first_seed[v.name] = (prob, thresholds)
                save_predictions(out / "models" / slug(v.name) / PREDICTIONS_FILE, data, prob, thresholds, (val, test))
                boot = evaluate_predictions(data.y[test], prob[test], thresholds, groups=data.subject_ids[test],
                                            label_names=data.label_names, n_resamples=cfg.compare.n_resamples,
                                            seed=0)["at_tuned_thresholds"]["bootstrap"]
            progress(f"compare {done}/{total}", 1.0, f"{v.name}, seed {seed}: macro-F1 {runs[-1]['macro_f1']:.3f}")
        summary = {m: {"mean": float(np.mean([r[m] for r in runs])), "std": float(np.std([r[m] for r in runs]))}
                   for m in HEADLINE}
        results.append({"name": v.name, "group": v.group, "train": v.train, "classical": v.classical,
                        "tuning": tuning, "runs": runs, "summary": summary,
                        "bootstrap_seed0": {m: boot.get(m) for m in HEADLINE}})
    if "MEDFuse" in first_seed:
        from medfuse.training.metrics import paired_bootstrap_difference

        p_med, t_med = first_seed["MEDFuse"]
        for r in results:
            if r["name"] != "MEDFuse":
                p_row, t_row = first_seed[r["name"]]
                r["vs_medfuse"] = paired_bootstrap_difference(
                    data.y[test], p_med[test], p_row[test], t_med, t_row, data.subject_ids[test],
                    n_resamples=cfg.compare.n_resamples, seed=0, label_names=data.label_names)
    table = {"cohort": str(cohort.path.resolve()), "split": "test", "seeds": cfg.compare.seeds,
             "n_resamples": cfg.compare.n_resamples, "threshold_rule": rule, "grid": cfg.compare.grid,
             "models": results}
    (out / "compare.json").write_text(json.dumps(table, indent=2))
    (out / "compare.md").write_text(comparison_markdown(table))
    return table


def save_predictions(path: Path, data, prob: np.ndarray, thresholds: np.ndarray, splits: tuple) -> None:
    """The validation and test rows of one model as Parquet: ids, split, and per label prob / pred / true."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = np.concatenate(splits)
    columns = {"hadm_id": data.hadm_ids[rows], "subject_id": data.subject_ids[rows],
               "split": np.repeat(["val", "test"], [len(s) for s in splits])}
    for j, name in enumerate(data.label_names):
        columns[f"{name}__prob"] = prob[rows, j]
        columns[f"{name}__pred"] = prob[rows, j] >= thresholds[j]
        columns[f"{name}__true"] = data.y[rows, j].astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def best_baseline(table: dict) -> dict | None:
    """The row of :data:`BASELINE_GROUPS` with the best mean test macro-AUPRC (``None`` without one)."""
    rows = [r for r in table["models"] if r["group"] in BASELINE_GROUPS]
    return max(rows, key=lambda r: r["summary"]["macro_auprc"]["mean"]) if rows else None


def delta_text(d: dict | None) -> str:
    """``"+0.003 [-0.010, +0.020], p = 0.230"`` for a paired difference; ``"–"`` when there is none."""
    if not d or d.get("diff") is None or d.get("low") is None:
        return "–"
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], p = {d['p_one_sided']:.3f}"


def delta_cells(row: dict, table: dict, metric: str) -> str:
    """A row's Δ cell: MEDFuse minus the row, or for MEDFuse itself, MEDFuse minus the best baseline."""
    if row["name"] != "MEDFuse":
        return delta_text((row.get("vs_medfuse") or {}).get(metric))
    best = best_baseline(table)
    d = (best.get("vs_medfuse") or {}).get(metric) if best else None
    return f"vs {best['name']}: {delta_text(d)}" if d and d.get("low") is not None else "–"


def settings_text(settings: dict) -> str:
    """``{"dropout": 0.3}`` -> ``"dropout=0.3"``."""
    return ", ".join(f"{k}={v:g}" for k, v in settings.items()) or "defaults"


def tuned_text(row: dict) -> str:
    """What a comparison row's hyper-parameters are: its validation choice, MEDFuse's, or the classical search."""
    t = row.get("tuning")
    if not t:
        return "own validation search"
    return settings_text(t["settings"]) + (f" (as {t['inherited_from']})" if t["inherited_from"] else "")


def comparison_markdown(table: dict) -> str:
    """The comparison as a Markdown table: mean ± sd over seeds, seed 0's bootstrap 95% interval, the paired
    Δ against MEDFuse (when the table has them) and the settings chosen on validation."""
    paired = any("vs_medfuse" in r for r in table["models"])
    extra = ["Δ macro-AUPRC, MEDFuse − row [95% CI], p", "Δ macro-F1, MEDFuse − row [95% CI], p"] if paired else []
    lines = ["| model | group | " + " | ".join([*HEADLINE, *extra]) + " | tuned on validation |",
             "|---|---|" + "---|" * (len(HEADLINE) + len(extra) + 1)]
    for r in table["models"]:
        cells = []
        for m in HEADLINE:
            s, b = r["summary"][m], r["bootstrap_seed0"].get(m) or {}
            ci = f" [{b['low']:.3f}, {b['high']:.3f}]" if b else ""
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}{ci}")
        if paired:
            cells += [delta_cells(r, table, m) for m in ("macro_auprc", "macro_f1")]
        lines.append(f"| {r['name']} | {r['group']} | " + " | ".join(cells) + f" | {tuned_text(r)} |")
    if paired:
        lines += ["", (f"Δ: paired patient-level bootstrap of the first seed's test predictions "
                       f"({table['n_resamples']} resamples, the same for every row); p = one-sided "
                       "(1 + #{Δ ≤ 0}) / (1 + resamples). MEDFuse's row: MEDFuse minus the best baseline "
                       "(labs only, notes only or fusion row with the best mean macro-AUPRC).")]
    return "\n".join(lines) + "\n"
