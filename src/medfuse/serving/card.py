"""The model card: ``MODEL/README.md`` (Hugging Face style), ``medfuse info`` and ``GET /v1/model``."""

from __future__ import annotations

INTENDED_USE = (
    "Research on multi-label disease prediction from one hospital admission's lab tests and clinical note "
    "sections (chief complaint, present illness, past history, medications on admission). It estimates which "
    "of the listed diagnoses the admission's discharge codes will carry. It is not a medical device and must "
    "not guide the care of a patient; decisions need a clinician and a local validation."
)
LIMITATIONS = (
    "- Trained on one cohort; performance on another hospital, period or population must be measured "
    "there before use (distribution shift in labs, units, note style and coding practice).\n"
    "- Labels are ICD discharge codes, which under- and over-code; the model learns the coding as well as "
    "the disease.\n"
    "- Subgroup results above are estimates with wide intervals where groups are small.\n"
    "- Unit conversions cover a documented table only; other units are rejected, not guessed.\n"
    "- Explanations (occlusion of lab tests and note lines) describe the model, not causes."
)


def card(bundle: dict) -> dict:
    """The card as JSON: identity, intended use, data, labels, thresholds and metrics (no file hashes)."""
    return {
        "model_version": bundle["model_version"],
        "medfuse_version": bundle["medfuse_version"],
        "created": bundle["created"],
        "intended_use": INTENDED_USE,
        "training_cohort": bundle["training_cohort"],
        "text_model": {k: bundle["text_model"].get(k) for k in ("model", "model_identity", "family", "pooling",
                                                                "unit", "adapter_identity")},
        "model": bundle["train"],
        "labels": bundle["labels"],
        "label_definitions": bundle["label_definitions"],
        "thresholds": bundle["thresholds"],
        "threshold_rule": bundle["threshold_rule"],
        "metrics": bundle["metrics"],
        "prediction_window": bundle["transform"]["window_hours"] or "the whole stay",
        "limitations": LIMITATIONS,
    }


def interval_text(e: dict | None) -> str:
    """``0.786 (0.761–0.812)``, the value alone without an interval, ``-`` without a value."""
    if not e or e.get("value") is None:
        return "-"
    if e.get("low") is None:
        return f"{e['value']:.3f}"
    return f"{e['value']:.3f} ({e['low']:.3f}–{e['high']:.3f})"


def model_card(bundle: dict) -> str:
    """``README.md`` of a bundle."""
    c = card(bundle)
    cohort = c["training_cohort"]
    sizes = cohort["split_sizes"]
    test, val = c["metrics"]["test"], c["metrics"]["val"]
    lines = [
        "---",
        "library_name: medfuse",
        "tags: [medical, multimodal, multi-label-classification, ehr]",
        "---",
        f"# medfuse model {c['model_version']}",
        "",
        (f"A {c['model']['kind']} model (MEDFuse: masked lab-test modelling, language-model note embeddings, "
        f"disentangled fusion) predicting {len(c['labels'])} diagnoses of a hospital admission."),
        "",
        "## Intended use",
        "",
        c["intended_use"],
        "",
        "## Training data",
        "",
        (f"Source layout: {cohort['source']}. Cohort created {cohort['created']}; manifest sha256 "
        f"`{cohort['manifest_sha256'][:16]}…`."),
        "",
        "| split | admissions | patients |",
        "|---|---:|---:|",
        *[f"| {s} | {sizes[s]['admissions']:,} | {sizes[s]['patients']:,} |" for s in ("train", "val", "test")],
        "",
        (f"Text model: `{c['text_model']['model']}` (identity `{str(c['text_model']['model_identity'])[:16]}…`, "
        f"{c['text_model']['pooling']} pooling, unit {c['text_model']['unit']}). Prediction window: "
        f"{c['prediction_window']}."),
        "",
        "## Metrics",
        "",
        "Test split, at the thresholds tuned on validation; 95% patient-level bootstrap intervals.",
        "",
        "| metric | validation | test |",
        "|---|---:|---:|",
        *[f"| {m} | {interval_text(val['headline'].get(m))} | {interval_text(test['headline'].get(m))} |"
          for m in test["headline"]],
        "",
        "| label | definition (ICD-9 / ICD-10 prefixes) | threshold | test AUPRC | test AUROC | test F1 | support |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in c["labels"]:
        d, m = c["label_definitions"][name], test["per_label"].get(name, {})
        icd = "; ".join(filter(None, (", ".join(d["icd9"]), ", ".join(d["icd10"]))))
        lines.append(f"| {d['title']} | {icd} | {c['thresholds'][name]:.3f} | {interval_text(m.get('auprc'))} | "
                     f"{interval_text(m.get('auroc'))} | {interval_text(m.get('f1'))} | {m.get('support', '-')} |")
    lines += ["", "## Subgroups (test)", "", "| subgroup | n | macro-AUPRC | macro-F1 |", "|---|---:|---:|---:|"]
    for name, g in test["subgroups"].items():
        if g.get("too_small"):
            lines.append(f"| {name} | {g['n']} | too small: {g['too_small']} | |")
        else:
            lines.append(f"| {name} | {g['n']} | {interval_text(g['macro_auprc'])} | {interval_text(g['macro_f1'])} |")
    lines += ["", "## Limitations", "", c["limitations"], "",
              "## How to use", "", "```", "medfuse info MODEL", ("medfuse predict MODEL --input patients.jsonl "
              "--out predictions.parquet --explain"), "medfuse serve MODEL", "```", ""]
    return "\n".join(lines)
