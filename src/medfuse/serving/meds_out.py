"""``medfuse predict --format meds``: predictions as MEDS-Evaluation prediction files, one per label.

A MEDS dataset's admissions are predicted through the bundle (their records come from
:class:`~medfuse.serving.raw_records.RawRecords`) and each label gets ``OUT/<label>.parquet`` with the columns
MEDS-Evaluation reads (:data:`PREDICTION_SCHEMA`): the subject, the prediction time, the truth where the
admission's diagnoses give it, the decision at the bundle's frozen threshold and the probability. The
folder is built beside ``OUT`` and renamed into place when complete. docs/meds.md ("Predictions in MEDS").
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfuse.serving.raw_records import RecordChunk

PREDICTION_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),
    ("prediction_time", pa.timestamp("us")),
    ("boolean_value", pa.bool_()),
    ("predicted_boolean_value", pa.bool_()),
    ("predicted_boolean_probability", pa.float64()),
])
"""The MEDS-Evaluation prediction schema for binary tasks: ``subject_id``, ``prediction_time`` (the label
keys of ``meds.LabelSchema``), ``boolean_value`` (the truth; null here where it is unknown) and the
model's ``predicted_boolean_value`` and ``predicted_boolean_probability``."""
ERRORS_FILE = "errors.jsonl"


def is_meds_dataset(path: Path) -> bool:
    """A folder laid out as a MEDS dataset (``data/``), not a prepared cohort (``manifest.json``)."""
    return path.is_dir() and (path / "data").is_dir() and not (path / "manifest.json").exists()


def prediction_time(admittime: dt.datetime, dischtime: dt.datetime, window_hours: float) -> dt.datetime:
    """The end of the model's prediction window: the discharge for a model of the whole stay
    (``window_hours`` 0), else ``window_hours`` after admission or the discharge if that is earlier. The
    model reads no lab charted later (its admission-time note sections come from the discharge summary)."""
    if not window_hours:
        return dischtime
    return min(dischtime, admittime + dt.timedelta(hours=float(window_hours)))


class MedsPredictions:
    """``OUT/<label>.parquet`` for each label, written chunk by chunk into a temporary sibling folder."""

    def __init__(self, out: Path, labels: list[str], window_hours: float):
        if out.exists() and (not out.is_dir() or any(
                p.name != ERRORS_FILE and (p.suffix != ".parquet" or p.stem not in labels) for p in out.iterdir())):
            raise ValueError(f"{out}: exists and is not a folder of MEDS predictions; choose a new --out folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.labels, self.window_hours = out, labels, window_hours
        self.work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        self.errors_tmp, self.errors_path = self.work / ERRORS_FILE, out / ERRORS_FILE
        self.writers = {n: pq.ParquetWriter(self.work / f"{n}.parquet", PREDICTION_SCHEMA) for n in labels}

    def write(self, results: list[dict], truth: np.ndarray | None, chunk: RecordChunk) -> None:
        """One chunk: ``results`` (in ``chunk``'s order, the records that could be predicted) and their truth."""
        at = {r["id"]: i for i, r in enumerate(chunk.records)}
        rows = [at[r["id"]] for r in results]
        keys = {"subject_id": pa.array([chunk.subject_ids[i] for i in rows], pa.int64()),
                "prediction_time": pa.array([prediction_time(chunk.admittimes[i], chunk.dischtimes[i],
                                                             self.window_hours) for i in rows], pa.timestamp("us"))}
        for j, name in enumerate(self.labels):
            known = truth[:, j] if truth is not None else np.full(len(results), np.nan)
            self.writers[name].write_table(pa.table({
                **keys,
                "boolean_value": pa.array(known == 1, pa.bool_(), mask=np.isnan(known)),
                "predicted_boolean_value": pa.array([r["decisions"][name] for r in results], pa.bool_()),
                "predicted_boolean_probability": pa.array([r["probabilities"][name] for r in results], pa.float64()),
            }, schema=PREDICTION_SCHEMA))

    def commit(self, with_errors: bool) -> None:
        """Close the files and put the folder in place (``errors.jsonl`` only ``with_errors``)."""
        for w in self.writers.values():
            w.close()
        if not with_errors:
            self.errors_tmp.unlink(missing_ok=True)
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.work, self.out)

    def abort(self) -> None:
        for w in self.writers.values():
            w.close()
        shutil.rmtree(self.work, ignore_errors=True)
