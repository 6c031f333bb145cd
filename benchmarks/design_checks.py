"""Design checks: the library defaults that docs/ justifies, re-checked on VALIDATION data only.

The development cohort is synthetic seed 0 at 2,000 admissions (mimic3 layout, default prepare), with
the settings of src/medfuse/resources/demo.toml (its [synth] seed aside). Reported synthetic results use
other seeds that no choice looked at (docs/protocol.md). Each fusion check trains the default and the
alternative MEDFuse with three training seeds, on one MLTM run and one note-embedding run, and reports
validation macro-AUPRC and macro-F1 (mean ± sd over seeds). The logistic-regression probes choose C per
label by grouped 3-fold cross-validation on the training split and are scored on validation. The test
split is never predicted.

Checks (``--only NAME``, repeatable; the other checks keep their last result in the JSON):

* ``skip``: MEDFuse with and without its skip connections (``train.skip_connections``);
* ``floor``: the MI floor on and off at lambda 0.1 (``train.mi_floor``), lambda 0 as reference;
* ``lab_values``: the lab value channels on and off (``train.lab_values``), and probes on the flattened
  frozen MLTM tokens against the raw last / min / max values;
* ``mask_ratio``: MEDFuse and the token probe with an MLTM pre-trained at mask ratio 0.75 (default) vs 0.3;
* ``note_probe``: probes on each note vector (whole text, per field, lines max / clusters / both, TF-IDF)
  and MEDFuse on the default vector vs its line-cluster bags alone;
* ``parts``: MEDFuse against each of its parts removed (MLTM pre-training, the Kronecker term, the MI loss,
  cross-attention), with knock-outs and read-outs of every trained model (``design_parts.inspect_medfuse``);
* ``mltm``: candidates to make MLTM pre-training help (longer pre-training, the encoder fine-tuned end to
  end), the MLTM runs' validation reconstruction and token probes, and what the pre-training set holds.

    .venv/bin/python benchmarks/design_checks.py                 # all checks (about 1.5 h on 2 busy cores, 2 h
                                                                  # when the 600-epoch MLTM is trained here)
    .venv/bin/python benchmarks/design_checks.py --only skip     # one check
    .venv/bin/python benchmarks/design_checks.py --render-only   # the .md again, from the .json

Work is cached under runs/design/ (cohort, MLTM runs, note runs, one folder per fusion run, probe
results); results go to benchmarks/results/design_checks.json and design_checks.md, both written here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _common import offline

offline()

from medfuse.config import MedfuseConfig, load_config

WORK = ROOT / "runs" / "design"
RESULTS = ROOT / "benchmarks" / "results"
SEEDS = (0, 1, 2)
ALT_MASK_RATIO = 0.3
LOGREG_CS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)  # rows of unit mean squared norm
LONG_MLTM = {"epochs": 100}  # the library default budget (early stopping, patience 10) against the demo's 30
# benchmarks/bench_mltm.py's budget (benchmarks/configs/mltm.toml); its run on this cohort is reused when it is
# copied to runs/design/labs-mask0.75-epochs600-patience60 (else it is trained here: about 30 min)
LONGEST_MLTM = {"epochs": 600, "patience": 60}
CHECKS = ("skip", "floor", "lab_values", "mask_ratio", "note_probe", "parts", "mltm")
# fusion variants: ([labs] overrides of the demo's MLTM, {} = none; note vectors, "lines" = the shipped default and
# "bag" = its bag-of-line-clusters blocks only; [train] overrides of the demo settings)
VARIANTS = {
    "default": ({}, "lines", {}),
    "no skip connections": ({}, "lines", {"skip_connections": False}),
    "no MI floor": ({}, "lines", {"mi_floor": False}),
    "w/o MI loss (lambda 0)": ({}, "lines", {"mi_weight": 0.0}),
    "no lab value channels": ({}, "lines", {"lab_values": False}),
    f"MLTM mask {ALT_MASK_RATIO:g}": ({"mask_ratio": ALT_MASK_RATIO}, "lines", {}),
    "note vector: line-cluster bags only": ({}, "bag", {}),
    "w/o MLTM pre-training": ({}, "lines", {"labs_encoder": "scratch"}),
    "w/o Kronecker term": ({}, "lines", {"use_kronecker": False}),
    "w/o cross-attention": ({}, "lines", {"use_cross_attention": False}),
    f"MLTM pre-trained {LONG_MLTM['epochs']} epochs": (LONG_MLTM, "lines", {}),
    f"MLTM pre-trained {LONGEST_MLTM['epochs']} epochs": (LONGEST_MLTM, "lines", {}),
    "MLTM fine-tuned end to end": ({}, "lines", {"labs_encoder": "finetune"}),
    # the paper's configuration around each part: no skip connections (the head sees s_a, s_c, s_b only) ...
    "no skip connections, w/o Kronecker term": ({}, "lines", {"skip_connections": False, "use_kronecker": False}),
    "no skip connections, w/o MI loss (lambda 0)": ({}, "lines", {"skip_connections": False, "mi_weight": 0.0}),
    "no skip connections, w/o cross-attention": ({}, "lines", {"skip_connections": False,
                                                               "use_cross_attention": False}),
    # ... and no lab value channels (the labs reach the model through the MLTM encoder only)
    "no lab value channels, w/o MLTM pre-training": ({}, "lines", {"lab_values": False, "labs_encoder": "scratch"}),
    f"no lab value channels, MLTM pre-trained {LONGEST_MLTM['epochs']} epochs": (
        LONGEST_MLTM, "lines", {"lab_values": False}),
}
CHECK_VARIANTS = {
    "skip": ["default", "no skip connections"],
    "floor": ["default", "no MI floor", "w/o MI loss (lambda 0)"],
    "lab_values": ["default", "no lab value channels"],
    "mask_ratio": ["default", f"MLTM mask {ALT_MASK_RATIO:g}"],
    "note_probe": ["default", "note vector: line-cluster bags only"],
    "parts": ["default", "w/o MLTM pre-training", "w/o Kronecker term", "w/o MI loss (lambda 0)",
              "w/o cross-attention", "no skip connections", "no skip connections, w/o Kronecker term",
              "no skip connections, w/o MI loss (lambda 0)", "no skip connections, w/o cross-attention"],
    "mltm": ["default", f"MLTM pre-trained {LONG_MLTM['epochs']} epochs",
             f"MLTM pre-trained {LONGEST_MLTM['epochs']} epochs", "MLTM fine-tuned end to end", "w/o MLTM pre-training",
             "no lab value channels", "no lab value channels, w/o MLTM pre-training",
             f"no lab value channels, MLTM pre-trained {LONGEST_MLTM['epochs']} epochs"],
}


def slug(name: str) -> str:
    """A variant's folder name: ``"w/o MI loss (lambda 0)"`` -> ``"w-o-MI-loss-lambda-0"``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the development cohort and its MLTM / note runs ---------------------------------------------
