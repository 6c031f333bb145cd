"""``report.html`` with explanations: the report of :mod:`medfuse.evaluation.report` plus "Explained test
patients", a few test admissions with their lab and note-line scores.

The run's model bundle (``RUN/model`` when it holds this run's weights, else one exported to a temporary
folder) explains the admissions as :mod:`medfuse.serving.explain` does for new patients, from the
cohort's own tables (the inputs ``evaluate`` saw).
"""

from __future__ import annotations

import html
import json
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from medfuse.data.cohort import Cohort
from medfuse.evaluation.report import (
    cohort_section,
    comparison_section,
    headline_section,
    html_img,
    html_table,
    lab_bars,
    page,
    versions_table,
)
from medfuse.runs.layout import COMPARE_FILE, RunFolder, labs_history, labs_reconstruction

PATIENTS = 3
LABELS_PER_PATIENT = 2
LAB_BARS = 8


def pick_admissions(preds, names: list[str], cohort: Cohort, n: int = PATIENTS) -> list[int]:
    """Up to ``n`` admissions (row numbers of ``preds``) with notes and labs and a true positive, each with
    a different most probable true positive label where possible, in ``hadm_id`` order."""
    adm = cohort.table("admissions").to_pydict()
    both = {h for h, a, b in zip(adm["hadm_id"], adm["has_notes"], adm["has_labs"], strict=True) if a and b}
    hadm = preds.column("hadm_id").to_pylist()
    prob = np.stack([preds.column(f"{c}__prob").to_numpy() for c in names], 1)
    hit = np.stack([preds.column(f"{c}__pred").to_numpy() & (preds.column(f"{c}__true").to_numpy() > 0)
                    for c in names], 1)
    rows = [i for i in np.argsort(hadm, kind="stable") if hit[i].any() and hadm[i] in both]
    chosen, labels = [], set()
    for i in rows:
        label = int(np.argmax(np.where(hit[i], prob[i], -1.0)))
        if label not in labels:
            chosen.append(int(i))
            labels.add(label)
    chosen += [int(i) for i in rows if i not in chosen]
    return chosen[:n]


def admissions_cohort(cohort: Cohort, hadm_ids: list[int]) -> Cohort:
    """An in-memory cohort of some admissions of ``cohort`` (its own tables, in its row order)."""
    import pyarrow as pa

    rows = pa.array(np.flatnonzero(np.isin(cohort.hadm_ids, hadm_ids)))
    tables = {name: cohort.table(name).take(rows) for name in ("admissions", "labs", "labels", "splits")}
    tables |= {name: cohort.table(name) for name in ("lab_tests", "notes", "lab_text") if cohort.has_table(name)}
    return Cohort.from_tables(tables, cohort.manifest)


def _colour(score: float, scale: float, strongest: float = 0.55) -> str:
    """Red towards the label, blue against; opacity by ``|score| / scale`` (``strongest`` at most)."""
    alpha = strongest * min(1.0, abs(score) / scale) if scale > 0 else 0.0
    rgb = "214,39,40" if score > 0 else "31,119,180"
    return f"rgba({rgb},{alpha:.2f})"


def note_lines(items: list[dict], scale: float) -> str:
    """The note's lines in order, each on a background coloured by its score."""
    if not items:
        return "<p class='sub'>No note.</p>"
    out, field = [], None
    for it in items:
        if it["field"] != field:
            field = it["field"]
            out.append(f"<div class='sub' style='margin-top:.4rem;font-size:.8rem'>{html.escape(field.replace('_', ' '))}</div>")
        out.append(f"<div style='background:{_colour(it['score'], scale)};padding:1px 4px' title='score "
                   f"{it['score']:+.4f}'>{html.escape(it['text'])} <span class='sub' style='font-size:.75rem'>"
                   f"{it['score']:+.3f}</span></div>")
    return "".join(out)


