"""``medfuse predict``: stream records from JSON Lines, Parquet or a prepared cohort through a bundle.

Records are read and predicted in chunks (``batch_size``), and each chunk's rows are appended to the
output Parquet file, so memory does not grow with the input. A record that cannot be read at all
(invalid JSON, a field of the wrong type) goes to ``errors.jsonl`` with its line (or row) number and
the reason; it never stops the batch. Outputs are written under temporary names and renamed when done.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from medfuse.progress import ProgressFn, no_progress
from medfuse.serving.records import PatientRecord

ERRORS_FILE = "errors.jsonl"


@dataclass
class BatchSummary:
    """What a batch prediction did: counts, where it wrote, how fast."""

    read: int = 0
    predicted: int = 0
    errors: int = 0
    with_warnings: int = 0
    positives: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = ""
    errors_file: str | None = None

    @property
    def per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds else 0.0


def _return_freed_memory() -> None:
    """Give the heap pages freed by a chunk back to the system (glibc), so a long run's RSS stays flat."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def _validation_reason(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _read_jsonl(path: Path, progress: ProgressFn) -> Iterator[tuple[int, PatientRecord | None, str | None]]:
    size = max(path.stat().st_size, 1)
    with path.open("rb") as raw, (gzip.open(raw) if path.name.endswith(".gz") else raw) as f:
        for number, line in enumerate(f, start=1):
            if number % 200 == 0:
                progress("predict", raw.tell() / size)
            if not line.strip():
                continue
            try:
                yield number, PatientRecord.model_validate_json(line), None
            except ValidationError as e:
                reason = _validation_reason(e)
                if e.errors()[0]["type"] == "json_invalid":
                    reason = f"not valid JSON: {e.errors()[0]['msg']}"
                yield number, None, reason


def _read_parquet(path: Path, progress: ProgressFn) -> Iterator[tuple[int, PatientRecord | None, str | None]]:
    f = pq.ParquetFile(path)
    total, number = max(f.metadata.num_rows, 1), 0
    for batch in f.iter_batches(batch_size=512):
        for row in batch.to_pylist():
            number += 1
            try:
                yield number, PatientRecord.model_validate({k: v for k, v in row.items() if v is not None}), None
            except ValidationError as e:
                yield number, None, _validation_reason(e)
        progress("predict", number / total)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _result_table(results: list[dict], labels: list[str], truth: np.ndarray | None, explain: bool) -> pa.Table:
    cols: dict[str, pa.Array] = {
        "id": pa.array([str(r["id"]) for r in results], pa.string()),
        "admittime": pa.array([r["admittime"] for r in results], pa.string()),
    }
    for j, name in enumerate(labels):
        cols[f"{name}__prob"] = pa.array([r["probabilities"][name] for r in results], pa.float32())
        cols[f"{name}__pred"] = pa.array([r["decisions"][name] for r in results], pa.bool_())
        if truth is not None:
            cols[f"{name}__true"] = pa.array(truth[:, j].astype(np.int8))
    cols["model_version"] = pa.array([r["model_version"] for r in results], pa.string())
    cols["warnings"] = pa.array([r["warnings"] for r in results], pa.list_(pa.string()))
    if explain:
        cols["explanations"] = pa.array([json.dumps(r.get("explanations", {})) for r in results], pa.string())
    return pa.table(cols)