def dev_config() -> MedfuseConfig:
    """The demo settings (demo.toml over the defaults) on the development seed: synthetic seed 0, mimic3."""
    demo = Path(str(resources.files("medfuse.resources").joinpath("demo.toml")))
    return load_config(demo, {"synth": {"seed": 0, "format": "mimic3"}})


def dev_cohort(cfg: MedfuseConfig) -> Path:
    """Synthetic seed 0 at the demo size, mimic3 layout, default prepare (as ``medfuse demo`` makes its
    cohort, on the development seed); made once."""
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate

    raw, out = WORK / "raw", WORK / "cohort"
    if not (raw / ".complete").exists():
        log(f"synth: {cfg.synth.admissions} admissions, seed 0")
        generate(raw, "mimic3", cfg.synth.admissions, seed=0, note_fraction=cfg.synth.note_fraction)
        (raw / ".complete").touch()
    if not (out / "manifest.json").is_file():
        log("prepare")
        prepare_cohort(raw, out, cfg.prepare.model_copy(update={"source": "mimic3"}), overwrite=True)
    return out


def labs_dir(cfg: MedfuseConfig, overrides: dict) -> Path:
    """The folder of the MLTM run with the demo's [labs] settings and ``overrides``: ``labs-mask0.75``,
    ``labs-mask0.75-epochs100``..."""
    labs = cfg.labs.model_copy(update=overrides)
    extra = "".join(f"-{k}{v:g}" for k, v in sorted(overrides.items()) if k != "mask_ratio")
    return WORK / f"labs-mask{labs.mask_ratio:g}{extra}"


