"""Read access to a prepared cohort folder (the output of ``medfuse prepare``).

The layout is documented in docs/data.md. Every table is keyed by ``hadm_id`` and the rows of
``admissions``, ``labs``, ``labels`` and ``splits`` are in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("train", "val", "test")
READ_BUFFER_BYTES = 8 * 2**20  # Parquet pages are read through a buffer this big, not a whole column chunk at once
LAB_AGGREGATES = ("last", "mean", "min", "max")


class Cohort:
    """A prepared cohort: Parquet tables plus ``manifest.json`` (or the same tables held in memory)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tables: dict[str, pa.Table] | None = None
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.path}: not a medfuse cohort (no manifest.json)")
        self.manifest = json.loads(manifest.read_text())

    @classmethod
    def from_tables(cls, tables: dict[str, pa.Table], manifest: dict, name: str = "<memory>") -> Cohort:
        """A cohort whose tables are in memory: what prediction builds for new patients, read by the same code."""
        cohort = cls.__new__(cls)
        cohort.path, cohort._tables, cohort.manifest = Path(name), dict(tables), manifest
        return cohort

    def has_table(self, name: str) -> bool:
        return name in self._tables if self._tables is not None else (self.path / f"{name}.parquet").is_file()

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """One of the cohort's Parquet tables by name (``admissions``, ``labs``, ...)."""
        if self._tables is not None:
            t = self._tables[name]
            return t.select(columns) if columns is not None else t
        return pq.read_table(self.path / f"{name}.parquet", columns=columns)

    def pieces(self, name: str, columns: list[str], rows: int) -> Iterator[pa.Table]:
        """One of the tables ``rows`` rows at a time, in row order (the last piece shorter), read from disk
        piece by piece: memory bounded by the piece, not the table."""
        if self._tables is not None:
            t = self._tables[name].select(columns)
            yield from (t.slice(start, rows) for start in range(0, t.num_rows, rows))
            return
        yield from parquet_pieces(self.path / f"{name}.parquet", columns, rows)

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["labels"])

    @cached_property
    def lab_tests(self) -> pa.Table:
        """Selected lab tests in column order with their train-split normalisation statistics."""
        return self.table("lab_tests")

    @property
    def lab_keys(self) -> list[str]:
        return self.lab_tests.column("key").to_pylist()

    @cached_property
    def hadm_ids(self) -> np.ndarray:
        return self.table("admissions").column("hadm_id").to_numpy()

    @cached_property
    def split(self) -> np.ndarray:
        """The split name of every admission, in cohort row order."""
        return np.asarray(self.table("splits").column("split").to_pylist())

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row indices of one split (all rows when ``split`` is None)."""
        if split is None:
            return np.arange(len(self.hadm_ids))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.split == split)

    def labels(self, split: str | None = None) -> np.ndarray:
        """Multi-hot labels ``[N, n_labels]`` as float32."""
        t = self.table("labels")
        y = np.stack([t.column(n).to_numpy() for n in self.label_names], axis=1).astype(np.float32)
        return y[self.rows(split)]

    def lab_values(self, split: str | None = None, aggregate: str = "last", normalized: bool = True) -> np.ndarray:
        """Lab values ``[N, T]`` (float32, NaN where the test was not measured in the admission).

        ``normalized`` applies the train-split robust scaling stored in ``lab_tests``:
        ``clip((x - median) / scale, -clip, clip)``.
        """
        if aggregate not in LAB_AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {LAB_AGGREGATES}")
        cols = [f"{k}__{aggregate}" for k in self.lab_keys]
        t = self.table("labs", columns=cols)
        x = np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in cols], axis=1).astype(np.float64)
        x = x[self.rows(split)]
        if normalized:
            x = self.normalize(x)
        return x.astype(np.float32)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Original units -> robust z-scores, clipped (NaN stays NaN)."""
        s = self.lab_tests
        median, scale = s.column("median").to_numpy(), s.column("scale").to_numpy()
        clip = float(self.manifest["lab_normalization"]["clip"])
        return np.clip((x - median) / scale, -clip, clip)

    def denormalize(self, z: np.ndarray) -> np.ndarray:
        """Robust z-scores -> original units."""
        s = self.lab_tests
        return z * s.column("scale").to_numpy() + s.column("median").to_numpy()


def parquet_pieces(path: str | Path, columns: list[str], rows: int) -> Iterator[pa.Table]:
    """A Parquet file's ``columns``, ``rows`` rows at a time in row order (the last piece shorter, none for an
    empty file); pages are decoded as they are needed, so memory is bounded by the piece."""
    file = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in file.iter_batches(batch_size=rows, columns=columns):
        pending.append(batch)
        have += batch.num_rows
        while have >= rows:  # row-group ends cut batches short: re-cut them to exactly ``rows``
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(pending)
