"""Benchmark: MLTM lab imputation versus mean, KNN and iterative imputation.

For each cohort: MLTM is pre-trained on the training split (in a fresh process, so its throughput and
peak memory are its own); the scikit-learn imputers are fitted on the same training split, on the same
model input (train-split robust z-scores clipped at +-5). Then, several times, a random 20% of the
observed VALIDATION-split values are hidden and every method reconstructs them (the test split plays no
part: the mask ratio and the budget are design choices made here); errors are measured in
ORIGINAL units as NRMSE = RMSE / (standard deviation of the test's training-split values), per lab test
and overall (pooled over all hidden values, each scaled by its test's standard deviation). The markdown
marks the lowest NRMSE of each row in bold, whichever method it is.

    .venv/bin/python benchmarks/bench_mltm.py                 # synthetic + MIMIC-III/IV demo cohorts
    .venv/bin/python benchmarks/bench_mltm.py --cohort PATH   # any prepared cohort folder

Writes benchmarks/results/mltm.json and mltm.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from medfuse.config import LabsConfig, load_config
from medfuse.data.cohort import Cohort
from medfuse.labs.evaluate import hide, nrmse

CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("MEDFUSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEMOS = {"mimic3-demo": ("mimic3", SHARED / "mimic-iii-demo"), "mimic4-demo": ("mimic4", SHARED / "mimic-iv-demo")}
METHODS = ("mean", "knn", "iterative", "mltm")


# --- cohorts ------------------------------------------------------------------------------------
def _prepare(raw: Path, out: Path, source: str) -> Path:
    from medfuse.data.prepare import prepare_cohort

    if not (out / "manifest.json").is_file():
        prepare_cohort(raw, out, load_config(overrides={"prepare": {"source": source}}).prepare, overwrite=True)
    return out


def synthetic_cohort(admissions: int, seed: int) -> Path | None:
    try:
        from medfuse.data.synth import generate
    except ImportError:
        print("medfuse.data.synth is not available: skipping the synthetic cohort", file=sys.stderr)
        return None
    raw = CACHE / f"synth-mimic3-{admissions}-{seed}-raw"
    if not raw.is_dir():
        generate(raw, "mimic3", admissions, seed=seed)
    return _prepare(raw, CACHE / f"synth-mimic3-{admissions}-{seed}", "mimic3")


def default_cohorts(admissions: int, seed: int) -> dict[str, Path]:
    cohorts: dict[str, Path] = {}
    synth = synthetic_cohort(admissions, seed)
    if synth is not None:
        cohorts[f"synthetic-{admissions}"] = synth
    for name, (source, raw) in DEMOS.items():
        if raw.is_dir():
            cohorts[name] = _prepare(raw, CACHE / name, source)
        else:
            print(f"{raw} not found: skipping {name}", file=sys.stderr)
    return cohorts


# --- methods ------------------------------------------------------------------------------------
def _train_mltm(cohort: str, run: str, cfg: dict) -> dict:
    """Runs in a fresh process: ``peak_memory_mb`` is this training's own peak."""
    from medfuse.labs import pretrain

    result = pretrain(cohort, run, LabsConfig(**cfg))
    return {k: v for k, v in asdict(result).items() if k != "history"}


def reusable_run(run: Path, cohort: Path, cfg: LabsConfig) -> dict | None:
    """The summary of a finished run in ``run`` trained on ``cohort`` with exactly ``cfg``, else None."""
    try:
        config = json.loads((run / "config.json").read_text())
        history = json.loads((run / "history.json").read_text())
        same_cohort = Path(json.loads((run / "vocab.json").read_text())["cohort"]).resolve() == cohort.resolve()
    except (OSError, KeyError, ValueError):
        return None
    if not same_cohort or config["train"] != cfg.model_dump(mode="json") or not (run / "model.safetensors").is_file():
        return None
    return history["summary"]


def train_mltm(cohort: Path, run: Path, cfg: LabsConfig, reuse: bool = False) -> dict:
    if reuse and (summary := reusable_run(run, cohort, cfg)) is not None:
        print(f"reusing {run} (same cohort and config)")
        return summary
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_train_mltm, str(cohort), str(run), cfg.model_dump()).result()


def sklearn_imputers(seed: int) -> dict:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    return {
        "mean": SimpleImputer(strategy="mean", keep_empty_features=True),
        "knn": KNNImputer(n_neighbors=5, keep_empty_features=True),
        "iterative": IterativeImputer(max_iter=10, random_state=seed, keep_empty_features=True),
    }


