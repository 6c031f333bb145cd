"""Fixtures for the note tests: a small cohort folder (the tiny models are in tests/conftest.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LABELS = ["heart_failure", "pneumonia", "kidney"]

def _write(table: dict, path) -> None:
    pq.write_table(pa.table(table), path)


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory):
    """60 admissions (40 train, 10 val, 10 test); ``heart_failure`` and ``pneumonia`` follow the words of the
    note, ``kidney`` is random. Rows 0-2 have no note (rows 0 and 1 have lab text), row 2 has neither."""
    path = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    n = 60
    hadm = np.arange(100, 100 + n, dtype=np.int64)
    subject = np.arange(1, n + 1, dtype=np.int64)
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10)
    y = np.zeros((n, len(LABELS)), dtype=np.int8)
    y[:, 0] = np.arange(n) % 2
    y[:, 1] = np.arange(n) % 3 == 0
    y[:, 2] = rng.random(n) < 0.3
    _write({"subject_id": subject, "hadm_id": hadm, "admittime": pa.array([None] * n, pa.timestamp("s")),
            "dischtime": pa.array([None] * n, pa.timestamp("s")), "age": np.full(n, 60.0),
            "sex": ["F"] * n, "has_labs": np.ones(n, bool), "has_notes": np.arange(n) >= 3},
           path / "admissions.parquet")
    _write({"hadm_id": hadm, **{name: y[:, j] for j, name in enumerate(LABELS)}}, path / "labels.parquet")
    _write({"subject_id": subject, "hadm_id": hadm, "split": split}, path / "splits.parquet")
    rows = np.arange(3, n)
    cc, hpi, pmh, meds = [], [], [], []
    for i in rows:
        if y[i, 0]:
            cc.append("shortness of breath and leg edema")
            hpi.append("congestive heart failure exacerbation with elevated bnp and reduced ejection fraction")
        else:
            cc.append("chest pain")
            hpi.append("chest pain radiating to the left arm, troponin negative")
        if y[i, 1]:
            hpi[-1] += "; fever, productive cough and infiltrate consistent with pneumonia"
        pmh.append("hypertension, diabetes mellitus" if i % 3 else None)
        meds.append("furosemide, lisinopril" if i % 4 == 0 else None)
    _write({"hadm_id": hadm[rows], "chief_complaint": cc, "present_illness": hpi, "past_history": pmh,
            "admission_medications": meds, "n_notes": np.ones(len(rows), np.int64)}, path / "notes.parquet")
    lab_rows = [0, 1] + [i for i in range(3, n) if i % 2 == 1]
    _write({"hadm_id": hadm[lab_rows], "text": [f"Abnormal labs: Creatinine {1.5 + i / 10:.1f} mg/dL (high)."
                                                for i in lab_rows],
            "n_abnormal": np.ones(len(lab_rows), np.int64)}, path / "lab_text.parquet")
    manifest = {"schema_version": 1, "source": "test", "labels": LABELS,
                "split_sizes": {s: int((split == s).sum()) for s in ("train", "val", "test")}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path