def labs_run(cohort: Path, cfg: MedfuseConfig, overrides: dict) -> Path:
    """An MLTM run with the demo's [labs] settings and ``overrides``; trained once."""
    from medfuse.labs import pretrain

    labs = cfg.labs.model_copy(update=overrides)
    run = labs_dir(cfg, overrides)
    done = run / "config.json"
    if not (done.is_file() and json.loads(done.read_text())["train"] == labs.model_dump(mode="json")):
        log(f"pretrain-labs, mask ratio {labs.mask_ratio:g}, {labs.epochs} epochs")
        pretrain(cohort, run, labs)
    return run


def notes_run(cohort: Path, cfg: MedfuseConfig, unit: str = "lines") -> Path:
    """An embed-notes run with the shipped [notes] settings and ``unit``; embedded once (cached vectors)."""
    from medfuse.notes.embeddings import EMBEDDINGS_FILE, embed_cohort

    run = WORK / f"notes-{unit}"
    if not (run / EMBEDDINGS_FILE).is_file():
        log(f"embed-notes, unit = {unit}")
        embed_cohort(cohort, run, cfg.notes.model_copy(update={"unit": unit}))
    return run


def bag_notes_run(cohort: Path, cfg: MedfuseConfig) -> Path:
    """The default note vectors cut to their bag-of-line-clusters blocks (the max blocks dropped)."""
    from medfuse.notes.embeddings import EMBEDDINGS_FILE, load_note_embeddings, write_note_embeddings
    from medfuse.notes.text import template_fields

    run = WORK / "notes-bag"
    if not (run / EMBEDDINGS_FILE).is_file():
        ids, x, missing = load_note_embeddings(notes_run(cohort, cfg))
        bags = len(template_fields(cfg.notes.template)) * cfg.notes.line_clusters  # the last blocks
        write_note_embeddings(run, ids, x[:, -bags:], missing, config={"from": str(notes_run(cohort, cfg)),
                                                                      "blocks": "bag of line clusters only"})
    return run


class Inputs:
    """The cohort, its runs and the FusionData per ([labs] overrides, note vectors), built on first use."""

    def __init__(self, cfg: MedfuseConfig):
        self.cfg = cfg
        self.cohort = dev_cohort(cfg)
        self._data: dict = {}

    def labs(self, overrides: dict | None = None) -> Path:
        return labs_run(self.cohort, self.cfg, overrides or {})

    def data(self, labs: dict | None = None, notes: str = "lines"):
        from medfuse.training.inputs import load_fusion_data

        key = (tuple(sorted((labs or {}).items())), notes)
        if key not in self._data:
            note_run = notes_run(self.cohort, self.cfg) if notes == "lines" else bag_notes_run(self.cohort, self.cfg)
            self._data[key] = load_fusion_data(self.cohort, self.labs(labs), note_run)
        return self._data[key]


# --- validation scores --------------------------------------------------------------------------
def val_scores(y: np.ndarray, p: np.ndarray, subjects: np.ndarray, evaluate) -> dict:
    """Validation macro-AUPRC (labels with a positive) and cross-fitted validation macro-F1: patient-disjoint
    5-fold, 20 repeats, each fold thresholded by the ``[evaluate]`` threshold rule tuned on the other folds
    (``medfuse.evaluation.thresholds.cross_fitted_f1``), so no F1 is scored on the rows that chose its threshold."""
    from medfuse.evaluation.thresholds import cross_fitted_f1, rule_from_config
    from medfuse.trainer import macro_auprc

    f1 = cross_fitted_f1(y, p, subjects, **rule_from_config(evaluate))["macro_f1"]
    return {"macro_auprc": macro_auprc(y, p), "macro_f1": f1}


def mean_sd(runs: list[dict], key: str) -> dict:
    v = [r[key] for r in runs]
    return {"mean": float(np.mean(v)), "sd": float(np.std(v))}