def predict_file(predictor, source: str | Path, out: str | Path, explain: bool = False, batch_size: int = 256,
                 split: str | None = None, progress: ProgressFn | None = None) -> BatchSummary:
    """Predict every record of ``source`` (``.jsonl``, ``.parquet`` or a cohort folder) into ``out`` (Parquet).

    ``predictor`` is a loaded :class:`~medfuse.serving.predict.Predictor`. ``split`` picks one split of a
    cohort folder (whose known labels are written as ``<label>__true``).
    """
    source, out = Path(source), Path(out)
    progress = progress or no_progress
    if not source.exists():
        raise FileNotFoundError(f"{source}: input not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    errors_path = out.parent / ERRORS_FILE
    tmp_out, tmp_errors = out.with_name(f".{out.name}.tmp"), errors_path.with_name(f".{ERRORS_FILE}.tmp")
    summary = BatchSummary(positives=dict.fromkeys(predictor.label_names, 0))
    t0 = time.perf_counter()
    writer = None
    try:
        with tmp_errors.open("w") as errors:
            for results, truth in _predicted_chunks(predictor, source, explain, batch_size, split, progress, errors,
                                                    summary):
                table = _result_table(results, predictor.label_names, truth, explain)
                if writer is None:
                    writer = pq.ParquetWriter(tmp_out, table.schema, compression="zstd")
                writer.write_table(table)
                summary.predicted += len(results)
                summary.with_warnings += sum(bool(r["warnings"]) for r in results)
                for name in predictor.label_names:
                    summary.positives[name] += sum(r["decisions"][name] for r in results)
                _return_freed_memory()
        if writer is None:  # nothing readable: an empty file with the full schema
            writer = pq.ParquetWriter(tmp_out, _result_table([], predictor.label_names, None, explain).schema)
        writer.close()
        writer = None
        os.replace(tmp_out, out)
        if summary.errors:
            os.replace(tmp_errors, errors_path)
            summary.errors_file = str(errors_path)
        else:  # no stale errors of an earlier run beside this output
            tmp_errors.unlink()
            errors_path.unlink(missing_ok=True)
    finally:
        if writer is not None:
            writer.close()
        for tmp in (tmp_out, tmp_errors):
            tmp.unlink(missing_ok=True)
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.output = str(out)
    progress("predict", 1.0, f"{summary.predicted:,} predicted, {summary.errors:,} errors")
    return summary


def _predicted_chunks(predictor, source: Path, explain: bool, batch_size: int, split: str | None,
                      progress: ProgressFn, errors, summary: BatchSummary):
    """``(results, truth or None)`` per chunk of readable records; unreadable ones are written to ``errors``."""
    if source.is_dir():
        from medfuse.data.cohort import Cohort
        from medfuse.serving.features import cohort_chunks

        total = max(len(Cohort(source).rows(split)), 1)
        for cohort, truth in cohort_chunks(source, predictor.vocab, batch_size, split):
            summary.read += len(cohort.hadm_ids)
            yield predictor.predict_cohort(cohort, explain=explain), truth
            progress("predict", summary.read / total, f"{summary.read:,} admissions")
        return
    suffix = "".join(source.suffixes[-1:]).lower()
    if suffix == ".jsonl" or source.name.endswith(".jsonl.gz"):
        rows = _read_jsonl(source, progress)
    elif suffix == ".parquet":
        rows = _read_parquet(source, progress)
    else:
        raise ValueError(f"{source}: unknown input type; expected .jsonl, .parquet or a cohort folder")
    for chunk in _chunks(rows, batch_size):
        summary.read += len(chunk)
        good = []
        for number, record, reason in chunk:
            if record is None:
                summary.errors += 1
                errors.write(json.dumps({"line": number, "error": reason}) + "\n")
            else:
                good.append((number, record))
        if good:
            yield _predict_isolating(predictor, good, explain, errors, summary), None


def _predict_isolating(predictor, numbered: list, explain: bool, errors, summary: BatchSummary) -> list[dict]:
    """Predict a chunk; should it fail, predict its records one by one so that only the bad ones are lost."""
    if len(numbered) > 1:
        try:
            return predictor.predict([r for _, r in numbered], explain=explain)
        except Exception:  # noqa: BLE001 - isolated to its record below
            logging.getLogger(__name__).info("a chunk failed; predicting its records one by one")
    results = []
    for number, record in numbered:
        try:
            results.extend(predictor.predict([record], explain=explain))
        except Exception as e:  # noqa: BLE001 - reported in errors.jsonl, the batch goes on
            summary.errors += 1
            # the exception's type only: its message may quote the record's values
            errors.write(json.dumps({"line": number, "error": f"cannot be predicted ({type(e).__name__})"}) + "\n")
    return results