def patient_html(explainer, i: int, prob: np.ndarray, truth: np.ndarray, hadm_id: int) -> str:
    """One admission: per positive label (most probable first), lab bars and the highlighted note."""
    p = explainer.predictor
    positive = [int(j) for j in np.argsort(-prob) if prob[j] >= p.thresholds[j]][:LABELS_PER_PATIENT]
    titles = p.bundle["label_definitions"]
    true = ", ".join(titles[n]["title"] for n, t in zip(p.label_names, truth, strict=True) if t) or "none"
    parts = [f"<h3>Admission {hadm_id}</h3><p class='sub'>Diagnosed: {html.escape(true)}.</p>"]
    s = explainer.scores(i, labels=np.array(positive))
    for j in positive:
        name = p.label_names[j]
        labs = sorted((explainer.lab_item(i, int(t), sc) for t, sc in zip(s.tests, s.labs[j], strict=True)),
                      key=lambda it: -abs(it["score"]))[:LAB_BARS]
        lines = [explainer.line_item(int(n), sc) for n, sc in zip(s.line_index, s.lines[j], strict=True)]
        scale = max((abs(it["score"]) for it in labs + lines), default=0.0)  # one scale for bars and shading
        parts.append(f"<h4>{html.escape(titles[name]['title'])}: p = {prob[j]:.3f} (threshold {p.thresholds[j]:.3f}"
                     f"{', diagnosed' if truth[j] else ', not diagnosed'})</h4>"
                     "<div style='display:flex;gap:1.5rem;flex-wrap:wrap;align-items:flex-start'>"
                     f"<div>{lab_bars(labs, scale)}</div><div style='flex:1;min-width:320px;font-size:.85rem'>"
                     f"{note_lines(lines, scale)}</div></div>")
    return "".join(parts)


def _bundle(run_dir: Path, tmp: str) -> Path:
    """``RUN/model`` when it is a bundle of this run's weights, else a fresh export into ``tmp``."""
    from medfuse.runs.export import export_bundle
    from medfuse.serving.bundle import BUNDLE_FILE, sha256_file
    from medfuse.training.fusion import MODEL_FILE

    own = RunFolder(run_dir).bundle
    if (own / BUNDLE_FILE).is_file():
        files = json.loads((own / BUNDLE_FILE).read_text()).get("files", {})
        if files.get(f"fusion/{MODEL_FILE}") == sha256_file(RunFolder(run_dir).model):
            return own
    return export_bundle(run_dir, Path(tmp) / "model")


def explained_section(run_dir: Path, info: dict, split: str = "test") -> str:
    """``<h2>Explained test patients</h2>`` and a few admissions of ``split``, or why they are missing."""
    from medfuse.serving.bundle import BundleError
    from medfuse.serving.explain import Explainer
    from medfuse.serving.predict import Predictor

    head = [f"<h2>Explained {html.escape(split)} patients</h2>",
            ("<p class='sub'>A few admissions with a correctly predicted disease. Score of an item: the drop of "
             "the disease's probability when the item is deleted (the lab test made unmeasured, the note line "
             "removed); red pushed towards the disease, blue against. Bars: the lab tests with the largest "
             "scores, with the last value the model saw; note: every line, shaded by its score "
             "(docs/predict.md, Explanations).</p>")]
    cohort = Cohort(info["cohort"])
    preds = pq.read_table(RunFolder(run_dir).predictions(split))
    rows = pick_admissions(preds, cohort.label_names, cohort)
    if not rows:
        return "".join(head) + "<p class='sub'>No admission with notes, labs and a correct positive prediction.</p>"
    notes = info["config"]["notes"]
    cache = (notes.get("cache_dir") or None) if notes.get("cache", True) else False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            predictor = Predictor.load(_bundle(run_dir, tmp), cache_dir=cache)
            hadm = [int(preds.column("hadm_id")[i].as_py()) for i in rows]
            prepared = predictor.prepare_cohort(admissions_cohort(cohort, hadm))
            prob = predictor.probabilities(prepared)
            explainer = Explainer(predictor, prepared)
            truth = prepared.data.y
            order = [int(np.flatnonzero(prepared.data.hadm_ids == h)[0]) for h in hadm]
            body = [patient_html(explainer, i, prob[i], truth[i], int(prepared.data.hadm_ids[i])) for i in order]
    except (BundleError, OSError) as e:
        return "".join(head) + f"<p class='sub'>Not available: {html.escape(str(e))}</p>"
    return "".join(head + body)


