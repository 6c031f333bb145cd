"""Admission vectors from line vectors (``notes.unit = "lines"``).

Every line or sentence of every template field (:func:`medfuse.notes.text.segments`) is embedded on its
own; identical lines are embedded once. Per field, two blocks describe an admission:

* ``max``: the element-wise max of its line vectors (``dim`` wide);
* ``bag``: how many of its lines fall in each of ``clusters`` line clusters, as ``log(1 + count)``. The
  clusters are k-means centroids of the field's line vectors, fitted on **training admissions only**
  (each distinct line weighted by how often it occurs) and saved with the run, so a new admission is
  encoded with the same codebook. It is a bag of words whose words are learnt from the language model's
  line vectors: lines that say the same thing in other words share a cluster.

The admission's vector is ``[max blocks of every field, bag blocks of every field]``, zeros for an
absent field: ``fields * (dim + clusters)`` wide (``fields * clusters`` with ``max_blocks=False``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.notes.embed import embed_counts
from medfuse.notes.text import segments
from medfuse.progress import ProgressFn, part_progress

CODEBOOK_FILE = "line_codebook.safetensors"


@dataclass
class Lines:
    """The lines of a batch of admissions: distinct line vectors and, per line, its text, distinct-line id,
    admission (``owner``) and field index; :meth:`LineEncoder.encode` pools any selection of them."""

    vectors: np.ndarray  # [U, d] float32
    texts: list[str]  # [n]
    line_id: np.ndarray  # [n] int64, row of ``vectors``
    owner: np.ndarray  # [n] int64
    field: np.ndarray  # [n] int64, index into ``LineEncoder.fields``

    def take(self, index: np.ndarray, owner: np.ndarray) -> Lines:
        """The lines at ``index`` given new owners (e.g. variants of one admission, each missing some lines),
        with only their own distinct vectors."""
        index = np.asarray(index, dtype=np.int64)
        ids, line_id = np.unique(self.line_id[index], return_inverse=True)
        return Lines(self.vectors[ids], [self.texts[i] for i in index], line_id.reshape(-1),
                     np.asarray(owner, dtype=np.int64), self.field[index])


class LineEncoder:
    """Fit a per-field line codebook on training admissions, then encode admissions (sklearn-like).

    ``embedder``: a :class:`~medfuse.notes.embed.NoteEmbedder`; ``fields``: the template fields in order;
    ``clusters``: codebook size per field (0 = max blocks only); ``max_blocks``: whether the max blocks are
    part of the vector (False = bag blocks only).
    """

    def __init__(self, embedder: Any, fields: list[str], clusters: int = 64, seed: int = 0, max_blocks: bool = True):
        if not max_blocks and not clusters:
            raise ValueError("a line vector needs the max blocks or at least one line cluster")
        self.embedder, self.fields = embedder, list(fields)
        self.clusters, self.seed, self.max_blocks = int(clusters), int(seed), bool(max_blocks)
        self.centroids: dict[str, np.ndarray] = {}
        self.stats = {"lines": 0, "unique_lines": 0}

    @property
    def dim(self) -> int:
        return len(self.fields) * (self.embedder.dim * self.max_blocks + self.clusters)

    def _pieces(self, values: list[dict[str, str | None]]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every line of ``values``: its text, admission and field index."""
        pieces, owner, field = [], [], []
        for i, v in enumerate(values):
            for j, f in enumerate(self.fields):
                for piece in segments(v.get(f), f):
                    pieces.append(piece)
                    owner.append(i)
                    field.append(j)
        return pieces, np.asarray(owner, dtype=np.int64), np.asarray(field, dtype=np.int64)

    def lines(self, values: list[dict[str, str | None]], progress: ProgressFn | None = None) -> Lines:
        """Every line of ``values``, embedded (identical lines once): what :meth:`transform` pools."""
        pieces, owner, field = self._pieces(values)
        index: dict[str, int] = {}
        line_id = np.array([index.setdefault(p, len(index)) for p in pieces], dtype=np.int64)
        unique = np.zeros((0, self.embedder.dim), np.float32)
        if index:
            unique = self.embedder.embed(list(index), progress=progress)
        self.stats = {"lines": len(pieces), "unique_lines": len(index), **embed_counts(self.embedder)}
        return Lines(unique, pieces, line_id, owner, field)

    def fit_codebook(self, unique: np.ndarray, line_id: np.ndarray, field: np.ndarray) -> LineEncoder:
        """Per field, k-means over its distinct line vectors, each weighted by how often it occurs (lines
        that differ only in what the tokenizer drops, such as case, share one vector).

        ``unique``: distinct line vectors; ``line_id``, ``field``: per training line, its row of ``unique``
        and its field index."""
        from sklearn.cluster import KMeans

        self.centroids = {}
        for j, f in enumerate(self.fields):
            ids, counts = np.unique(line_id[field == j], return_counts=True)
            if not len(ids):
                continue
            distinct, which = np.unique(unique[ids], axis=0, return_inverse=True)
            weight = np.bincount(which.ravel(), weights=counts)
            km = KMeans(n_clusters=min(self.clusters, len(distinct)), n_init=2, random_state=self.seed)
            self.centroids[f] = km.fit(distinct, sample_weight=weight).cluster_centers_.astype(np.float32)
        return self

    def _encode(self, unique: np.ndarray, line_id: np.ndarray, owner: np.ndarray, field: np.ndarray,
                n: int) -> np.ndarray:
        d, k = self.embedder.dim, self.clusters
        maxes = np.zeros((n, len(self.fields), d), np.float32)
        bags = np.zeros((n, len(self.fields), k), np.float32)
        for j, f in enumerate(self.fields):
            sel = np.flatnonzero(field == j)
            if not len(sel):
                continue
            order = np.argsort(owner[sel], kind="stable")  # each admission's lines contiguous: one reduceat
            own, ids = owner[sel][order], line_id[sel][order]
            starts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
            maxes[own[starts], j] = np.maximum.reduceat(unique[ids], starts, axis=0)
            c = self.centroids.get(f)
            if k and c is not None:  # nearest centroid: argmin |v - c|^2 = argmax v.c - |c|^2 / 2
                nearest = np.argmax(unique @ c.T - 0.5 * (c * c).sum(1), axis=1)
                bags[:, j] = np.bincount(own * k + nearest[ids], minlength=n * k).reshape(n, k)
        blocks = [maxes.reshape(n, len(self.fields) * d)] if self.max_blocks else []
        return np.concatenate([*blocks, np.log1p(bags).reshape(n, len(self.fields) * k)], axis=1)

    def fit_transform(self, values: list[dict[str, str | None]], fit: np.ndarray,
                      progress: ProgressFn | None = None) -> np.ndarray:
        """Encode ``values``, fitting the codebook on the admissions where ``fit`` is True."""
        return np.concatenate(list(self.fit_transform_chunks([(values, fit)], progress)))

    def fit_transform_chunks(self, chunks: Iterable[tuple[list[dict[str, str | None]], np.ndarray]],
                             progress: ProgressFn | None = None, total: int = 1) -> Iterator[np.ndarray]:
        """:meth:`fit_transform` over admissions that come a chunk at a time (``(values, fit)`` pairs of
        ``total`` chunks): one ``[len(values), dim]`` block per chunk, in order.

        Pass 1 embeds each chunk's lines not seen in an earlier chunk and keeps only the distinct line
        vectors and, per line, 10 bytes (its distinct line, admission, field and whether it is fitted on);
        the codebook is then fitted on every ``fit`` admission's lines, and pass 2 pools chunk by chunk.
        Memory is the distinct lines', not the texts': the same vectors as one :meth:`fit_transform` call.
        """
        ids: dict[str, int] = {}
        vectors, line_id, owner, field, fitted, sizes = [], [], [], [], [], []
        stats, offset = dict.fromkeys(("lines", "cached", "computed", "windows", "long_texts"), 0), 0
        for c, (values, fit) in enumerate(chunks):
            pieces, own, fld = self._pieces(values)
            new: list[str] = []
            gid = np.empty(len(pieces), dtype=np.int32)
            for k, p in enumerate(pieces):
                g = ids.get(p)
                if g is None:
                    g = ids[p] = len(ids)
                    new.append(p)
                gid[k] = g
            if new:
                vectors.append(self.embedder.embed(new, progress=progress and part_progress(progress, c, total)))
                stats.update({k: stats[k] + v for k, v in embed_counts(self.embedder).items()})
            line_id.append(gid)
            owner.append((own + offset).astype(np.int32))
            field.append(fld.astype(np.int8))
            fitted.append(np.asarray(fit, dtype=bool)[own])
            sizes.append(len(values))
            offset += len(values)
            stats["lines"] += len(pieces)
        unique = np.concatenate(vectors) if vectors else np.zeros((0, self.embedder.dim), np.float32)
        del vectors
        line_id, owner, field, fitted = (np.concatenate(a) if a else np.zeros(0, t) for a, t in (
            (line_id, np.int32), (owner, np.int32), (field, np.int8), (fitted, bool)))
        if self.clusters:
            self.fit_codebook(unique, line_id[fitted], field[fitted])
        del fitted
        self.stats = {**stats, "unique_lines": len(ids)}
        del ids
        bounds = np.searchsorted(owner, np.cumsum([0, *sizes]))  # lines are in admission order
        start = 0
        for size, a, b in zip(sizes, bounds[:-1], bounds[1:], strict=True):
            rows, local = np.unique(line_id[a:b], return_inverse=True)
            yield self._encode(unique[rows], local.reshape(-1), owner[a:b] - start, field[a:b], size)
            start += size

    def transform(self, values: list[dict[str, str | None]], progress: ProgressFn | None = None) -> np.ndarray:
        """Encode ``values`` with the fitted (or loaded) codebook."""
        return self.encode(self.lines(values, progress), len(values))

    def encode(self, lines: Lines, n: int) -> np.ndarray:
        """``[n, dim]`` admission vectors of ``lines`` (admission ``i`` pools the lines it owns, zeros if none),
        with the fitted codebook: a subset of an admission's lines is encoded as if the rest were absent."""
        return self._encode(lines.vectors, lines.line_id, lines.owner, lines.field, n)

    def save(self, run_dir: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(run_dir) / CODEBOOK_FILE
        save_file({f: np.ascontiguousarray(c) for f, c in self.centroids.items()}, str(path))
        return path

    def load(self, run_dir: str | Path) -> LineEncoder:
        from safetensors.numpy import load_file

        self.centroids = dict(load_file(str(Path(run_dir) / CODEBOOK_FILE)))
        return self
