"""Gzip-compressed CSV tables, formatted with pyarrow compute kernels, and the column builders they take."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_GZIP_LEVEL = 1


def _quoted(text: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")


def _csv_field(values: pa.Array, quote_all: bool) -> pa.Array:
    """One column as CSV text: numbers and times bare, strings quoted (all, or only where needed), nulls empty."""
    if pa.types.is_string(values.type):
        if quote_all:
            values = _quoted(values)
        else:
            values = pc.if_else(pc.match_substring_regex(values, '[",\r\n]'), _quoted(values), values)
    else:
        values = pc.cast(values, pa.string())
    return pc.fill_null(values, "")


def _csv_lines(columns: Sequence[pa.Array], quote_all: bool) -> pa.Buffer:
    """CSV text of equally long columns, one line per row, as one buffer."""
    if not len(columns[0]):
        return pa.py_buffer(b"")
    lines = pc.binary_join_element_wise(*[_csv_field(c, quote_all) for c in columns], ",")
    lines = pc.binary_join_element_wise(lines, "", "\n")
    offsets = np.frombuffer(lines.buffers()[1], np.int32)
    return lines.buffers()[2][offsets[lines.offset] : offsets[lines.offset + len(lines)]]


class GzipCsv:
    """A CSV file written in chunks: a header line, then rows; a deterministic gzip stream (no name,
    mtime 0) compressed on a background thread, in write order. MIMIC-III quotes every string
    (``quote_all``), MIMIC-IV only where needed."""

    def __init__(self, path: Path, quote_all: bool):
        self.rows = 0
        self._quote_all = quote_all
        self._header = True
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._zip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, columns: dict[str, pa.Array]) -> None:
        """Rows of equally long ``columns``, keyed by header name; the first call writes the header too."""
        if self._header:
            names = (f'"{n}"' if self._quote_all else n for n in columns)
            self._submit((",".join(names) + "\n").encode())
            self._header = False
        self._submit(_csv_lines(list(columns.values()), self._quote_all))
        self.rows += len(next(iter(columns.values())))

    def _submit(self, data: bytes | pa.Buffer) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        while len(self._pending) >= 2:  # keep memory bounded: at most two chunks in flight
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._compress, data))

    def _compress(self, data: bytes | pa.Buffer) -> None:
        self._file.write(self._zip.compress(data))

    def close(self) -> None:
        for f in self._pending:
            f.result()
        self._pool.shutdown()
        self._file.write(self._zip.flush())
        self._file.close()


def write_table(path: Path, columns: dict[str, pa.Array], quote_all: bool) -> None:
    """A whole small table as one gzip CSV: ``columns`` maps header names to equally long columns."""
    with GzipCsv(path, quote_all) as sink:
        sink.write(columns)


def ts(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Seconds since 1970 as a timestamp column (null where not valid)."""
    return pa.array(seconds, pa.int64(), mask=None if valid is None else ~valid).cast(pa.timestamp("s"))


def date(seconds: np.ndarray, valid: np.ndarray) -> pa.Array:
    return ts(seconds, valid).cast(pa.date32())


def strings(options: Sequence[str | None], index: np.ndarray) -> pa.Array:
    return pa.array(options, pa.string()).take(pa.array(index))


def ints(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    return pa.array(values, pa.int64(), mask=None if valid is None else ~valid)