def build_report_with_explanations(run_dir: str | Path, compare_dir: str | Path | None = None,
                                   split: str = "test") -> Path:
    """``RUN/report.html`` (:func:`medfuse.evaluation.report.build_report`) with the explained patients."""

    run_dir = Path(run_dir)
    info = RunFolder(run_dir).info()
    return build_report(run_dir, compare_dir, split, extra_sections=[explained_section(run_dir, info, split)])


def mltm_section(labs_run: Path) -> str:
    history_file, recon_file = labs_history(labs_run), labs_reconstruction(labs_run)
    parts = ["<h2>Masked lab-test modelling (MLTM)</h2>"]
    if recon_file.exists():
        recon = json.loads(recon_file.read_text())
        parts.append(f"<p class='sub'>{html.escape(recon.get('description', ''))}</p>")
        parts.append(html_table(["method", "NRMSE (all hidden values)"], [[k, v] for k, v in recon["overall"].items()]))
    if history_file.exists():
        from medfuse.evaluation.plots import training_curves

        hist = json.loads(history_file.read_text())  # per-epoch lists
        epochs = [{"epoch": e, "train_loss": t, "val_loss": v}
                  for e, t, v in zip(hist["epoch"], hist["train_loss"], hist["val_loss"])]
        if epochs:
            parts.append(html_img(training_curves(epochs, ["train_loss", "val_loss"]), "MLTM training curve"))
    return "\n".join(parts)


def build_report(run_dir: str | Path, compare_dir: str | Path | None = None, split: str = "test",
                 extra_sections: Sequence[str] = ()) -> Path:
    """Write ``run_dir/report.html`` from a trained, evaluated run (and an optional comparison);
    ``extra_sections`` (HTML) follow the calibration plot (:mod:`medfuse.runs.report` adds explanations)."""
    from medfuse.evaluation.plots import calibration_plot, roc_pr_curves, training_curves

    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    info = run.info()
    cohort = Cohort(info["cohort"])
    metrics = json.loads(run.metrics(split).read_text())
    preds = pq.read_table(run.predictions(split))
    names = cohort.label_names
    y = np.stack([preds.column(f"{n}__true").to_numpy() for n in names], axis=1)
    p = np.stack([preds.column(f"{n}__prob").to_numpy() for n in names], axis=1)
    history = json.loads(run.history.read_text())
    sections = [
        "<h1>medfuse report</h1>",
        (f"<p class='sub'>Run <code>{html.escape(str(run_dir.resolve()))}</code> · generated "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}</p>"),
        cohort_section(cohort),
        headline_section(metrics),
    ]
    if compare_dir and (Path(compare_dir) / COMPARE_FILE).exists():
        sections.append(comparison_section(json.loads((Path(compare_dir) / COMPARE_FILE).read_text())))
    sections += [
        "<h2>ROC and precision-recall curves</h2>", html_img(roc_pr_curves(y, p, names), "ROC and PR curves"),
        "<h2>Calibration</h2>", html_img(calibration_plot(y, p, names), "calibration plot"),
        *extra_sections,
        "<h2>Training</h2>",
        html_img(training_curves(history, ["train_bce", "train_mi", "val_macro_auprc"]), "training curves"),
        mltm_section(Path(info["labs_run"])),
        "<h2>Configuration and versions</h2>",
        versions_table(),
        f"<pre>{html.escape(json.dumps(info['config'], indent=2))}</pre>",
    ]
    out = run.report
    out.write_text(page("medfuse report", sections))
    return out
