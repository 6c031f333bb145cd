"""The model bundle: one self-contained, versioned folder that holds everything prediction needs.

``medfuse export RUN --out MODEL`` writes it from a trained and evaluated run::

    MODEL/bundle.json                     versions, hashes, labels and definitions, thresholds, settings,
                                          validation and test metrics, the text model's identity
    MODEL/README.md                       the model card (Hugging Face style)
    MODEL/vocabulary/lab_tests.parquet    lab tests: itemid, label, unit, train-split median and scale
    MODEL/labs/                           the MLTM encoder (config.json, vocab.json, model.safetensors)
    MODEL/notes/                          embed_config.json, line_codebook.safetensors,
                                          note_standardisation.safetensors, finetune/ (LoRA adapter, head)
    MODEL/fusion/                         model.safetensors, model_config.json

Loading reads JSON, Parquet and safetensors only (nothing is unpickled) and never touches the cohort or
the runs the bundle came from. docs/predict.md describes the format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from medfuse import __version__
from medfuse.atomic import atomic_folder

FORMAT = "medfuse-bundle"
FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
CARD_FILE = "README.md"
STANDARDISATION_FILE = "note_standardisation.safetensors"
HEADLINE = ("macro_auprc", "macro_auroc", "macro_f1", "micro_f1")


class BundleError(ValueError):
    """A folder that is not a usable model bundle; the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    from medfuse.labs.pretraining import CONFIG_FILE as LABS_CONFIG
    from medfuse.labs.pretraining import MODEL_FILE as LABS_MODEL
    from medfuse.labs.pretraining import VOCAB_FILE
    from medfuse.notes.embeddings import CONFIG_FILE as EMBED_CONFIG
    from medfuse.notes.lines import CODEBOOK_FILE
    from medfuse.runs.stages import RUN_FILE, THRESHOLDS_FILE, evaluate_run, load_run_data
    from medfuse.training.trainer import MODEL_CONFIG_FILE, MODEL_FILE

    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / RUN_FILE).is_file():
        raise BundleError(f"{run_dir}: not a trained run (no {MODEL_FILE} / {RUN_FILE}); run `medfuse train` first")
    if out.exists() and not overwrite:
        raise BundleError(f"{out}: already exists (pass --overwrite to replace it)")
    info = json.loads((run_dir / RUN_FILE).read_text())
    cohort = Cohort(info["cohort"])
    labs_run, notes_run = Path(info["labs_run"]), Path(info["notes_run"])
    metrics = {}
    for split in ("val", "test"):
        path = run_dir / f"metrics_{split}.json"
        metrics[split] = json.loads(path.read_text()) if path.is_file() else evaluate_run(run_dir, split)

    with atomic_folder(out) as work:
        _copy(labs_run, work / "labs", (LABS_CONFIG, VOCAB_FILE, LABS_MODEL))
        _copy(notes_run, work / "notes", (EMBED_CONFIG, CODEBOOK_FILE))
        _copy(run_dir, work / "fusion", (MODEL_FILE, MODEL_CONFIG_FILE, THRESHOLDS_FILE))
        (work / "vocabulary").mkdir()
        shutil.copy2(cohort.path / "lab_tests.parquet", work / "vocabulary" / "lab_tests.parquet")
        embed = json.loads((notes_run / EMBED_CONFIG).read_text())
        if embed.get("adapter"):
            adapter = Path(embed["adapter"])
            shutil.copytree(adapter, work / "notes" / "finetune",
                            ignore=shutil.ignore_patterns("checkpoint*", "*.log"))
        from safetensors.numpy import save_file

        data = load_run_data(run_dir)[0]  # the run's inputs: the standardisation training applied
        mean, std = data.note_mean, data.note_std
        save_file({"mean": np.ascontiguousarray(mean, np.float32), "std": np.ascontiguousarray(std, np.float32)},
                  str(work / "notes" / STANDARDISATION_FILE))

        manifest = cohort.manifest
        prepare = manifest["config"]
        diseases = {d.name: d for d in load_diseases(prepare.get("diseases") or None)}
        thresholds = json.loads((run_dir / THRESHOLDS_FILE).read_text())
        files = {str(p.relative_to(work)): _sha256(p) for p in sorted(work.rglob("*")) if p.is_file()}
        content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        bundle = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_version": f"{__version__}+{content[:12]}",
            "medfuse_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "content_sha256": content,
            "training_cohort": {
                "manifest_sha256": _sha256(cohort.path / "manifest.json"),
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
        from medfuse.serving.card import model_card

        (work / CARD_FILE).write_text(model_card(bundle))
        return out


def read_bundle(path: str | Path, verify: bool = True) -> dict:
    """``bundle.json`` of a bundle folder, after checking the format and (with ``verify``) every file's hash."""
    path = Path(path)
    file = path / BUNDLE_FILE
    if not file.is_file():
        raise BundleError(f"{path}: not a medfuse model bundle (no {BUNDLE_FILE}); make one with `medfuse export`")
    try:
        bundle = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{file}: not valid JSON ({e})") from None
    if bundle.get("format") != FORMAT or bundle.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{file}: format {bundle.get('format')} v{bundle.get('format_version')} is not "
                          f"{FORMAT} v{FORMAT_VERSION}")
    if verify:
        for rel, digest in bundle["files"].items():
            f = path / rel
            if not f.is_file():
                raise BundleError(f"{f}: missing from the bundle")
            if _sha256(f) != digest:
                raise BundleError(f"{f}: content differs from the hash in {BUNDLE_FILE} (modified or corrupt)")
    return bundle
