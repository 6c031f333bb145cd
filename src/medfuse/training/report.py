"""``RUN/report.html``: one self-contained page (images inlined) about a trained and evaluated run."""

from __future__ import annotations

import base64
import html
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from medfuse.data.cohort import SPLITS, Cohort

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ee;padding-bottom:.3rem;margin-top:2.2rem}
.sub{color:#5b6578}table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
th,td{border:1px solid #dfe3ea;padding:.3rem .6rem;text-align:right}th{background:#f3f5f9}
td:first-child,th:first-child{text-align:left}tr.best td{background:#eef7ee;font-weight:600}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f6f8fb;border-radius:8px;padding:.8rem 1.2rem;min-width:150px}
.card b{display:block;font-size:1.6rem}img{max-width:100%;border:1px solid #e3e7ee;border-radius:6px}
pre{background:#f6f8fb;padding:1rem;overflow:auto;font-size:.8rem;border-radius:6px}
"""

PACKAGES = ("medfuse", "torch", "transformers", "peft", "scikit-learn", "lightgbm", "duckdb", "pyarrow", "numpy")


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class=\"{(classes or [''] * len(rows))[i]}\">" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval(entry: dict | None) -> str:
    if not entry or entry.get("low") is None:
        return "–"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def cohort_section(cohort: Cohort) -> str:
    m = cohort.manifest
    sizes, prev = m["split_sizes"], m["prevalence"]
    adm = cohort.table("admissions")
    has_notes = np.asarray(adm.column("has_notes").to_pylist())
    has_labs = np.asarray(adm.column("has_labs").to_pylist())
    split = cohort.split
    parts = ["<h2>Cohort</h2>",
             (f"<p class='sub'>{html.escape(m['source'])} from <code>{html.escape(m['raw'])}</code>, "
             f"prepared {html.escape(m['created'])}, notes: {html.escape(m['notes_status'])}</p>")]
    rows = [["patients", *[sizes[s]["patients"] for s in (*SPLITS, "all")]],
            ["admissions", *[sizes[s]["admissions"] for s in (*SPLITS, "all")]],
            ["without note", *[float((~has_notes[split == s]).mean()) if (split == s).any() else None for s in SPLITS],
             float((~has_notes).mean())],
            ["without labs", *[float((~has_labs[split == s]).mean()) if (split == s).any() else None for s in SPLITS],
             float((~has_labs).mean())]]
    rows += [[m["label_titles"].get(n, n), *[prev[s][n] for s in (*SPLITS, "all")]] for n in m["labels"]]
    parts.append(_table(["", *SPLITS, "all"], rows))
    drop_rows = [[t, a["read"], a["used"], sum(a["dropped"].values()),
                  ", ".join(f"{k}: {v:,}" for k, v in a["dropped"].items()) or "–"] for t, a in m["tables"].items()]
    parts.append("<h3>Raw rows</h3>" + _table(["table", "read", "used", "dropped", "by reason"], drop_rows))
    return "\n".join(parts)


def headline_section(metrics: dict) -> str:
    tuned = metrics["at_tuned_thresholds"]
    boot = tuned.get("bootstrap", {})
    cards = "".join(
        f"<div class='card'>{html.escape(label)}<b>{_fmt(tuned[group][key])}</b>"
        f"<span class='sub'>{_interval(boot.get(f'{group}_{key}'))[5:]}</span></div>"
        for label, group, key in (("macro-F1", "macro", "f1"), ("micro-F1", "micro", "f1"),
                                  ("macro-AUPRC", "macro", "auprc"), ("macro-AUROC", "macro", "auroc")))
    per_label = [[n, v["support"], v["prevalence"], v["f1"], v["precision"], v["recall"], v["auroc"], v["auprc"],
                  v["brier"], v["ece"], metrics["thresholds"][n]] for n, v in tuned["per_label"].items()]
    at05 = metrics["at_0.5"]
    parts = [f"<h2>MEDFuse on the {html.escape(metrics['split'])} split</h2>",
             (f"<p class='sub'>{metrics['n']:,} admissions of {metrics['n_patients']:,} patients; thresholds tuned on "
             "validation and frozen; 95% intervals from a patient-level bootstrap.</p>"),
             f"<div class='cards'>{cards}</div>",
             _table(["label", "support", "prevalence", "F1", "precision", "recall", "AUROC", "AUPRC", "Brier", "ECE",
                     "threshold"], per_label),
             _table(["summary", "at tuned thresholds", "at 0.5"],
                    [["macro-F1", tuned["macro"]["f1"], at05["macro"]["f1"]],
                     ["micro-F1", tuned["micro"]["f1"], at05["micro"]["f1"]],
                     ["weighted-F1", tuned["weighted"]["f1"], at05["weighted"]["f1"]],
                     ["Hamming accuracy", tuned["hamming_accuracy"], at05["hamming_accuracy"]],
                     ["exact match", tuned["exact_match"], at05["exact_match"]],
                     ["Brier", tuned["brier"], at05["brier"]], ["ECE", tuned["ece"], at05["ece"]]])]
    subgroups = metrics.get("subgroups", {})
    if subgroups:
        parts.append("<h3>Missing-modality subgroups</h3>")
        parts.append(_table(["subgroup", "admissions", "macro-F1", "micro-F1", "macro-AUPRC", "macro-AUROC"],
                            [[k, g["n"], g["macro"]["f1"], g["micro"]["f1"], g["macro"]["auprc"], g["macro"]["auroc"]]
                             if g.get("n") else [k, 0, None, None, None, None] for k, g in subgroups.items()]))
    return "\n".join(parts)


def comparison_section(table: dict) -> str:
    from medfuse.training.compare import tuned_text
    from medfuse.training.plots import comparison_chart

    best = max(r["summary"]["macro_auprc"]["mean"] for r in table["models"])
    rows, classes = [], []
    for r in table["models"]:
        s, b = r["summary"], r["bootstrap_seed0"]
        rows.append([r["name"], r["group"], *[f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in
                                             ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")],
                     _interval(b.get("macro_f1")), _interval(b.get("macro_auprc")), tuned_text(r)])
        classes.append("best" if s["macro_auprc"]["mean"] == best else "")
    chart_rows = [{"name": r["name"], "mean": r["summary"]["macro_auprc"]["mean"], "std": r["summary"]["macro_auprc"]["std"]}
                  for r in table["models"]]
    return "\n".join([
        "<h2>Baselines and ablations</h2>",
        (f"<p class='sub'>Same split, same early-stopping rule, same tuning (each neural row's settings chosen "
         f"on validation macro-AUPRC over {html.escape(json.dumps(table.get('grid', {})))} with the first seed); "
         f"mean ± sd over seeds {table['seeds']}; "
        f"bracketed: seed {table['seeds'][0]}'s patient-level bootstrap 95% interval ({table['n_resamples']} resamples). "
        "The MEDFuse run at the top of this page uses the <code>train</code> settings of its configuration, "
        "not the row's validation choice, so its figures can differ from the MEDFuse row.</p>"),
        _table(["model", "group", "macro-F1", "micro-F1", "macro-AUPRC", "macro-AUROC", "macro-F1 95% CI",
                "macro-AUPRC 95% CI", "tuned on validation"], rows, classes),
        _img(comparison_chart(chart_rows, "macro-AUPRC"), "comparison chart")])


def mltm_section(labs_run: Path) -> str:
    history_file = labs_run / "history.json"
    recon_file = labs_run / "reconstruction.json"
    parts = ["<h2>Masked lab-test modelling (MLTM)</h2>"]
    if recon_file.exists():
        recon = json.loads(recon_file.read_text())
        parts.append(f"<p class='sub'>{html.escape(recon.get('description', ''))}</p>")
        parts.append(_table(["method", "NRMSE (all hidden values)"], [[k, v] for k, v in recon["overall"].items()]))
    if history_file.exists():
        from medfuse.training.plots import training_curves

        hist = json.loads(history_file.read_text())  # per-epoch lists
        epochs = [{"epoch": e, "train_loss": t, "val_loss": v}
                  for e, t, v in zip(hist["epoch"], hist["train_loss"], hist["val_loss"])]
        if epochs:
            parts.append(_img(training_curves(epochs, ["train_loss", "val_loss"]), "MLTM training curve"))
    return "\n".join(parts)


def build_report(run_dir: str | Path, compare_dir: str | Path | None = None, split: str = "test") -> Path:
    """Write ``run_dir/report.html`` from a trained, evaluated run (and an optional comparison)."""
    from medfuse.training.plots import calibration_plot, roc_pr_curves, training_curves

    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    cohort = Cohort(info["cohort"])
    metrics = json.loads((run_dir / f"metrics_{split}.json").read_text())
    preds = pq.read_table(run_dir / f"predictions_{split}.parquet")
    names = cohort.label_names
    y = np.stack([preds.column(f"{n}__true").to_numpy() for n in names], axis=1)
    p = np.stack([preds.column(f"{n}__prob").to_numpy() for n in names], axis=1)
    history = json.loads((run_dir / "history.json").read_text())
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    sections = [
        "<h1>medfuse report</h1>",
        (f"<p class='sub'>Run <code>{html.escape(str(run_dir.resolve()))}</code> · generated "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}</p>"),
        cohort_section(cohort),
        headline_section(metrics),
    ]
    if compare_dir and (Path(compare_dir) / "compare.json").exists():
        sections.append(comparison_section(json.loads((Path(compare_dir) / "compare.json").read_text())))
    sections += [
        "<h2>ROC and precision-recall curves</h2>", _img(roc_pr_curves(y, p, names), "ROC and PR curves"),
        "<h2>Calibration</h2>", _img(calibration_plot(y, p, names), "calibration plot"),
        "<h2>Training</h2>",
        _img(training_curves(history, ["train_bce", "train_mi", "val_macro_auprc"]), "training curves"),
        mltm_section(Path(info["labs_run"])),
        "<h2>Configuration and versions</h2>",
        _table(["package", "version"], [[k, v] for k, v in {**versions, "python": platform.python_version()}.items()]),
        f"<pre>{html.escape(json.dumps(info['config'], indent=2))}</pre>",
    ]
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>medfuse report</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>")
    out = run_dir / "report.html"
    out.write_text(page)
    return out
