"""Assemble the fusion model's inputs for every cohort admission: note vectors, lab tokens, labels.

The inputs are built a chunk of admissions at a time. Training and evaluation write them to ``RUN/inputs/``
(one ``.npy`` file per array, ``inputs.json``), memory-map them and read a batch's rows with ``pread``: at
MIMIC-IV size (430,000 admissions) the MLTM tokens alone are 5.9 GB and the note vectors 3.9 GB, which no
process holds. The folder is reused while the cohort, the MLTM run and the note run it was built
from are unchanged. Prediction builds the same arrays in memory for its small batches.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medfuse import distributed
from medfuse.data.cohort import LAB_AGGREGATES, Cohort, parquet_pieces
from medfuse.progress import ProgressFn, no_progress

STORE_DIR = "inputs"  # RUN/inputs: the fusion inputs of a run, as memory-mapped .npy files
STORE_META = "inputs.json"
STORE_FORMAT = 1
CHUNK_ROWS = 8192  # admissions assembled at a time (rounded to a multiple of the MLTM batch size)
COMPUTED = ("note", "lab_x", "lab_observed", "lab_tokens", "lab_pooled", "lab_values")  # the arrays a store holds


class _RowFile:
    """Rows of a ``.npy`` file read with ``pread`` into a buffer: the bytes pass through the page cache but never
    become part of this process's resident set, as pages touched through a memory map do (the kernel maps up to
    64 kB around every faulting page, so random batches soon map whole files)."""

    def __init__(self, array: np.memmap):
        self.path, self.offset, self.row_bytes = array.filename, array.offset, array.strides[0]
        self.fd: int | None = None

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[k] = array[rows[k]]`` for ascending ``rows``: one read per run of consecutive rows."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        buf, size = memoryview(out).cast("B"), self.row_bytes
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        for first, stop in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(rows)].tolist()):
            view, at = buf[first * size : stop * size], self.offset + int(rows[first]) * size
            while len(view):
                done = os.preadv(self.fd, [view], at)
                if not done:
                    raise OSError(f"{self.path}: file ends before row {rows[stop - 1]}")
                view, at = view[done:], at + done

    def __del__(self):
        if self.fd is not None:
            os.close(self.fd)


def lab_missing(observed):
    """Rows without any observed lab token (``observed`` [N, tokens], numpy or torch)."""
    return ~observed.any(1)


def standardise_notes(vectors: np.ndarray, missing: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Note vectors standardised per dimension with the training split's statistics; rows without text are 0."""
    return np.where(missing[:, None], 0.0, (vectors - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class InputSizes:
    """The shapes a fusion model is built for: saved with its weights (``model_config.json``)."""

    d_note: int  # note vector width
    n_lab_tokens: int  # MLTM tokens: tests x aggregates
    d_lab: int  # MLTM token and pooled width
    n_tests: int  # tests of the value channels
    n_values: int  # value channels per test
    n_labels: int


@dataclass
class FusionData:
    """Everything the fusion model and its baselines see, one row per cohort admission (cohort order).

    ``lab_x`` holds normalised lab values (0 where not observed) and ``lab_observed`` the mask, for an
    encoder trained with the fusion model; ``lab_tokens`` / ``lab_pooled`` are the frozen pretrained
    MLTM encoder's output on them, computed once and shared by every model of a comparison.
    ``lab_values`` [N, T, 5] holds, per test of the MLTM vocabulary, its normalised ``last``, ``mean``,
    ``min`` and ``max`` (0 where not measured) and a measured flag: the skip around the encoder
    (``train.lab_values``). ``note`` is standardised with ``note_mean`` / ``note_std``.

    The arrays of :data:`COMPUTED` are read-only memory maps of ``RUN/inputs`` (``np.memmap``, an ndarray)
    or in-memory arrays; :meth:`tensors` reads only the rows of a batch from either, from the files
    themselves where the arrays are the store's maps.
    """

    hadm_ids: np.ndarray
    subject_ids: np.ndarray
    split: np.ndarray
    y: np.ndarray
    label_names: list[str]
    note: np.ndarray
    note_missing: np.ndarray
    lab_x: np.ndarray
    lab_observed: np.ndarray
    lab_tokens: np.ndarray
    lab_pooled: np.ndarray
    lab_values: np.ndarray
    note_mean: np.ndarray | None = None
    note_std: np.ndarray | None = None
    _files: dict = field(default_factory=dict, repr=False, compare=False)  # name -> (the store's map, _RowFile)

    @property
    def lab_missing(self) -> np.ndarray:
        return lab_missing(self.lab_observed)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def sizes(self) -> InputSizes:
        return InputSizes(d_note=self.note.shape[1], n_lab_tokens=self.lab_tokens.shape[1],
                          d_lab=self.lab_tokens.shape[2], n_tests=self.lab_values.shape[1],
                          n_values=self.lab_values.shape[2], n_labels=self.y.shape[1])

    def tensors(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """The model inputs of ``rows`` as tensors on ``device`` (keys match the model's forward).

        Rows are read in ascending order and returned in the order given.
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        ascending = rows[order]

        def take(name: str) -> np.ndarray:
            a = getattr(self, name)
            mapped, file = self._files.get(name, (None, None))
            if a is mapped:
                got = np.empty((len(rows), *a.shape[1:]), dtype=a.dtype)
                file.read(ascending, got)
            else:
                got = a[ascending]
            out = np.empty_like(got)
            out[order] = got
            return out

        batch = {name: take(name) for name in COMPUTED}
        batch["note_missing"] = self.note_missing[rows]
        batch["lab_missing"] = lab_missing(batch["lab_observed"])
        return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


# --- output arrays ---------------------------------------------------------------------------------------


class _Output:
    """One array being assembled: a ``.npy`` file written and read with plain file I/O (no memory map, so
    nothing of it stays resident), or an in-memory array when ``path`` is None."""

    def __init__(self, shape: tuple[int, ...], dtype, path: Path | None = None):
        self.shape, self.dtype, self.path = shape, np.dtype(dtype), path
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if path is None:
            self.array, self.fd = np.zeros(shape, self.dtype), None
            return
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                     "fortran_order": False, "shape": shape})
            self.offset = f.tell()
            f.truncate(self.offset + shape[0] * self.row_bytes)  # sparse: rows never written read as zeros
        self.fd = os.open(path, os.O_RDWR)

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows ``start : start + len(block)``."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.fd is None:
            self.array[start : start + len(block)] = block
            return
        view, at = memoryview(block).cast("B"), self.offset + start * self.row_bytes
        while len(view):
            done = os.pwrite(self.fd, view, at)
            view, at = view[done:], at + done

    def scatter(self, positions: np.ndarray, block: np.ndarray) -> None:
        """Rows ``positions`` (any order) of ``block``: one write per run of consecutive positions."""
        order = np.argsort(positions, kind="stable")
        positions, block = positions[order], block[order]
        cuts = np.flatnonzero(np.diff(positions) != 1) + 1
        for run_rows, run in zip(np.split(positions, cuts), np.split(block, cuts)):
            if len(run_rows):
                self.write(int(run_rows[0]), run)

    def read(self, start: int, stop: int) -> np.ndarray:
        """A writable copy of rows ``start : stop``."""
        if self.fd is None:
            return self.array[start:stop].copy()
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        view, at = memoryview(out).cast("B"), self.offset + start * self.row_bytes
        while len(view):
            done = os.preadv(self.fd, [view], at)
            view, at = view[done:], at + done
        return out

    def finish(self) -> np.ndarray:
        if self.fd is None:
            return self.array
        os.close(self.fd)
        return np.load(self.path, mmap_mode="r")


# --- assembly --------------------------------------------------------------------------------------------


def lab_value_channels(columns: dict[str, np.ndarray], n: int, keys: list[str], present: set[str],
                       normalize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``[n, len(keys), 5]`` float32 from ``n`` rows of a cohort's ``labs`` table (``columns``: name -> values):
    per test of ``keys``, its normalised last, mean, min and max (0 where not measured; ``normalize`` maps
    ``[n, len(keys)]`` original units to z-scores, e.g. :meth:`LabEmbedder.normalize_tests`) and a measured
    flag; tests not in ``present`` (the cohort's) are all zeros (never measured)."""
    raw = np.full((n, len(keys), len(LAB_AGGREGATES)), np.nan)
    for t, key in enumerate(keys):
        if key in present:
            for a, agg in enumerate(LAB_AGGREGATES):
                raw[:, t, a] = columns[f"{key}__{agg}"]
    z = np.stack([normalize(raw[..., a]) for a in range(len(LAB_AGGREGATES))], axis=-1).astype(np.float32)
    measured = ~np.isnan(z[..., :1])
    return np.concatenate([np.nan_to_num(z, nan=0.0), measured], axis=-1).astype(np.float32)


def _lab_pieces(cohort: Cohort, embedder, rows: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Per ``rows`` admissions: the ``labs`` columns (float64) and the original-unit values in the embedder's
    token order (NaN for tests the cohort lacks), as ``LabEmbedder.cohort_values`` gives them (through float32,
    as ``Cohort.lab_values``)."""
    names = [f"{k}__{a}" for a in LAB_AGGREGATES for k in cohort.lab_keys]
    present = set(cohort.lab_keys)
    for piece in cohort.pieces("labs", names, rows):
        columns = {c: piece.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in names}
        raw = np.full((piece.num_rows, len(embedder.token_names)), np.nan)
        for j, agg in enumerate(embedder.aggregates):
            for t, key in enumerate(embedder.keys):
                if key in present:
                    raw[:, j * len(embedder.keys) + t] = columns[f"{key}__{agg}"].astype(np.float32)
        yield columns, raw


def _note_statistics(note: _Output, fit: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (+1e-6) of the note vectors of the ``fit`` rows (0 and 1
    when there are none): note vectors are tiny after L2 normalisation. Read a chunk at a time, summed in
    the order and precision of ``note[fit].mean(0)`` / ``.std(0)``, so the figures are bit-identical."""
    d = note.shape[1]
    n = int(fit.sum())
    if not n:
        return np.zeros(d, np.float32), np.ones(d, np.float32)

    def total(transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        acc = np.zeros(d, np.float32)
        for start in range(0, len(fit), chunk):
            sel = fit[start : start + chunk]
            if sel.any():  # a running row-by-row float32 sum, as numpy's reduction over axis 0
                acc = np.add.reduce(np.concatenate([acc[None], transform(note.read(start, start + len(sel))[sel])]),
                                    axis=0)
        return np.true_divide(acc, np.intp(n), out=acc, casting="unsafe")

    mean = total(lambda x: x)
    var = total(lambda x: np.multiply(x - mean, x - mean))
    return mean, np.sqrt(var) + np.float32(1e-6)


def _assemble(cohort: Cohort, note_missing: np.ndarray, fill_note: Callable[[_Output], None], embedder,
              statistics: Callable[[_Output, int], tuple[np.ndarray, np.ndarray]], batch_size: int,
              folder: Path | None, progress: ProgressFn) -> FusionData:
    """The one assembly path: note vectors (``fill_note`` copies them in, ``statistics`` gives the
    standardisation), then the labs a chunk of admissions at a time; arrays in ``folder`` or in memory."""
    n, keys, present = len(cohort.hadm_ids), embedder.keys, set(cohort.lab_keys)
    chunk = batch_size * max(1, CHUNK_ROWS // batch_size)  # whole MLTM batches: the same as one call
    d_lab, n_tok = embedder.d_model, len(embedder.token_names)
    outputs: dict[str, _Output] = {}

    def output(name: str, shape: tuple[int, ...], dtype) -> _Output:
        outputs[name] = _Output(shape, dtype, folder / f"{name}.npy" if folder is not None else None)
        return outputs[name]

    note = fill_note(lambda d: output("note", (n, d), np.float32))
    progress("fusion inputs", 0.1, f"{n:,} admissions, note vectors copied")
    mean, std = statistics(note, chunk)
    for start in range(0, n, chunk):
        block = note.read(start, min(start + chunk, n))
        note.write(start, standardise_notes(block, note_missing[start : start + len(block)], mean, std))
    lab_x, observed = output("lab_x", (n, n_tok), np.float32), output("lab_observed", (n, n_tok), bool)
    tokens, pooled = output("lab_tokens", (n, n_tok, d_lab), np.float32), output("lab_pooled", (n, d_lab), np.float32)
    values = output("lab_values", (n, len(keys), 5), np.float32)
    start = 0
    for columns, raw in _lab_pieces(cohort, embedder, chunk):
        z = embedder.normalize(raw).astype(np.float32)
        p, t = embedder.embed(raw, batch_size=batch_size, numpy=True)
        lab_x.write(start, np.nan_to_num(z, nan=0.0))
        observed.write(start, ~np.isnan(z))
        tokens.write(start, t)
        pooled.write(start, p)
        values.write(start, lab_value_channels(columns, len(raw), keys, present, embedder.normalize_tests))
        start += len(raw)
        progress("fusion inputs", 0.1 + 0.9 * start / max(n, 1), f"{start:,}/{n:,} admissions")
    arrays = {name: out.finish() for name, out in outputs.items()}
    return FusionData(
        hadm_ids=cohort.hadm_ids,
        subject_ids=cohort.table("admissions", ["subject_id"]).column("subject_id").to_numpy(),
        split=cohort.split,
        y=cohort.labels(),
        label_names=cohort.label_names,
        note_missing=note_missing.astype(bool),
        note_mean=mean,
        note_std=std,
        **arrays,
    )


def assemble_fusion_data(cohort: Cohort, note: np.ndarray, note_missing: np.ndarray, embedder,
                         note_mean: np.ndarray, note_std: np.ndarray, batch_size: int = 1024) -> FusionData:
    """The fusion inputs, in memory, of every admission of a (small) cohort from its note vectors (cohort row
    order), a :class:`~medfuse.labs.LabEmbedder` and the frozen note standardisation: what prediction uses.
    The same code as :func:`load_fusion_data`, which writes the arrays to disk."""

    def fill(make: Callable[[int], _Output]) -> _Output:
        out = make(note.shape[1])
        out.write(0, note)
        return out

    return _assemble(cohort, np.asarray(note_missing, dtype=bool), fill, embedder,
                     lambda out, chunk: (note_mean, note_std), batch_size, None, no_progress)


def note_run_alignment(cohort: Cohort, notes_run: str | Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``(note_embeddings.parquet, the cohort row of each of its rows (-1: not in the cohort), missing [N]
    in cohort row order)`` of an ``embed-notes`` run; every cohort admission must be in it."""
    import pyarrow.parquet as pq

    from medfuse.notes.embeddings import EMBEDDINGS_FILE

    path = Path(notes_run)
    path = path / EMBEDDINGS_FILE if path.is_dir() else path
    t = pq.read_table(path, columns=["hadm_id", "missing"])
    ids = t.column("hadm_id").to_numpy().astype(np.int64)
    position = {h: i for i, h in enumerate(cohort.hadm_ids.tolist())}
    target = np.fromiter((position.get(h, -1) for h in ids.tolist()), dtype=np.int64, count=len(ids))
    found = np.zeros(len(position), bool)
    found[target[target >= 0]] = True
    if not found.all():
        absent = cohort.hadm_ids[~found]
        raise ValueError(f"{notes_run}: no note embedding for {len(absent)} cohort admissions (e.g. {absent[0]}); "
                         "re-run embed-notes on this cohort")
    missing = np.zeros(len(position), bool)
    missing[target[target >= 0]] = t.column("missing").to_numpy(zero_copy_only=False).astype(bool)[target >= 0]
    return path, target, missing


def _fingerprint(cohort: Cohort, labs_run: Path, embeddings: Path, batch_size: int) -> dict:
    """What a store was built from: paths, sizes and modification times of the files it read."""
    from medfuse.labs.pretraining import MODEL_FILE, VOCAB_FILE

    def stamp(path: Path) -> list:
        s = path.stat()
        return [str(path.resolve()), s.st_size, s.st_mtime_ns]

    return {"format": STORE_FORMAT, "batch_size": batch_size,
            "files": [stamp(cohort.path / "manifest.json"), stamp(cohort.path / "labs.parquet"),
                      stamp(labs_run / MODEL_FILE), stamp(labs_run / VOCAB_FILE), stamp(embeddings)]}


def _open_store(store: Path, cohort: Cohort, note_missing: np.ndarray) -> FusionData:
    meta = json.loads((store / STORE_META).read_text())
    arrays = {name: np.load(store / f"{name}.npy", mmap_mode="r") for name in COMPUTED}
    files = {name: (a, _RowFile(a)) for name, a in arrays.items()}
    return FusionData(hadm_ids=cohort.hadm_ids, _files=files,
                      subject_ids=cohort.table("admissions", ["subject_id"]).column("subject_id").to_numpy(),
                      split=cohort.split, y=cohort.labels(), label_names=cohort.label_names,
                      note_missing=note_missing, note_mean=np.asarray(meta["note_mean"], np.float32),
                      note_std=np.asarray(meta["note_std"], np.float32), **arrays)


def load_fusion_data(cohort: str | Path | Cohort, labs_run: str | Path, notes_run: str | Path,
                     device: str = "auto", batch_size: int = 1024, store: str | Path | None = None,
                     progress: ProgressFn | None = None) -> FusionData:
    """Join a cohort with an MLTM run (``pretrain-labs``) and a note-embedding run (``embed-notes``).

    Note vectors are standardised per dimension with training-split statistics (missing rows stay 0).
    With ``store`` (a run's ``inputs`` folder) the arrays are written there and memory-mapped, and an
    existing store built from the same files is reused; under torchrun rank 0 builds it and every rank
    maps it. Without, they are built in memory.
    """
    from medfuse.labs import LabEmbedder

    progress = progress or no_progress
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    labs_run = Path(labs_run)
    embeddings, target, note_missing = note_run_alignment(cohort, notes_run)
    fit = (cohort.split == "train") & ~note_missing

    def fill(make: Callable[[int], _Output]) -> _Output:
        out, start = None, 0
        for piece in parquet_pieces(embeddings, ["embedding"], CHUNK_ROWS):
            emb = piece.column("embedding").combine_chunks()
            x = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            x = x.reshape(len(piece), emb.type.list_size)
            out = out or make(x.shape[1])
            here = target[start : start + len(x)]
            out.scatter(here[here >= 0], x[here >= 0])
            start += len(x)
        return out or make(0)

    def build(folder: Path | None) -> FusionData:
        embedder = LabEmbedder.load(labs_run, device=device)
        return _assemble(cohort, note_missing, fill, embedder, lambda out, chunk: _note_statistics(out, fit, chunk),
                         batch_size, folder, progress)

    if store is None:
        return build(None)
    store = Path(store)
    fingerprint = _fingerprint(cohort, labs_run, embeddings, batch_size)
    meta = store / STORE_META
    if distributed.is_main() and not (meta.is_file() and json.loads(meta.read_text()).get("built_from") == fingerprint):
        t0 = time.perf_counter()
        store.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{store.name}.tmp-", dir=store.parent))
        try:
            data = build(work)
            info = {"built_from": fingerprint, "admissions": len(data.hadm_ids),
                    "arrays": {k: {"shape": list(getattr(data, k).shape), "dtype": str(getattr(data, k).dtype)}
                               for k in COMPUTED},
                    "bytes": sum((work / f"{k}.npy").stat().st_size for k in COMPUTED),
                    "note_mean": data.note_mean.tolist(), "note_std": data.note_std.tolist(),
                    "seconds": round(time.perf_counter() - t0, 2)}
            (work / STORE_META).write_text(json.dumps(info))
            del data  # its memory maps point into ``work``
            if store.exists():
                shutil.rmtree(store)
            work.rename(store)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    distributed.barrier()  # under torchrun: rank 0 has written the store
    return _open_store(store, cohort, note_missing)
