"""Synthetic hospital written in the raw file layouts of MIMIC-III and MIMIC-IV (``medfuse synth``).

A seeded generative model: patients with one or more admissions, ten target diseases with comorbidity
(chronic ones persist across admissions), ICD-coded diagnoses among unrelated codes, lab panels with
disease effects and real-world quirks, and discharge summaries whose allowed sections carry noisy,
partial evidence while the discharge sections state the answer. docs/synthetic.md documents the model.

Everything streams: the population is drawn up front (:mod:`.population`, a few MB), lab rows
(:mod:`.labevents`) and notes (:mod:`.notes`) per chunk of patients with vectorised numpy, formatted to
CSV with pyarrow compute kernels and gzip-compressed on a background thread (:mod:`.csv_gz`). The layouts
(:mod:`.mimic3`, :mod:`.mimic4`) name the files and columns; :mod:`.meds` writes the mimic4 hospital as
MEDS. Output bytes depend only on ``(fmt, admissions, seed, note_fraction)``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from medfuse.data.synth.conditions import DISEASES
from medfuse.data.synth.labevents import write_labevents
from medfuse.data.synth.mimic3 import Mimic3
from medfuse.data.synth.mimic4 import Mimic4
from medfuse.data.synth.notes import write_notes
from medfuse.data.synth.population import Format, draw_cohort
from medfuse.progress import ProgressFn, no_progress

__all__ = ["DISEASES", "generate"]


def generate(
    out_dir: Path,
    fmt: Format,
    admissions: int,
    seed: int = 0,
    note_fraction: float = 0.95,
    progress: ProgressFn | None = None,
) -> dict:
    """Write a synthetic hospital of ``admissions`` admissions in the raw ``fmt`` layout under ``out_dir``.

    mimic3: PATIENTS, ADMISSIONS, DIAGNOSES_ICD, D_ICD_DIAGNOSES, D_LABITEMS, LABEVENTS, NOTEEVENTS
    (``.csv.gz``); mimic4: ``hosp/`` patients, admissions, diagnoses_icd, d_icd_diagnoses, d_labitems,
    labevents and ``note/discharge``. ``note_fraction`` is the share of admissions with a discharge summary.
    ``progress(stage, fraction)`` is called as work completes. Returns counts, the coded prevalence of
    each disease and the elapsed seconds.
    """
    if fmt not in ("mimic3", "mimic4"):
        raise ValueError(f"format must be 'mimic3' or 'mimic4', not {fmt!r}")
    if admissions < 1:
        raise ValueError("admissions must be at least 1")
    if not 0.0 <= note_fraction <= 1.0:
        raise ValueError("note_fraction must be between 0 and 1")
    started = time.perf_counter()
    report = progress or no_progress
    out_dir = Path(out_dir)

    report("cohort", 0.0)
    cohort = draw_cohort(np.random.default_rng([seed, 0]), admissions, fmt, note_fraction)
    report("cohort", 0.5)
    layout = (Mimic3 if fmt == "mimic3" else Mimic4)(cohort, seed)
    for name in layout.files.values():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
    n_diagnoses, coded = layout.write_tables(out_dir, np.random.default_rng([seed, 1]))
    report("cohort", 1.0)
    lab_rows = write_labevents(layout, out_dir / layout.files["labevents"], report)
    notes = write_notes(layout, out_dir / layout.files["notes"], report)
    return {
        "format": fmt,
        "seed": seed,
        "admissions": admissions,
        "patients": len(cohort.subject_id),
        "lab_rows": lab_rows,
        "notes": notes,
        "diagnoses": n_diagnoses,
        "prevalence": {
            name: round(float(p), 4) for name, p in zip(DISEASES, coded.mean(axis=0), strict=True)
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