# --- one cohort ---------------------------------------------------------------------------------
def bench_cohort(name: str, path: Path, cfg: LabsConfig, repeats: int, fraction: float, seed: int,
                 mask_ratios: tuple[float, ...] = (), reuse: bool = False) -> dict:
    """``mask_ratios``: extra MLTM runs (ablation) that differ from ``cfg`` only in ``mask_ratio``."""
    from medfuse.labs import LabEmbedder

    cohort = Cohort(path)
    tests = cohort.lab_tests
    train_raw = cohort.lab_values("train", normalized=False).astype(np.float64)
    val_raw = cohort.lab_values("val", normalized=False).astype(np.float64)
    sd = np.nanstd(train_raw, axis=0)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    print(f"\n== {name}: {len(train_raw)} train / {len(val_raw)} validation admissions, {train_raw.shape[1]} lab tests")

    variants = {"mltm": cfg} | {f"mltm_mask{r:g}": cfg.model_copy(update={"mask_ratio": r}) for r in mask_ratios}
    runs, embedders = {}, {}
    for m, vcfg in variants.items():
        run = CACHE / "runs" / f"{name}-{m}"
        runs[m] = train_mltm(path, run, vcfg, reuse)
        r = runs[m]
        print(f"{m}: best val loss {r['best_val_loss']:.4f} at epoch {r['best_epoch']} / {r['epochs_run']}, "
              f"{r['admissions_per_second']:.0f} admissions/s, peak {r['peak_memory_mb']:.0f} MB, "
              f"{r['train_seconds']:.0f} s")
        embedders[m] = LabEmbedder.load(run)
        assert embedders[m].keys == cohort.lab_keys
    methods = [*METHODS, *[m for m in variants if m != "mltm"]]
    mltm = runs["mltm"]

    fit_seconds = {}
    imputers = sklearn_imputers(seed)
    z_train = cohort.normalize(train_raw)
    for m, imp in imputers.items():
        t0 = time.perf_counter()
        imp.fit(z_train)
        fit_seconds[m] = time.perf_counter() - t0

    rng = np.random.default_rng(seed)
    overall = {m: [] for m in methods}
    sq_err = {m: np.zeros(train_raw.shape[1]) for m in methods}
    n_hidden = np.zeros(train_raw.shape[1])
    predict_seconds = {m: 0.0 for m in methods}
    for _ in range(repeats):
        hidden = hide(val_raw, fraction, rng)
        x_in = np.where(hidden, np.nan, val_raw)
        for m in methods:
            t0 = time.perf_counter()
            if m in embedders:
                pred = embedders[m].impute(x_in)
            else:
                pred = cohort.denormalize(imputers[m].transform(cohort.normalize(x_in)))
            predict_seconds[m] += time.perf_counter() - t0
            pooled, _ = nrmse(pred, val_raw, hidden, sd)
            overall[m].append(pooled)
            sq_err[m] += np.where(hidden, ((pred - val_raw) / sd) ** 2, 0.0).sum(0)
        n_hidden += hidden.sum(0)

    per_test = []
    for t in range(train_raw.shape[1]):
        row = {"key": tests.column("key")[t].as_py(), "label": tests.column("label")[t].as_py(),
               "unit": tests.column("unit")[t].as_py(), "train_sd": float(sd[t]), "hidden": int(n_hidden[t])}
        for m in methods:
            row[m] = float(np.sqrt(sq_err[m][t] / n_hidden[t])) if n_hidden[t] else None
        per_test.append(row)
    per_test_macro = {m: float(np.mean([r[m] for r in per_test if r[m] is not None])) for m in methods}
    return {
        "cohort": str(path), "source": cohort.manifest.get("source"),
        "split": "val", "train_admissions": len(train_raw), "val_admissions": len(val_raw),
        "lab_tests": train_raw.shape[1],
        "hidden_per_repeat": int(n_hidden.sum() / repeats), "repeats": repeats,
        "nrmse": {m: {"mean": float(np.mean(v)), "std": float(np.std(v))} for m, v in overall.items()},
        "nrmse_macro": per_test_macro,
        "fit_seconds": {**fit_seconds, **{m: r["train_seconds"] for m, r in runs.items()}},
        "predict_seconds": {m: v / repeats for m, v in predict_seconds.items()},
        "mltm": mltm, "mltm_variants": {m: r for m, r in runs.items() if m != "mltm"}, "per_test": per_test,
    }


