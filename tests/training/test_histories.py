"""The one trainer reproduces the training histories the three separate loops wrote before it (issue 23).

``histories_baseline.json`` was written by the code before the trainer was shared (commit fa285f7) with
``MEDFUSE_RECORD_HISTORIES=tests/training/histories_baseline.json pytest tests/training/test_histories.py``:
MLTM pre-training, LoRA fine-tuning (tiny BERT) and fusion training, each with the default configuration
shortened to a few epochs, on a small synthetic cohort of the MIMIC-III layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tiny_config import write_tiny_bert

BASELINE = Path(__file__).with_name("histories_baseline.json")
DROP = {"seconds", "summary"}
WORDS = """patient with congestive heart failure and shortness of breath edema legs elevated bnp reduced ejection
fraction fever productive cough infiltrate chest x-ray consistent pneumonia acute kidney injury creatinine low urine
output history hypertension diabetes mellitus hyperlipidemia medications admission furosemide lisinopril metoprolol
aspirin abnormal labs hemoglobin high chief complaint pain radiating to the left arm present illness year old woman
admitted dyspnea past medical chronic obstructive pulmonary disease atrial fibrillation"""  # wall-clock figures differ from run to run


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in DROP}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@pytest.fixture()
def fixed_bert(tmp_path):
    return write_tiny_bert(tmp_path / "bert", WORDS.split())


def histories(tmp: Path, tiny_bert: Path) -> dict:
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.labs import pretrain
    from medfuse.notes.embeddings import embed_cohort
    from medfuse.notes.finetune import finetune_notes

    generate(tmp / "raw", "mimic3", 240, seed=0)
    cfg = load_config(overrides={"labs": {"epochs": 3}, "train": {"epochs": 3},
                                 "notes": {"model": str(tiny_bert), "cache": False, "epochs": 2,
                                           "cpu_autocast": "off"}})
    prepare_cohort(tmp / "raw", tmp / "cohort", cfg.prepare)
    pretrain(tmp / "cohort", tmp / "labs", cfg.labs)
    finetune_notes(tmp / "cohort", tmp / "finetune", cfg.notes)
    embed_cohort(tmp / "cohort", tmp / "notes", cfg.notes)
    from medfuse.runs.stages import train_run

    run_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"labs_run": str(tmp / "labs"), "notes_run": str(tmp / "notes")})})
    train_run(tmp / "cohort", tmp / "run", run_cfg)
    return _clean({
        "mltm": json.loads((tmp / "labs" / "history.json").read_text()),
        "lora": json.loads((tmp / "finetune" / "finetune_config.json").read_text())["history"],
        "fusion": json.loads((tmp / "run" / "history.json").read_text()),
    })


def _close(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert np.isclose(a, b, rtol=1e-4, atol=1e-6), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a} vs {b}"


def test_training_histories_equal_the_separate_loops(tmp_path, fixed_bert):
    got = histories(tmp_path, fixed_bert)
    record = os.environ.get("MEDFUSE_RECORD_HISTORIES")
    if record:
        Path(record).write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip(f"recorded {record}")
    _close(got, json.loads(BASELINE.read_text()))