# --- fusion runs --------------------------------------------------------------------------------
def fusion_run(inputs: Inputs, name: str, seed: int) -> dict:
    """Train one MEDFuse variant with one seed (or reuse the finished run); its validation scores and the
    read-outs of ``design_parts.inspect_medfuse``."""
    from design_parts import inspect_medfuse

    from medfuse.torch_utils import resolve_device
    from medfuse.training.fusion import fit, lab_encoder, load_net, predict

    labs, notes, overrides = VARIANTS[name]
    cfg = inputs.cfg
    tcfg = cfg.train.model_validate({**cfg.train.model_dump(), **overrides, "seed": seed})
    key = {"train": tcfg.model_dump(mode="json"), "labs": cfg.labs.model_copy(update=labs).model_dump(mode="json"),
           "notes": notes, "evaluate": cfg.evaluate.model_dump(mode="json")}
    run = WORK / "fusion" / slug(name) / f"seed{seed}"
    done = run / "val_scores.json"
    if done.is_file() and (cached := json.loads(done.read_text()))["key"] == key:
        return cached["result"]
    data = inputs.data(labs, notes)
    log(f"fusion: {name}, seed {seed}")
    summary = fit(data, run, tcfg, lab_encoder(tcfg.labs_encoder, inputs.labs(labs), seed))
    device = resolve_device(tcfg.device)
    val = data.rows("val")
    net = load_net(run, lab_encoder(tcfg.labs_encoder, inputs.labs(labs), seed)).to(device)
    prob = predict(net, data, val, device)
    history = json.loads((run / "history.json").read_text())
    result = {"seed": seed, **val_scores(data.y[val], prob, data.subject_ids[val], cfg.evaluate),
              "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
              "seconds": round(summary["seconds"], 1),
              "train_mi_min": min(h["train_mi"] for h in history), "train_mi_last": history[-1]["train_mi"],
              "inspect": inspect_medfuse(net, data, val, device, seed)}
    done.write_text(json.dumps({"key": key, "result": result}, indent=2))
    log(f"  val macro-AUPRC {result['macro_auprc']:.4f}, macro-F1 {result['macro_f1']:.4f}, "
        f"{result['epochs']} epochs, {result['seconds']:.0f} s")
    return result


def fusion_variants(inputs: Inputs, names: list[str]) -> dict:
    out = {}
    for name in names:
        runs = [fusion_run(inputs, name, s) for s in SEEDS]
        labs, notes, overrides = VARIANTS[name]
        out[name] = {"overrides": overrides, "labs_overrides": labs,
                     "mask_ratio": labs.get("mask_ratio", inputs.cfg.labs.mask_ratio), "notes": notes,
                     "macro_auprc": mean_sd(runs, "macro_auprc"), "macro_f1": mean_sd(runs, "macro_f1"),
                     "train_mi_min": mean_sd(runs, "train_mi_min"), "train_mi_last": mean_sd(runs, "train_mi_last"),
                     "runs": runs}
    return out


# --- logistic-regression probes -----------------------------------------------------------------
def standardize(x: np.ndarray, fit_rows: np.ndarray, zero_rows: np.ndarray | None = None) -> np.ndarray:
    """Per-column z-scores with the statistics of ``fit_rows``, divided by sqrt(width) so that rows have unit
    mean squared norm, like TF-IDF rows: one C grid then suits every width. ``zero_rows`` (missing) stay 0."""
    mean, sd = x[fit_rows].mean(0), x[fit_rows].std(0) + 1e-6
    z = ((x - mean) / sd / np.sqrt(x.shape[1])).astype(np.float32)
    if zero_rows is not None:
        z[zero_rows] = 0.0
    return z