# --- report -------------------------------------------------------------------------------------
def _cell(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _bold_best(cells: list[str], values: list[float | None]) -> list[str]:
    """``cells`` with the one(s) of lowest value in bold (lower NRMSE is better; None = no value)."""
    best = min((v for v in values if v is not None), default=None)
    return [f"**{c}**" if v is not None and v == best else c for c, v in zip(cells, values, strict=True)]


def markdown(results: dict, meta: dict) -> str:
    ablations = sorted({m for r in results.values() for m in r["mltm_variants"]})
    mltm = {"mltm": f"MLTM mask {meta['config']['mask_ratio']:g}",
            **{m: f"MLTM mask {m.removeprefix('mltm_mask')}" for m in ablations}}
    methods = [*METHODS[:3], *mltm]
    heads = " | ".join(["mean", "KNN (k=5)", "Iterative", *mltm.values()])
    lines = [
        "# MLTM lab imputation benchmark",
        "",
        (f"{meta['fraction']:.0%} of the observed validation-split values hidden ({meta['repeats']} random draws; "
         "the test split is not used), reconstructed by each method fitted on the training split only. NRMSE in "
         "original units: RMSE / training-split standard deviation of the test; *pooled* over all hidden values "
         "(mean ± sd over draws) and *macro* = mean of the per-test NRMSE. Lower is better; mean imputation is "
         "~1. **Bold**: the lowest NRMSE of the row, whichever method it is. MLTM's early stopping also looks at "
         "the validation split (its masked reconstruction error); the scikit-learn imputers have no such step."),
        "",
        (f"MLTM config: `{json.dumps(meta['config'])}`; the other MLTM columns differ from it only in the mask "
         "ratio."),
        "",
        (f"Machine: {meta['machine']}; load average at start {meta['load_average']} (other jobs share the "
         "cores, so throughput is a lower bound)."),
        "",
        "Pooled NRMSE:",
        "",
        f"| cohort | train adm. | tests | hidden/draw | {heads} |",
        "|---|---:|---:|---:|" + "---:|" * len(methods),
    ]
    for name, r in results.items():
        n = r["nrmse"]
        cells = _bold_best([_cell(n[m]) if m in n else "-" for m in methods],
                           [n[m]["mean"] if m in n else None for m in methods])
        lines.append(f"| {name} | {r['train_admissions']} | {r['lab_tests']} | {r['hidden_per_repeat']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Macro NRMSE (mean of the per-test NRMSE):", "", f"| cohort | {heads} |",
              "|---|" + "---:|" * len(methods)]
    for name, r in results.items():
        macro = r["nrmse_macro"]
        cells = _bold_best([f"{macro[m]:.3f}" if m in macro else "-" for m in methods], [macro.get(m) for m in methods])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "MLTM training:", "", "| cohort | MLTM | epochs (best) | train adm./s | peak MB | train s |",
              "|---|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        for m, label in mltm.items():
            run = r["mltm"] if m == "mltm" else r["mltm_variants"].get(m)
            if run:
                lines.append(f"| {name} | {label} | {run['epochs_run']} ({run['best_epoch']}) | "
                             f"{run['admissions_per_second']:.0f} | {run['peak_memory_mb']:.0f} | "
                             f"{run['train_seconds']:.1f} |")
    for name, r in results.items():
        cols = [m for m in methods if m in r["nrmse"]]
        names = ["mean", "KNN", "Iterative", *[mltm[m] for m in cols[3:]]]
        lines += ["", f"## {name}: NRMSE per lab test", "",
                  "| test | unit | hidden | " + " | ".join(names) + " |", "|---|---|---:|" + "---:|" * len(cols)]
        for t in sorted(r["per_test"], key=lambda t: -t["hidden"]):
            vals = " | ".join(_bold_best(["-" if t[m] is None else f"{t[m]:.3f}" for m in cols], [t[m] for m in cols]))
            lines.append(f"| {t['label']} | {t['unit'] or ''} | {t['hidden']} | {vals} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", action="append", default=[], metavar="[NAME=]PATH",
                    help="a prepared cohort folder (repeatable); default: synthetic + the two demo cohorts")
    ap.add_argument("--admissions", type=int, default=2000, help="admissions of the synthetic cohort")
    ap.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "mltm.toml",
                    help="TOML config whose [labs] section configures MLTM (default: benchmarks/configs/mltm.toml)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a finished run in benchmarks/.cache/runs trained on the same cohort with the same config")
    ap.add_argument("--epochs", type=int, help="override labs.epochs")
    ap.add_argument("--device", help="override labs.device (auto | cpu | cuda)")
    ap.add_argument("--fraction", type=float, default=0.2, help="share of observed validation values to hide")
    ap.add_argument("--repeats", type=int, default=5, help="random hiding draws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ablate-mask-ratio", type=float, nargs="*", default=[0.3], metavar="R",
                    help="extra MLTM runs with these mask ratios (default: 0.3; none: pass the flag alone)")
    ap.add_argument("--out", type=Path, default=RESULTS / "mltm.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing --out JSON")
    args = ap.parse_args(argv)
    if args.render_only:
        saved = json.loads(args.out.read_text())
        args.out.with_suffix(".md").write_text(markdown(saved["results"], saved["meta"]))
        print(f"wrote {args.out.with_suffix('.md')}")
        return

    cfg = load_config(args.config, {"labs": {"epochs": args.epochs, "device": args.device}}).labs
    if args.cohort:
        cohorts = {}
        for spec in args.cohort:
            name, _, path = spec.rpartition("=")
            cohorts[name or Path(path).name] = Path(path)
    else:
        cohorts = default_cohorts(args.admissions, args.seed)
    load = [round(v, 1) for v in os.getloadavg()]
    results = {name: bench_cohort(name, path, cfg, args.repeats, args.fraction, args.seed, tuple(args.ablate_mask_ratio),
                               args.reuse)
               for name, path in cohorts.items()}

    import torch

    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"device {results[next(iter(results))]['mltm']['device'] if results else '?'}, torch {torch.__version__}")
    meta = {"fraction": args.fraction, "repeats": args.repeats, "seed": args.seed, "machine": machine,
            "load_average": load, "cpu_count": os.cpu_count(),
            "config": cfg.model_dump(mode="json"), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    md = markdown(results, meta)
    args.out.with_suffix(".md").write_text(md)
    print("\n" + md.split("\n## ")[0])
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
