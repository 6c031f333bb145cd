"""Baselines, ablations and the lambda sweep on one split, several seeds, one table.

Every neural model is trained by the same :func:`~medfuse.training.trainer.fit` with the same
budget, schedule and early-stopping rule (validation macro-AUPRC); the classical ones choose their
hyper-parameters on the same validation split. Thresholds are tuned on validation for every model,
then frozen for test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfuse.config import MedfuseConfig
from medfuse.progress import ProgressFn, no_progress

HEADLINE = ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")


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


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def compare(cohort_path: str | Path, out: str | Path, cfg: MedfuseConfig, progress: ProgressFn | None = None) -> dict:
    """Train and evaluate every variant with every seed; write ``compare.json`` and ``compare.md``."""
    from medfuse.notes.text import build_texts
    from medfuse.pipeline import lab_encoder, run_inputs
    from medfuse.torch_utils import resolve_device
    from medfuse.training.classical import lightgbm_labs, tfidf_logreg
    from medfuse.training.metrics import compute_metrics, evaluate_predictions, tune_thresholds
    from medfuse.training.trainer import fit, load_net, predict

    progress = progress or no_progress
    out = Path(out)
    cohort, labs_run, _, data = run_inputs(cohort_path, out, cfg, progress)
    texts = build_texts(cohort, cfg.notes.template).texts
    val, test = data.rows("val"), data.rows("test")
    device = resolve_device(cfg.train.device)
    chosen = [v for v in variants(cfg.compare.mi_weights) if not cfg.compare.models or v.name in cfg.compare.models]
    results = []
    total = len(chosen) * len(cfg.compare.seeds)
    for i, v in enumerate(chosen):
        runs = []
        for k, seed in enumerate(cfg.compare.seeds):
            t0 = time.perf_counter()
            stage = f"compare {i * len(cfg.compare.seeds) + k + 1}/{total}"
            progress(stage, 0.0, f"{v.name}, seed {seed}")
            if v.classical == "lightgbm":
                prob = lightgbm_labs(cohort, seed=seed)
            elif v.classical == "tfidf":
                prob = tfidf_logreg(cohort, texts, seed=seed)
            else:
                tcfg = cfg.train.model_copy(update={**v.train, "seed": seed})
                run_dir = out / "models" / _slug(v.name) / f"seed{seed}"
                encoder = lab_encoder(tcfg.labs_encoder, labs_run, seed)
                fit(data, run_dir, tcfg, encoder, progress=lambda s, f, info="", stage=stage: progress(stage, f, info))
                net = load_net(run_dir, data, lab_encoder(tcfg.labs_encoder, labs_run, seed)).to(device)
                prob = np.zeros_like(data.y)
                prob[val], prob[test] = predict(net, data, val, device), predict(net, data, test, device)
            thresholds = tune_thresholds(data.y[val], prob[val])
            metrics = compute_metrics(data.y[test], prob[test], thresholds, data.label_names)
            runs.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 2),
                         **{m: metrics[m.split("_")[0]][m.split("_")[1]] for m in HEADLINE}})
            if k == 0:
                boot = evaluate_predictions(data.y[test], prob[test], thresholds, groups=data.subject_ids[test],
                                            label_names=data.label_names, n_resamples=cfg.compare.n_resamples,
                                            seed=0)["at_tuned_thresholds"]["bootstrap"]
            progress(stage, 1.0, f"{v.name}, seed {seed}: macro-F1 {runs[-1]['macro_f1']:.3f}")
        summary = {m: {"mean": float(np.mean([r[m] for r in runs])), "std": float(np.std([r[m] for r in runs]))}
                   for m in HEADLINE}
        results.append({"name": v.name, "group": v.group, "train": v.train, "classical": v.classical,
                        "runs": runs, "summary": summary,
                        "bootstrap_seed0": {m: boot.get(m) for m in HEADLINE}})
    table = {"cohort": str(cohort.path.resolve()), "split": "test", "seeds": cfg.compare.seeds,
             "n_resamples": cfg.compare.n_resamples, "models": results}
    (out / "compare.json").write_text(json.dumps(table, indent=2))
    (out / "compare.md").write_text(comparison_markdown(table))
    return table


def comparison_markdown(table: dict) -> str:
    """The comparison as a Markdown table: mean ± sd over seeds, and seed 0's bootstrap 95% interval."""
    lines = ["| model | group | " + " | ".join(HEADLINE) + " |", "|---|---|" + "---|" * len(HEADLINE)]
    for r in table["models"]:
        cells = []
        for m in HEADLINE:
            s, b = r["summary"][m], r["bootstrap_seed0"].get(m) or {}
            ci = f" [{b['low']:.3f}, {b['high']:.3f}]" if b else ""
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}{ci}")
        lines.append(f"| {r['name']} | {r['group']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
