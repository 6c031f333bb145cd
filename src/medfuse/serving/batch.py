"""``medfuse predict``: stream records from JSON Lines, Parquet, a prepared cohort or a MEDS dataset through a bundle.

Records are read and predicted in chunks (``batch_size``), and each chunk's rows are appended to the
output Parquet file (or, with ``--format meds``, to one MEDS prediction file per label), so memory does
not grow with the input. A record that cannot be read at all (invalid JSON, a field of the wrong type, a
MEDS admission without its times) goes to ``errors.jsonl`` with its line (or row) number, or a MEDS
admission's hadm_id, and the reason; it never stops the batch. Outputs are written under temporary names
and renamed when done.
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
        if truth is not None:  # NaN (a MEDS admission without diagnoses): unknown
            unknown = np.isnan(truth[:, j]) if truth.dtype.kind == "f" else None
            cols[f"{name}__true"] = pa.array(np.nan_to_num(truth[:, j]).astype(np.int8), mask=unknown)
    cols["model_version"] = pa.array([r["model_version"] for r in results], pa.string())
    cols["warnings"] = pa.array([r["warnings"] for r in results], pa.list_(pa.string()))
    if explain:
        cols["explanations"] = pa.array([json.dumps(r.get("explanations", {})) for r in results], pa.string())
    return pa.table(cols)


OUTPUT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}  # the files predict writes


class _FileOutput:
    """One file of results, Parquet or CSV by its suffix (``errors.jsonl`` beside it), written under temporary
    names. In CSV a record's warnings are one ``"; "``-joined text and explanations JSON text."""

    def __init__(self, out: Path, labels: list[str], explain: bool):
        self.kind = OUTPUT_SUFFIXES.get(out.suffix.lower())
        if self.kind is None:
            raise ValueError(f"{out}: cannot write {out.suffix or 'a file without a suffix'}; name the output "
                             ".parquet or .csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.labels, self.explain, self.writer = out, labels, explain, None
        self.tmp = out.with_name(f".{out.name}.tmp")
        self.errors_path = out.parent / ERRORS_FILE
        self.errors_tmp = self.errors_path.with_name(f".{ERRORS_FILE}.tmp")

    def _table(self, results: list[dict], truth: np.ndarray | None) -> pa.Table:
        table = _result_table(results, self.labels, truth, self.explain)
        if self.kind == "csv":
            at = table.schema.get_field_index("warnings")
            joined = pa.array(["; ".join(w) for w in table.column(at).to_pylist()], pa.string())
            table = table.set_column(at, "warnings", joined)
        return table

    def _open(self, schema: pa.Schema) -> None:
        import pyarrow.csv as pacsv

        self.writer = (pq.ParquetWriter(self.tmp, schema, compression="zstd") if self.kind == "parquet"
                       else pacsv.CSVWriter(str(self.tmp), schema))

    def write(self, results: list[dict], truth: np.ndarray | None, _chunk) -> None:
        table = self._table(results, truth)
        if self.writer is None:
            self._open(table.schema)
        self.writer.write_table(table)

    def commit(self, with_errors: bool) -> None:
        if self.writer is None:  # nothing readable: an empty file with the full schema (the header in CSV)
            self._open(self._table([], None).schema)
        self.writer.close()
        self.writer = None
        os.replace(self.tmp, self.out)
        if with_errors:
            os.replace(self.errors_tmp, self.errors_path)
        else:  # no stale errors of an earlier run beside this output
            self.errors_tmp.unlink(missing_ok=True)
            self.errors_path.unlink(missing_ok=True)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for tmp in (self.tmp, self.errors_tmp):
            tmp.unlink(missing_ok=True)


def predict_file(predictor, source: str | Path, out: str | Path, explain: bool = False, batch_size: int = 256,
                 split: str | None = None, progress: ProgressFn | None = None, format: str = "parquet",
                 meds=None) -> BatchSummary:
    """Predict every record of ``source`` into ``out``.

    ``source``: ``.jsonl``, ``.parquet``, a cohort folder or a MEDS dataset (read with ``meds``, a
    :class:`~medfuse.config.MedsConfig`; default ``[prepare.meds]``). ``format``: ``parquet`` (``out`` is one
    ``.parquet`` or ``.csv`` file, ``errors.jsonl`` beside it) or ``meds`` (``out`` is a folder of MEDS-Evaluation prediction files, one
    per label, and its ``errors.jsonl``; MEDS input only, :mod:`medfuse.serving.meds_out`). ``predictor`` is a
    loaded :class:`~medfuse.serving.predict.Predictor`. ``split`` picks one split of a cohort folder. Known
    labels (a cohort's, or those a MEDS admission's diagnoses give) are written as ``<label>__true``.
    """
    from medfuse.serving.meds_out import MedsPredictions, is_meds_dataset

    source, out = Path(source), Path(out)
    progress = progress or no_progress
    if not source.exists():
        raise FileNotFoundError(f"{source}: input not found")
    if format not in ("parquet", "meds"):
        raise ValueError(f"unknown output format {format!r}; expected parquet or meds")
    if format == "meds":
        if not is_meds_dataset(source):
            raise ValueError(f"{source}: --format meds needs a MEDS dataset as input (the prediction files key each "
                             "admission by its subject_id and time)")
        if explain:
            raise ValueError("--explain needs the Parquet output: MEDS prediction files have no column for explanations")
        sink = MedsPredictions(out, predictor.label_names, predictor.vocab.window_hours)
    else:
        sink = _FileOutput(out, predictor.label_names, explain)
    summary = BatchSummary(positives=dict.fromkeys(predictor.label_names, 0))
    t0 = time.perf_counter()
    try:
        with sink.errors_tmp.open("w") as errors:
            for results, truth, chunk in _predicted_chunks(predictor, source, explain, batch_size, split, progress,
                                                           errors, summary, meds):
                sink.write(results, truth, chunk)
                summary.predicted += len(results)
                summary.with_warnings += sum(bool(r["warnings"]) for r in results)
                for name in predictor.label_names:
                    summary.positives[name] += sum(r["decisions"][name] for r in results)
                _return_freed_memory()
        sink.commit(bool(summary.errors))
    except BaseException:
        sink.abort()
        raise
    summary.errors_file = str(sink.errors_path) if summary.errors else None
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.output = str(out)
    progress("predict", 1.0, f"{summary.predicted:,} predicted, {summary.errors:,} errors")
    return summary


def _predicted_chunks(predictor, source: Path, explain: bool, batch_size: int, split: str | None,
                      progress: ProgressFn, errors, summary: BatchSummary, meds=None):
    """``(results, truth or None, the MEDS record chunk or None)`` per chunk of readable records; unreadable
    ones are written to ``errors``."""
    from medfuse.serving.meds_out import is_meds_dataset

    if is_meds_dataset(source):
        yield from _meds_chunks(predictor, source, explain, batch_size, progress, errors, summary, meds)
        return
    if source.is_dir():
        from medfuse.data.cohort import Cohort
        from medfuse.serving.features import cohort_chunks

        total = max(len(Cohort(source).rows(split)), 1)
        for cohort, truth in cohort_chunks(source, predictor.vocab, batch_size, split):
            summary.read += len(cohort.hadm_ids)
            yield predictor.predict_cohort(cohort, explain=explain), truth, None
            progress("predict", summary.read / total, f"{summary.read:,} admissions")
        return
    suffix = "".join(source.suffixes[-1:]).lower()
    if suffix == ".jsonl" or source.name.endswith(".jsonl.gz"):
        rows = _read_jsonl(source, progress)
    elif suffix == ".parquet":
        rows = _read_parquet(source, progress)
    else:
        raise ValueError(f"{source}: unknown input type; expected .jsonl, .parquet, a cohort folder or a MEDS dataset")
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
            yield _predict_isolating(predictor, good, explain, errors, summary), None, None


def _meds_chunks(predictor, source: Path, explain: bool, batch_size: int, progress: ProgressFn, errors,
                 summary: BatchSummary, meds=None):
    """A MEDS dataset's admissions as records (:class:`~medfuse.serving.raw_records.RawRecords`, the relations of
    ``prepare --source meds``), with the labels their diagnoses give by the bundle's definitions."""
    from medfuse.data.diseases import Disease
    from medfuse.serving.raw_records import RawRecords

    definitions = predictor.bundle.get("label_definitions", {})
    diseases = [Disease(n, d.get("title", n), tuple(d.get("icd9", ())), tuple(d.get("icd10", ())))
                for n, d in ((n, definitions.get(n, {})) for n in predictor.label_names)]
    if not all(d.icd9 or d.icd10 for d in diseases):
        diseases = None  # a label without a definition: no truth at all
    with RawRecords(source, "meds", hours_before_admission=predictor.vocab.hours_before_admission, meds=meds,
                    diseases=diseases) as raw:
        total = max(len(raw) + len(raw.skipped), 1)
        for hadm_id, reason in raw.skipped:
            summary.read += 1
            summary.errors += 1
            errors.write(json.dumps({"hadm_id": hadm_id, "error": f"admission not usable: {reason}"}) + "\n")
        for chunk in raw.chunks(batch_size):
            summary.read += len(chunk.records)
            good = []
            for row in chunk.records:
                try:
                    good.append((row["id"], PatientRecord.model_validate(row)))
                except ValidationError as e:
                    summary.errors += 1
                    errors.write(json.dumps({"hadm_id": row["id"], "error": _validation_reason(e)}) + "\n")
            if good:
                results = _predict_isolating(predictor, good, explain, errors, summary, key="hadm_id")
                truth = None
                if chunk.truth is not None:
                    at = {r["id"]: i for i, r in enumerate(chunk.records)}
                    truth = chunk.truth[[at[r["id"]] for r in results]]
                yield results, truth, chunk
            progress("predict", summary.read / total, f"{summary.read:,} admissions")


def _predict_isolating(predictor, numbered: list, explain: bool, errors, summary: BatchSummary,
                       key: str = "line") -> list[dict]:
    """Predict a chunk; should it fail, predict its records one by one so that only the bad ones are lost
    (each reported in ``errors`` under ``key``: its line, or a MEDS admission's hadm_id)."""
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
            errors.write(json.dumps({key: number, "error": f"cannot be predicted ({type(e).__name__})"}) + "\n")
    return results
