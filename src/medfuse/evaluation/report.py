"""The sections of ``report.html`` as HTML: cohort, headline metrics, comparison table and chart, tables and
inlined images; :mod:`medfuse.runs.report` reads a run folder and puts them on one self-contained page."""

from __future__ import annotations

import base64
import html
import json
import platform
from collections.abc import Sequence
from importlib import metadata

import numpy as np

from medfuse.data.cohort import SPLITS, Cohort

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1180px;color:#1d2330;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ee;padding-bottom:.3rem;margin-top:2.2rem}
.sub{color:#5b6578}.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
th,td{border:1px solid #dfe3ea;padding:.3rem .6rem;text-align:right}th{background:#f3f5f9}
td:first-child,th:first-child{text-align:left}tr.best td{background:#eef7ee;font-weight:600}
table.nowrap{font-size:.85rem}table.nowrap td,table.nowrap th{white-space:nowrap;padding:.3rem .5rem}
table.numbers td+td{white-space:nowrap}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f6f8fb;border-radius:8px;padding:.8rem 1.2rem;min-width:150px}
.card b{display:block;font-size:1.6rem}img{max-width:100%;border:1px solid #e3e7ee;border-radius:6px}
pre{background:#f6f8fb;padding:1rem;font-size:.8rem;border-radius:6px;box-sizing:border-box;max-width:100%;
white-space:pre-wrap;overflow-wrap:anywhere;column-width:32rem;column-gap:2rem;column-rule:1px solid #e3e7ee}
table.labbars{margin:.2rem 0;font-size:.8rem}table.labbars td{border:0;padding:1px .4rem;white-space:nowrap}
table.labbars td.value{text-align:right;color:#5b6578}table.labbars td.bars{width:240px;padding:0}
.labbars .axis{display:flex;height:14px}.labbars .axis>div{flex:1;display:flex}
.labbars .axis>div:first-child{justify-content:flex-end;border-right:1px solid #5b6578}.labbars .axis span{display:block}
"""

PACKAGES = ("medfuse", "torch", "transformers", "peft", "scikit-learn", "lightgbm", "duckdb", "pyarrow", "numpy")


def html_img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def html_table(header: list[str], rows: list[list], classes: list[str] | None = None, cls: str = "") -> str:
    """A table (in a box that scrolls sideways where the page is too narrow for it); ``classes``: one CSS class
    per row, ``cls``: the table's (``"nowrap"``: cells on one line, a little smaller; ``"numbers"``: every cell
    but the first of a row on one line)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class=\"{(classes or [''] * len(rows))[i]}\">" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows))
    table_cls = f" class=\"{html.escape(cls)}\"" if cls else ""
    return f"<div class=\"scroll\"><table{table_cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _interval(entry: dict | None) -> str:
    if not entry or entry.get("low") is None:
        return "–"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def cohort_section(cohort: Cohort) -> str:
    from medfuse.data.audit import census_html
    from medfuse.evaluation.plots import cohort_flow

    m = cohort.manifest
    sizes, prev = m["split_sizes"], m["prevalence"]
    adm = cohort.table("admissions")
    has_notes = np.asarray(adm.column("has_notes").to_pylist())
    has_labs = np.asarray(adm.column("has_labs").to_pylist())
    split = cohort.split
    parts = ["<h2>Cohort</h2>",
             (f"<p class='sub'>{html.escape(m['source'])} from <code>{html.escape(m['raw'])}</code>, "
             f"prepared {html.escape(m['created'])}, notes: {html.escape(m['notes_status'])}, labs: "
             f"{html.escape(m.get('prediction_window', {}).get('description', 'the whole stay'))}</p>")]
    rows = [["patients", *[sizes[s]["patients"] for s in (*SPLITS, "all")]],
            ["admissions", *[sizes[s]["admissions"] for s in (*SPLITS, "all")]],
            ["without note", *[float((~has_notes[split == s]).mean()) if (split == s).any() else None for s in SPLITS],
             float((~has_notes).mean())],
            ["without labs", *[float((~has_labs[split == s]).mean()) if (split == s).any() else None for s in SPLITS],
             float((~has_labs).mean())]]
    rows += [[m["label_titles"].get(n, n), *[prev[s][n] for s in (*SPLITS, "all")]] for n in m["labels"]]
    parts.append(html_table(["", *SPLITS, "all"], rows))
    parts.append(html_img(cohort_flow(m, int(has_notes.sum()), int(has_labs.sum())), "cohort flow"))
    drop_rows = [[t, a["read"], a["used"], sum(a["dropped"].values()),
                  ", ".join(f"{k}: {v:,}" for k, v in a["dropped"].items()) or "–"] for t, a in m["tables"].items()]
    parts.append("<h3>Raw rows</h3>" + html_table(["table", "read", "used", "dropped", "by reason"], drop_rows))
    parts.append(census_html(m))
    return "\n".join(parts)


def rule_text(rule: dict | None) -> str:
    """``{"rule": "plateau", "tolerance": 0.08, ...}`` -> ``"plateau, tolerance 0.08"``."""
    if not rule:
        return "rule not recorded"
    params = {"plateau": ["tolerance"], "shrunk": ["shrinkage"]}.get(rule["rule"], [])
    params += ["min_positives"] if rule.get("min_positives", 1) > 1 else []
    return ", ".join([rule["rule"], *(f"{k.replace('_', ' ')} {rule[k]:g}" for k in params if k in rule)])


def headline_section(metrics: dict) -> str:
    tuned, at05 = metrics["at_tuned_thresholds"], metrics["at_0.5"]
    boot = tuned.get("bootstrap", {})
    cards = "".join(
        f"<div class='card'>{html.escape(label)}<b>{_fmt(tuned[group][key])}</b>"
        f"<span class='sub'>{_interval(boot.get(f'{group}_{key}'))[5:]}</span></div>"
        for label, group, key in (("macro-F1", "macro", "f1"), ("micro-F1", "micro", "f1"),
                                  ("macro-AUPRC", "macro", "auprc"), ("macro-AUROC", "macro", "auroc")))
    per_label = [[n, v["support"], v["prevalence"], v["f1"], v["precision"], v["recall"], v["auroc"], v["auprc"],
                  v["brier"], v["ece"], metrics["thresholds"][n]] for n, v in tuned["per_label"].items()]
    points = [[label, _interval(m["bootstrap"].get("macro_f1")), _interval(m["bootstrap"].get("micro_f1")),
               m["weighted"]["f1"], m["macro"]["precision"], m["macro"]["recall"], m["hamming_accuracy"],
               m["exact_match"]]
              for label, m in ((f"tuned on validation ({rule_text(metrics.get('threshold_rule'))})", tuned),
                               ("0.5 for every label", at05))]
    return "\n".join([
        f"<h2>MEDFuse on the {html.escape(metrics['split'])} split</h2>",
        (f"<p class='sub'>{metrics['n']:,} admissions of {metrics['n_patients']:,} patients; thresholds tuned on "
         "validation and frozen; 95% intervals from a patient-level bootstrap.</p>"),
        f"<div class='cards'>{cards}</div>",
        "<h3>Operating points</h3>",
        html_table(["thresholds", "macro-F1 [95% CI]", "micro-F1 [95% CI]", "weighted-F1", "macro precision",
                "macro recall", "Hamming accuracy", "exact match"], points, cls="numbers"),
        (f"<p class='sub'>Threshold-free: Brier {_fmt(tuned['brier'])}, ECE {_fmt(tuned['ece'])}, macro-AUPRC "
         f"{_interval(boot.get('macro_auprc'))}, macro-AUROC {_interval(boot.get('macro_auroc'))}.</p>"),
        html_table(["label", "support", "prevalence", "F1", "precision", "recall", "AUROC", "AUPRC", "Brier", "ECE",
                "threshold"], per_label, cls="numbers"),
        subgroup_section(metrics)])


FAMILY_TITLES = {"modality": "modality", "sex": "sex", "age_band": "age", "race": "race / ethnicity"}


def subgroup_section(metrics: dict) -> str:
    """Subgroup table: n, patients, macro-F1 and macro-AUPRC with their intervals, or why there are none."""
    rows = []
    for family, groups in metrics.get("subgroups", {}).items():
        for name, g in groups.items():
            label = f"{FAMILY_TITLES.get(family, family)}: {name.replace('_', ' ')}"
            if g["too_small"]:
                rows.append([label, g["n"], g["n_patients"], "too small", g["reason"], "–"])
            else:
                rows.append([label, g["n"], g["n_patients"], _interval(g["bootstrap"].get("macro_f1")),
                             _interval(g["bootstrap"].get("macro_auprc")), g["at_0.5"]["macro"]["f1"]])
    if not rows:
        return ""
    missing = "".join(f"; {FAMILY_TITLES.get(k, k)}: {html.escape(v)}"
                      for k, v in metrics.get("subgroups_not_available", {}).items())
    return "\n".join([
        "<h3>Subgroups</h3>",
        (f"<p class='sub'>Same frozen thresholds; 95% intervals from a bootstrap of each subgroup's own patients. "
         f"Subgroups with fewer than {metrics['min_subgroup_patients']} patients or without a label having both positive and "
         f"negative admissions are reported as too small{missing}.</p>"),
        html_table(["subgroup", "admissions", "patients", "macro-F1 [95% CI]", "macro-AUPRC [95% CI]", "macro-F1 at 0.5"],
                   rows, cls="numbers")])


def comparison_section(table: dict) -> str:
    """Two tables of the comparison (mean ± sd over seeds; the first seed's intervals and paired Δ), each
    cell on one line, and a dot plot of macro-AUPRC zoomed to the models' range."""
    from medfuse.evaluation.comparison import delta_cells, tuned_text
    from medfuse.evaluation.plots import comparison_chart

    best = max(r["summary"]["macro_auprc"]["mean"] for r in table["models"])
    paired = any("vs_medfuse" in r for r in table["models"])
    seed0 = table["seeds"][0]
    means, intervals, classes = [], [], []
    for r in table["models"]:
        s, b = r["summary"], r["bootstrap_seed0"]
        means.append([r["name"], r["group"], *[f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in
                                              ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")],
                      tuned_text(r)])
        intervals.append([r["name"], _interval(b.get("macro_f1")), _interval(b.get("macro_auprc")),
                          *([delta_cells(r, table, "macro_auprc")] if paired else [])])
        classes.append("best" if s["macro_auprc"]["mean"] == best else "")
    chart_rows = [{"name": r["name"], "group": r["group"], "mean": r["summary"]["macro_auprc"]["mean"],
                   "std": r["summary"]["macro_auprc"]["std"]} for r in table["models"]]
    return "\n".join([
        "<h2>Baselines and ablations</h2>",
        (f"<p class='sub'>Same split, same early-stopping rule, same tuning (each neural row's settings chosen "
         f"on validation macro-AUPRC over {html.escape(json.dumps(table.get('grid', {})))} with the first seed). "
         "The MEDFuse run at the top of this page uses the <code>train</code> settings of its configuration, "
         "not the row's validation choice, so its figures can differ from the MEDFuse row. Highlighted: the "
         "best mean macro-AUPRC.</p>"),
        f"<h3>Mean ± sd over seeds {html.escape(str(table['seeds']))}</h3>",
        html_table(["model", "group", "macro-F1", "micro-F1", "macro-AUPRC", "macro-AUROC", "tuned on validation"],
                   means, classes, cls="nowrap"),
        f"<h3>Seed {seed0}: 95% intervals{' and paired differences' if paired else ''}</h3>",
        (f"<p class='sub'>Patient-level bootstrap of seed {seed0}'s test predictions ({table['n_resamples']} "
         "resamples)."
         + (" Δ: test macro-AUPRC of MEDFuse minus the row, paired patient-level bootstrap of both first seeds on "
            "the same resamples, 95% interval and one-sided p; MEDFuse's own row: minus the best baseline (labs "
            "only, notes only or fusion row with the best mean macro-AUPRC)." if paired else "") + "</p>"),
        html_table(["model", "macro-F1 95% CI", "macro-AUPRC 95% CI",
                    *(["Δ macro-AUPRC, MEDFuse − row [95% CI], p"] if paired else [])], intervals, classes,
                   cls="nowrap"),
        html_img(comparison_chart(chart_rows, "macro-AUPRC"), "comparison chart: macro-AUPRC per model, mean ± sd")])


def lab_bars(items: list[dict], scale: float) -> str:
    """One row per lab test: its full name, the last value the model saw, a signed bar (red = towards the
    label, blue = against; ``scale`` = a full half-bar) and the score. An HTML table, so no name is cut;
    ``items`` as :meth:`medfuse.serving.explain.Explainer.lab_item` makes them."""
    if not items:
        return "<p class='sub'>No lab test measured.</p>"
    scale = scale or 1.0
    rows = []
    for it in items:
        score = float(it["score"])
        length = min(100.0, 100.0 * abs(score) / scale)
        colour = "rgba(214,39,40,0.85)" if score > 0 else "rgba(31,119,180,0.85)"
        bar = f"<span style='width:{max(length, 0.4):.1f}%;background:{colour}'></span>"
        value = "" if it.get("value") is None else f"{it['value']:g} {it.get('unit') or ''}".strip()
        rows.append(f"<tr><td>{html.escape(str(it['label']))}</td><td class='value'>{html.escape(value)}</td>"
                    f"<td class='bars'><div class='axis'><div>{bar if score < 0 else ''}</div>"
                    f"<div>{bar if score >= 0 else ''}</div></div></td><td>{score:+.3f}</td></tr>")
    return f"<table class='labbars' aria-label='lab test scores'><tbody>{''.join(rows)}</tbody></table>"


def versions_table() -> str:
    """The versions of the packages a result depends on, and of Python."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return html_table(["package", "version"], [[k, v] for k, v in {**versions, "python": platform.python_version()}.items()])


def page(title: str, sections: Sequence[str]) -> str:
    """One self-contained HTML page of ``sections``."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>")
