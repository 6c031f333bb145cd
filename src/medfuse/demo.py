"""``medfuse demo``: the whole pipeline on synthetic data, offline.

It sits above :mod:`medfuse.serving`, :mod:`medfuse.runs.stages` and :mod:`medfuse.runs.compare`, so that
dependencies point one way: CLI, then this module, serving, the pipeline, then the stages (tests/test_layout.py).
"""

from __future__ import annotations

from pathlib import Path

from medfuse.config import MedfuseConfig
from medfuse.progress import ProgressFn, no_progress
from medfuse.runs.stages import evaluate_run, train_run


def demo(out: str | Path, cfg: MedfuseConfig, progress: ProgressFn | None = None) -> dict:
    """Synthetic data -> prepare -> pretrain-labs -> embed-notes -> train -> evaluate -> compare -> export
    (``RUN/model``) -> report -> 3 new patients predicted and explained through the bundle."""
    import time

    from medfuse.data.prepare import prepare_cohort
    from medfuse.runs.compare import compare
    from medfuse.runs.export import export_bundle
    from medfuse.runs.layout import RunFolder
    from medfuse.runs.report import build_report_with_explanations

    progress = progress or no_progress
    out = Path(out)
    t0 = time.perf_counter()
    raw, cohort, run, comparison = out / "raw", out / "cohort", out / "run", out / "compare"
    synthetic(raw, cfg.synth.format, cfg.synth.admissions, cfg.synth.seed, cfg.synth.note_fraction, progress)
    prepare_cohort(raw, cohort, cfg.prepare.model_copy(update={"source": cfg.synth.format}), overwrite=True,
                   progress=progress)
    train_run(cohort, run, cfg, progress=progress)
    metrics = evaluate_run(run, "test", cfg.evaluate.n_resamples, progress=progress)
    reuse = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"labs_run": str(run / "labs"), "notes_run": str(run / "notes")})})
    table = compare(cohort, comparison, reuse, progress=progress)
    bundle = RunFolder(run).bundle
    export_bundle(run, bundle, overwrite=True)  # the report explains test patients with it
    report = build_report_with_explanations(run, comparison)
    new_patients = use_model(out, bundle, cfg, progress)
    return {"metrics": metrics, "compare": table, "report": report, "new_patients": new_patients,
            "seconds": round(time.perf_counter() - t0, 1)}


def synthetic(out: Path, fmt: str, admissions: int, seed: int, note_fraction: float,
              progress: ProgressFn | None = None) -> dict:
    """The synthetic hospital in ``fmt``: the MIMIC-III or MIMIC-IV layout, or (``meds``) a MEDS dataset."""
    from medfuse.data.synth import generate
    from medfuse.data.synth.meds import generate_meds

    if fmt == "meds":
        return generate_meds(out, admissions, seed=seed, note_fraction=note_fraction, progress=progress)
    return generate(out, fmt, admissions, seed=seed, note_fraction=note_fraction, progress=progress)


def use_model(out: Path, model: Path, cfg: MedfuseConfig, progress: ProgressFn, n: int = 3) -> list[dict]:
    """Predict and explain ``n`` new synthetic patients (of another seed, written as records to
    ``out/new_patients.jsonl``) through the model bundle ``model``."""
    import json

    from medfuse.serving import PatientRecord, Predictor
    from medfuse.serving.raw_records import records_from_raw

    progress("use the model", 0.0, f"predict {n} new patients")
    synthetic(out / "new_raw", cfg.synth.format, 20, cfg.synth.seed + 1000, 1.0)
    rows = records_from_raw(out / "new_raw", cfg.synth.format, limit=n, meds=cfg.prepare.meds)
    (out / "new_patients.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    cache = cfg.notes.cache_dir or None if cfg.notes.cache else False
    results = Predictor.load(model, cache_dir=cache).predict([PatientRecord.model_validate(r) for r in rows],
                                                             explain=True)
    progress("use the model", 1.0)
    return results
