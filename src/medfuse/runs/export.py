"""``medfuse export RUN --out MODEL``: a trained run -> a model bundle (the format: :mod:`medfuse.serving.bundle`).

The bundle copies what prediction needs from the run folder and its stage runs (:mod:`medfuse.runs.layout`):
the MLTM encoder, the note settings and line codebook, the fusion weights with their input sizes and note
standardisation, the thresholds, and the cohort's lab vocabulary with its frozen statistics. Nothing is read
from the run's input store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

from medfuse import __version__
from medfuse.atomic import atomic_folder
from medfuse.runs.layout import FUSION_FILES, LABS_FILES, NOTES_FILES, RunFolder, embed_config
from medfuse.serving.bundle import BUNDLE_FILE, CARD_FILE, FORMAT, FORMAT_VERSION, BundleError, sha256_file
from medfuse.serving.card import model_card

HEADLINE = ("macro_auprc", "macro_auroc", "macro_f1", "micro_f1")


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def _metric_summary(metrics: dict) -> dict:
    """Headline and per-label metrics with their 95% intervals, and subgroup results, of one split."""
    tuned = metrics["at_tuned_thresholds"]
    boot = tuned.get("bootstrap", {})

    def entry(stats: dict, key: str, value) -> dict:
        return stats.get(key) or {"value": value, "low": None, "high": None}

    subgroups = {}
    for attribute, groups in metrics.get("subgroups", {}).items():
        for name, g in groups.items():
            b = g.get("bootstrap", {})
            subgroups[f"{attribute}: {name}"] = (
                {"n": g["n"], "too_small": g.get("reason")} if g.get("too_small") else
                {"n": g["n"], "macro_auprc": entry(b, "macro_auprc", g["macro"]["auprc"]),
                 "macro_f1": entry(b, "macro_f1", g["macro"]["f1"])})
    return {
        "n": metrics["n"],
        "n_patients": metrics.get("n_patients"),
        "headline": {m: entry(boot, m, tuned["macro"].get(m.removeprefix("macro_"))) for m in HEADLINE},
        "per_label": {name: {"support": v.get("support"),
                             **{k: entry(boot, f"{name}/{k}", v.get(k)) for k in ("auprc", "auroc", "f1")}}
                      for name, v in tuned["per_label"].items()},
        "subgroups": subgroups,
    }


def export_bundle(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the bundle of a trained run to ``out`` (built in a temporary sibling, renamed when complete).

    Validation and test metrics are computed first when the run has not been evaluated on them.
    """
    from medfuse.data.cohort import Cohort
    from medfuse.data.diseases import load_diseases
    from medfuse.data.sections import ALLOWED_SECTIONS
    from medfuse.runs.stages import evaluate_run

    run, out = RunFolder(run_dir), Path(out)
    try:
        info = run.info()
    except FileNotFoundError as e:
        raise BundleError(str(e)) from None
    if out.exists() and not overwrite:
        raise BundleError(f"{out}: already exists (pass --overwrite to replace it)")
    if not all((run.root / name).is_file() for name in FUSION_FILES):
        raise BundleError(f"{run.root}: trained by medfuse before 0.2 (no input sizes beside the weights); "
                          "train it again to export it")
    cohort = Cohort(info["cohort"])
    labs_run, notes_run = Path(info["labs_run"]), Path(info["notes_run"])
    metrics = {}
    for split in ("val", "test"):
        path = run.metrics(split)
        metrics[split] = json.loads(path.read_text()) if path.is_file() else evaluate_run(run.root, split)

    with atomic_folder(out) as work:
        _copy(labs_run, work / "labs", LABS_FILES)
        _copy(notes_run, work / "notes", NOTES_FILES)
        _copy(run.root, work / "fusion", FUSION_FILES)
        (work / "vocabulary").mkdir()
        shutil.copy2(cohort.path / "lab_tests.parquet", work / "vocabulary" / "lab_tests.parquet")
        embed = embed_config(notes_run)
        if embed.get("adapter"):
            shutil.copytree(Path(embed["adapter"]), work / "notes" / "finetune",
                            ignore=shutil.ignore_patterns("checkpoint*", "*.log"))

        manifest = cohort.manifest
        prepare = manifest["config"]
        diseases = {d.name: d for d in load_diseases(prepare.get("diseases") or None)}
        thresholds = json.loads(run.thresholds.read_text())
        files = {str(p.relative_to(work)): sha256_file(p) for p in sorted(work.rglob("*")) if p.is_file()}
        content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        bundle = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_version": f"{__version__}+{content[:12]}",
            "medfuse_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "content_sha256": content,
            "training_cohort": {
                "manifest_sha256": sha256_file(cohort.path / "manifest.json"),
                "source": manifest["source"],
                "created": manifest.get("created"),
                "split_sizes": manifest["split_sizes"],
                "prevalence": manifest["prevalence"].get("train"),
                "prediction_window": manifest.get("prediction_window"),
            },
            "transform": {
                "source": manifest["source"],
                "lab_hours_before_admission": prepare["lab_hours_before_admission"],
                "window_hours": prepare.get("window_hours", 0.0),
                "lab_clip": manifest["lab_normalization"]["clip"],
                "lab_normalization": manifest["lab_normalization"],
                "sections": {name: list(spellings) for name, spellings in ALLOWED_SECTIONS.items()},
                "unit_conversions": "resources/unit_conversions.csv (medfuse " + __version__ + ")",
                # how the training MEDS dataset's codes were mapped: predict --format meds reads new data the same way
                "meds": prepare.get("meds") if manifest["source"] == "meds" else None,
            },
            "text_model": {k: embed.get(k) for k in (
                "model", "model_identity", "adapter_identity", "family", "pooling", "max_length", "stride",
                "normalize", "dtype", "template", "unit", "fields", "line_clusters", "line_max")},
            "labels": list(cohort.label_names),
            "label_definitions": {n: {"title": manifest["label_titles"].get(n, n),
                                      "icd9": list(diseases[n].icd9) if n in diseases else [],
                                      "icd10": list(diseases[n].icd10) if n in diseases else []}
                                  for n in cohort.label_names},
            "thresholds": thresholds,
            "threshold_rule": info["config"].get("evaluate", {}).get("threshold_rule", "f1_max"),
            "train": {k: info["config"]["train"].get(k) for k in ("kind", "labs_encoder", "lab_values", "seed",
                                                                  "mi_weight")},
            "notes_config": info["config"]["notes"],
            "metrics": {split: _metric_summary(m) for split, m in metrics.items()},
            "files": files,
        }
        (work / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2, default=str) + "\n")

        (work / CARD_FILE).write_text(model_card(bundle))
        return out