def probe(name: str, x, inputs: Inputs) -> dict:
    """Per-label logistic regression on ``x`` (all cohort rows): C from ``LOGREG_CS`` by grouped 3-fold
    cross-validation on the training split (average precision), refitted on train, scored on validation.
    Cached under runs/design/probes by ``name`` and the feature matrix's shape and checksum."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    data = inputs.data()
    key = {"shape": list(x.shape), "checksum": round(float(abs(x).sum()), 2), "Cs": list(LOGREG_CS),
           "evaluate": inputs.cfg.evaluate.model_dump(mode="json")}
    path = WORK / "probes" / (name.replace(" ", "-").replace("/", "-") + ".json")
    if path.is_file() and (cached := json.loads(path.read_text()))["key"] == key:
        return cached["result"]
    log(f"probe: {name} ({x.shape[1]} features)")
    t0 = time.perf_counter()
    train, val = data.rows("train"), data.rows("val")
    folds = list(GroupKFold(3).split(train, groups=data.subject_ids[train]))
    prob, chosen = np.zeros((len(val), data.y.shape[1])), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn announcing LogisticRegressionCV changes
        for j in range(data.y.shape[1]):
            model = LogisticRegressionCV(Cs=LOGREG_CS, cv=folds, scoring="average_precision", max_iter=1000)
            model.fit(x[train], data.y[train, j].astype(int))
            prob[:, j] = model.predict_proba(x[val])[:, 1]
            chosen.append(float(model.C_[0]))
    result = {"width": int(x.shape[1]), **val_scores(data.y[val], prob, data.subject_ids[val], inputs.cfg.evaluate),
              "C": chosen,
              "seconds": round(time.perf_counter() - t0, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result}, indent=2))
    log(f"  val macro-AUPRC {result['macro_auprc']:.4f}")
    return result


def mltm_label(cfg: MedfuseConfig, overrides: dict) -> str:
    """``"mask 0.75"``, ``"mask 0.75, epochs 100"``: an MLTM run's settings that differ from the demo's."""
    labs = cfg.labs.model_copy(update=overrides)
    return ", ".join([f"mask {labs.mask_ratio:g}"] + [f"{k} {v:g}" for k, v in sorted(overrides.items())
                                                      if k != "mask_ratio"])


def lab_probes(inputs: Inputs, mltm_runs: list[dict], with_values: bool) -> dict:
    """Probes on the flattened frozen MLTM tokens (per MLTM run: its [labs] overrides) and, ``with_values``, on
    the raw last/min/max values and on the tokens with the five value channels (what ``lab_values = true``
    gives the fusion model)."""
    data = inputs.data()
    train = data.split == "train"
    n = len(data.y)
    out = {}
    for overrides in mltm_runs:
        tokens = inputs.data(overrides).lab_tokens.reshape(n, -1)
        label = mltm_label(inputs.cfg, overrides)
        out[f"MLTM tokens, flattened ({label})"] = probe(f"lab tokens {label}", standardize(tokens, train), inputs)
    if with_values:
        raw = data.lab_values[..., [0, 2, 3]].reshape(n, -1)
        out["raw last / min / max"] = probe("lab raw last-min-max", standardize(raw, train), inputs)
        both = np.concatenate([data.lab_tokens.reshape(n, -1), data.lab_values.reshape(n, -1)], 1)
        out["MLTM tokens + the five value channels"] = probe("lab tokens and channels", standardize(both, train),
                                                             inputs)
    return out


def field_vectors(inputs: Inputs) -> np.ndarray:
    """One vector per template field (each field's text embedded whole, zeros when absent), concatenated."""
    from medfuse.notes.embeddings import embedder_from_config
    from medfuse.notes.text import build_texts, template_fields

    notes = inputs.cfg.notes
    nt = build_texts(inputs.cohort, notes.template)
    fields = template_fields(notes.template)
    embedder = embedder_from_config(notes)
    out = np.zeros((len(nt), len(fields), embedder.dim), np.float32)
    for j, f in enumerate(fields):
        rows = [i for i, v in enumerate(nt.values) if isinstance(v.get(f), str) and v[f].strip()]
        log(f"embed field {f}: {len(rows)} texts")
        if rows:
            out[rows, j] = embedder.embed([nt.values[i][f].strip() for i in rows])
    return out.reshape(len(nt), -1)


def note_probes(inputs: Inputs) -> dict:
    """The docs/notes.md probe table: each note vector through the same logistic-regression probe."""
    from medfuse.notes.embeddings import load_note_embeddings
    from medfuse.notes.text import build_texts, template_fields
    from medfuse.notes.tfidf import TfidfNotes

    cfg, data = inputs.cfg, inputs.data()
    train = data.split == "train"
    _, lines, missing = load_note_embeddings(notes_run(inputs.cohort, cfg, "lines"))
    _, whole, _ = load_note_embeddings(notes_run(inputs.cohort, cfg, "text"))
    width = len(template_fields(cfg.notes.template)) * whole.shape[1]  # the max blocks come first
    fit = train & ~missing

    def z(x: np.ndarray) -> np.ndarray:
        return standardize(x, fit, missing)

    texts = build_texts(inputs.cohort, cfg.notes.template).texts
    tfidf = TfidfNotes().fit([texts[i] for i in np.flatnonzero(train)]).transform(texts)
    reps = {
        'whole text (unit = "text")': whole,
        "one vector per field": field_vectors(inputs),
        "lines, max per field (line_clusters = 0)": lines[:, :width],
        f"lines, bag of {cfg.notes.line_clusters} line clusters per field only": lines[:, width:],
        f"lines, max + bag of {cfg.notes.line_clusters} clusters (default)": lines,
    }
    out = {name: probe(f"note {name}", z(x), inputs) for name, x in reps.items()}
    out["TF-IDF (word 1-2 grams) of the same text"] = probe("note tfidf", tfidf, inputs)
    return out


def mltm_runs(inputs: Inputs, runs: list[dict]) -> dict:
    """Per MLTM run: its pre-training record and its reconstruction of 20% hidden validation values
    (``labs.evaluate.reconstruction_table``: NRMSE of MLTM against the training mean)."""
    from medfuse.data import Cohort
    from medfuse.labs.evaluate import reconstruction_table

    out, cohort = {}, Cohort(inputs.cohort)
    for overrides in runs:
        path = inputs.labs(overrides)
        h = json.loads((path / "history.json").read_text())
        rec = reconstruction_table(cohort, path, split="val")
        out[mltm_label(inputs.cfg, overrides)] = {
            **{k: h["summary"][k] for k in ("epochs_run", "best_epoch", "stopped_early", "train_seconds",
                                             "train_admissions")},
            "initial_val_loss": h["initial_val_loss"], "best_val_loss": h["summary"]["best_val_loss"],
            "val_nrmse": rec["overall"], "val_hidden_values": rec["hidden_values"]}
    return out


def pretraining_set(inputs: Inputs) -> dict:
    """What ``pretrain-labs`` trains on (every training-split admission with a lab value, labelled or not, with
    a note or not) against what the cohort holds, and the raw lab rows that ``prepare`` ties to no admission."""
    import pyarrow.compute as pc

    from medfuse.data import Cohort

    cohort = Cohort(inputs.cohort)
    adm = cohort.table("admissions")
    train = cohort.split == "train"
    has_labs = adm.column("has_labs").to_numpy(zero_copy_only=False)
    has_notes = adm.column("has_notes").to_numpy(zero_copy_only=False)
    labels = cohort.labels()
    lab_rows = cohort.manifest["tables"]["labevents"]
    return {"train_admissions": int(train.sum()), "train_with_labs": int((train & has_labs).sum()),
            "train_with_labs_without_note": int((train & has_labs & ~has_notes).sum()),
            "train_without_any_label": int((train & (labels.sum(1) == 0)).sum()),
            "all_admissions_with_labs": int(pc.sum(adm.column("has_labs")).as_py()),
            "raw_lab_rows_read": lab_rows["read"], "raw_lab_rows_used": lab_rows["used"],
            "raw_lab_rows_outside_any_admission": lab_rows["dropped"].get("outside_any_admission", 0)}


# --- checks and report --------------------------------------------------------------------------
def run_check(name: str, inputs: Inputs) -> dict:
    out: dict = {}
    if name in CHECK_VARIANTS:
        out["fusion"] = fusion_variants(inputs, CHECK_VARIANTS[name])
    if name == "lab_values":
        out["probes"] = lab_probes(inputs, [{}], with_values=True)
    elif name == "mask_ratio":
        out["probes"] = lab_probes(inputs, [{}, {"mask_ratio": ALT_MASK_RATIO}], with_values=False)
    elif name == "note_probe":
        out["probes"] = note_probes(inputs)
    elif name == "mltm":
        out["mltm_runs"] = mltm_runs(inputs, [{}, LONG_MLTM, LONGEST_MLTM])
        out["pretraining_set"] = pretraining_set(inputs)
        out["probes"] = lab_probes(inputs, [{}, LONG_MLTM, LONGEST_MLTM], with_values=True)
    return out


QUESTIONS = {
    "skip": "Skip connections: does MEDFuse's dense head gain from also seeing LN(note) and LN(pooled labs)?",
    "floor": "MI floor: penalise max(vCLUB estimate, 0) or the raw estimate, at lambda 0.1 (lambda 0 as reference)?",
    "lab_values": "Lab value channels: each lab token and the pooled vector also carry the test's normalised "
                  "last/mean/min/max and a measured flag, or the frozen MLTM output alone?",
    "mask_ratio": f"MLTM mask ratio for the embedder: the default (0.75) or {ALT_MASK_RATIO:g} (the imputer setting)?",
    "note_probe": "Note vector: which unit carries the most, for a linear probe and for MEDFuse (the default "
                  "vector against its line-cluster bags alone)?",
    "parts": "Does each MEDFuse part earn its place? MEDFuse against MEDFuse without MLTM pre-training "
             "(`labs_encoder = \"scratch\"`), without the Kronecker term, without the MI loss (lambda 0) and without "
             "cross-attention; the same without the skip connections (the paper's head, which reads only s_a, s_c "
             "and s_b); then knock-outs and read-outs of every trained model on validation "
             "(benchmarks/design_parts.py).",
    "mltm": f"Can MLTM pre-training be made to help? Longer pre-training ({LONG_MLTM['epochs']} epochs with early "
            f"stopping, patience 10, and {LONGEST_MLTM['epochs']} epochs, patience {LONGEST_MLTM['patience']}, the "
            "budget of benchmarks/bench_mltm.py, against the demo's 30), the pre-trained encoder fine-tuned end to end "
            "(`labs_encoder = \"finetune\"`), and no pre-training as the reference; then the same without the lab "
            "value channels, where the labs reach the model only through the MLTM encoder (as in the paper).",
}


def _cell(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Design checks on validation data of the development cohort",
        "",
        ("Written by `benchmarks/design_checks.py`; do not edit by hand. Development cohort: synthetic "
        f"seed 0, {meta['admissions']} admissions (mimic3 layout, default prepare; docs/protocol.md), "
        f"{meta['train_admissions']} training and {meta['val_admissions']} validation admissions. Settings of "
        "`src/medfuse/resources/demo.toml` (MLTM 30 epochs; fusion up to 30 epochs, patience 5, batch 128) and "
        "otherwise the shipped defaults, no `compare.grid` tuning. **Every figure is on the validation split; "
        "the test split is never predicted.**"),
        "",
        (f"Fusion rows: MEDFuse trained with seeds {', '.join(map(str, SEEDS))}; mean ± sd over seeds. Validation "
        "macro-AUPRC is also the early-stopping criterion (best epoch), so every row carries the same small "
        "optimism. The vCLUB column: the estimate of I([s_a; s_b]; s_c) averaged over an epoch's training batches, "
        "its lowest and its last epoch, mean of the seeds. Macro-F1: cross-fitted inside validation (patient-disjoint 5 folds x 20 repeats, each fold "
        f"at thresholds of the `{meta['threshold_rule']}` rule tuned on the other folds). Probes: per-label "
        "logistic regression on standardised features scaled to unit mean squared row norm (TF-IDF rows have unit norm already), C from "
        f"{list(LOGREG_CS)} by grouped 3-fold cross-validation on the training "
        "split, scored once on validation."),
    ]
    for name in CHECKS:
        check = results["checks"].get(name)
        if check is None:
            continue
        lines += ["", f"## {name}", "", QUESTIONS[name], ""]
        if "fusion" in check:
            lines += [("| MEDFuse variant | val macro-AUPRC | val macro-F1 | vCLUB estimate, nats: lowest / last "
                       "epoch | epochs (best) per seed |"), "|---|---:|---:|---:|---|"]
            best = max(v["macro_auprc"]["mean"] for v in check["fusion"].values())
            for vname, v in check["fusion"].items():
                auprc = _cell(v["macro_auprc"])
                auprc = f"**{auprc}**" if v["macro_auprc"]["mean"] == best else auprc
                epochs = ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in v["runs"])
                mi = f"{v['train_mi_min']['mean']:.2f} / {v['train_mi_last']['mean']:.2f}"
                lines.append(f"| {vname} | {auprc} | {_cell(v['macro_f1'])} | {mi} | {epochs} |")
            lines.append("")
        if "fusion" in check and name in ("parts", "mltm"):
            from design_parts import inspect_tables

            lines += inspect_tables(check["fusion"])
        if "mltm_runs" in check:
            lines += [("| MLTM run | epochs run (best) | val masked MSE: initial / best | val NRMSE, 20% hidden: "
                       "MLTM / training mean | train admissions | train seconds |"), "|---|---|---:|---:|---:|---:|"]
            for label, r in check["mltm_runs"].items():
                lines.append(f"| {label} | {r['epochs_run']} ({r['best_epoch']}) | {r['initial_val_loss']:.3f} / "
                             f"{r['best_val_loss']:.3f} | {r['val_nrmse']['MLTM']:.3f} / "
                             f"{r['val_nrmse']['training mean']:.3f} | {r['train_admissions']:,} | "
                             f"{r['train_seconds']:.0f} |")
            s = check["pretraining_set"]
            lines += ["", (f"What pre-training sees: {s['train_with_labs']:,} of the {s['train_admissions']:,} "
                           f"training admissions have a lab value and all of them are pre-trained on, "
                           f"{s['train_with_labs_without_note']:,} of them without a note and "
                           f"{s['train_without_any_label']:,} with none of the ten diseases; no cohort admission "
                           f"lacks labels (prepare drops admissions without a diagnosis row). Of "
                           f"{s['raw_lab_rows_read']:,} raw lab rows, {s['raw_lab_rows_outside_any_admission']:,} "
                           "belong to no admission (outpatient) and are not in the cohort."), ""]
        if "probes" in check:
            lines += ["| probe input | width | val macro-AUPRC | val macro-F1 |", "|---|---:|---:|---:|"]
            best = max(p["macro_auprc"] for p in check["probes"].values())
            for pname, p in check["probes"].items():
                auprc = f"{p['macro_auprc']:.3f}"
                auprc = f"**{auprc}**" if p["macro_auprc"] == best else auprc
                lines.append(f"| {pname} | {p['width']:,} | {auprc} | {p['macro_f1']:.3f} |")
            lines.append("")
    fusion = {(name, r["seed"]): r["seconds"] for c in results["checks"].values()
              for name, v in c.get("fusion", {}).items() for r in v["runs"]}
    probes = {name: p["seconds"] for c in results["checks"].values() for name, p in c.get("probes", {}).items()}
    mltm = ", ".join(f"{r}: {sec:.0f} s" for r, sec in meta["mltm_train_seconds"].items())
    lines += ["", (f"Compute as recorded when each piece was made (2 shared cores): {len(fusion)} fusion runs "
                   f"{sum(fusion.values()) / 60:.1f} min, {len(probes)} probes {sum(probes.values()) / 60:.1f} min, "
                   f"MLTM pre-training ({mltm}); embedding and data loading not counted."),
              "", f"Machine: {meta['machine']}; run {meta['created']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=CHECKS, help="run only this check (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "design_checks.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing --out JSON")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    args = ap.parse_args(argv)
    if args.render_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return

    import platform

    import torch

    torch.set_num_threads(args.threads)
    inputs = Inputs(dev_config())
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"checks": {}}
    for name in args.only or CHECKS:
        log(f"== {name}")
        results["checks"][name] = run_check(name, inputs)
    data = inputs.data()
    results["meta"] = {
        "cohort": "synthetic seed 0, mimic3 layout, default prepare", "admissions": len(data.y),
        "train_admissions": len(data.rows("train")), "val_admissions": len(data.rows("val")),
        "mltm_train_seconds": {mltm_label(inputs.cfg, o): json.loads((labs_dir(inputs.cfg, o) / "history.json")
                                                                     .read_text())["summary"]["train_seconds"]
                               for o in ({}, {"mask_ratio": ALT_MASK_RATIO}, LONG_MLTM, LONGEST_MLTM)
                               if (labs_dir(inputs.cfg, o) / "history.json").is_file()},
        "seeds": list(SEEDS), "threshold_rule": inputs.cfg.evaluate.threshold_rule, "labs": inputs.cfg.labs.model_dump(mode="json"),
        "train": inputs.cfg.train.model_dump(mode="json"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results = {"meta": results.pop("meta"), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
