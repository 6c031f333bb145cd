"""The synthetic hospital that the source adapters are compared on (test_meds.py, test_adapters.py)."""

from __future__ import annotations

import pytest

from medfuse.config import load_config
from medfuse.data.prepare import prepare_cohort
from medfuse.data.synth import generate
from medfuse.data.synth.meds import generate_meds


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """The synthetic hospital (300 admissions, seed 0) as MIMIC-IV CSVs (``mimic4/``) and as MEDS (``meds/``),
    with their cohorts (``csv_cohort/``, ``meds_cohort/``): ``(root, MEDS summary, csv manifest, meds manifest)``."""
    root = tmp_path_factory.mktemp("meds")
    generate(root / "mimic4", "mimic4", 300, seed=0)
    summary = generate_meds(root / "meds", 300, seed=0)
    csv = prepare_cohort(root / "mimic4", root / "csv_cohort",
                         load_config(overrides={"prepare": {"source": "mimic4"}}).prepare)
    med = prepare_cohort(root / "meds", root / "meds_cohort", load_config(overrides={  # medfuse's stratified split
        "prepare": {"source": "meds", "meds": {"use_subject_splits": False}}}).prepare)
    return root, summary, csv, med
