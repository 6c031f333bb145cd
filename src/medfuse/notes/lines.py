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
absent field: ``fields * (dim + clusters)`` wide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfuse.notes.text import segments
from medfuse.progress import ProgressFn

CODEBOOK_FILE = "line_codebook.safetensors"


class LineEncoder:
    """Fit a per-field line codebook on training admissions, then encode admissions (sklearn-like).

    ``embedder``: a :class:`~medfuse.notes.embed.NoteEmbedder`; ``fields``: the template fields in order;
    ``clusters``: codebook size per field (0 = max blocks only).
    """

    def __init__(self, embedder: Any, fields: list[str], clusters: int = 64, seed: int = 0):
        self.embedder, self.fields = embedder, list(fields)
        self.clusters, self.seed = int(clusters), int(seed)
        self.centroids: dict[str, np.ndarray] = {}
        self.stats: dict[str, int] = {}

    @property
    def dim(self) -> int:
        return len(self.fields) * (self.embedder.dim + self.clusters)

    def _line_vectors(self, values: list[dict[str, str | None]], progress: ProgressFn | None):
        """``(vectors [lines, d], admission of each line, field index of each line)``."""
        pieces, owner, field = [], [], []
        for i, v in enumerate(values):
            for j, f in enumerate(self.fields):
                for piece in segments(v.get(f), f):
                    pieces.append(piece)
                    owner.append(i)
                    field.append(j)
        if not pieces:
            return np.zeros((0, self.embedder.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        unique = list(dict.fromkeys(pieces))
        index = {p: k for k, p in enumerate(unique)}
        vectors = self.embedder.embed(unique, progress=progress)[[index[p] for p in pieces]]
        self.stats = {"lines": len(pieces), "unique_lines": len(unique)}
        return vectors, np.asarray(owner), np.asarray(field)

    def _fit_codebook(self, vectors: np.ndarray, field: np.ndarray) -> None:
        from sklearn.cluster import KMeans

        self.centroids = {}
        for j, f in enumerate(self.fields):
            lines = vectors[field == j]
            if not len(lines):
                continue
            distinct, counts = np.unique(lines, axis=0, return_counts=True)
            k = min(self.clusters, len(distinct))
            km = KMeans(n_clusters=k, n_init=2, random_state=self.seed).fit(distinct, sample_weight=counts)
            self.centroids[f] = km.cluster_centers_.astype(np.float32)

    def _encode(self, vectors: np.ndarray, owner: np.ndarray, field: np.ndarray, n: int) -> np.ndarray:
        d, k = self.embedder.dim, self.clusters
        maxes = np.zeros((n, len(self.fields), d), np.float32)
        bags = np.zeros((n, len(self.fields), k), np.float32)
        for j, f in enumerate(self.fields):
            sel = field == j
            if not sel.any():
                continue
            pooled = np.full((n, d), -np.inf, np.float32)
            np.maximum.at(pooled, owner[sel], vectors[sel])
            maxes[:, j] = np.where(np.isfinite(pooled), pooled, 0.0)
            c = self.centroids.get(f)
            if k and c is not None:  # nearest centroid: argmin |v - c|^2 = argmax v.c - |c|^2 / 2
                nearest = np.argmax(vectors[sel] @ c.T - 0.5 * (c * c).sum(1), axis=1)
                np.add.at(bags[:, j], (owner[sel], nearest), 1.0)
        return np.concatenate([maxes.reshape(n, -1), np.log1p(bags).reshape(n, -1)], axis=1)

    def fit_transform(self, values: list[dict[str, str | None]], fit: np.ndarray,
                      progress: ProgressFn | None = None) -> np.ndarray:
        """Encode ``values``, fitting the codebook on the admissions where ``fit`` is True."""
        vectors, owner, field = self._line_vectors(values, progress)
        if self.clusters:
            keep = np.asarray(fit, dtype=bool)[owner] if len(owner) else np.zeros(0, bool)
            self._fit_codebook(vectors[keep], field[keep])
        return self._encode(vectors, owner, field, len(values))

    def transform(self, values: list[dict[str, str | None]], progress: ProgressFn | None = None) -> np.ndarray:
        """Encode ``values`` with the fitted (or loaded) codebook."""
        vectors, owner, field = self._line_vectors(values, progress)
        return self._encode(vectors, owner, field, len(values))

    def save(self, run_dir: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(run_dir) / CODEBOOK_FILE
        save_file({f: np.ascontiguousarray(c) for f, c in self.centroids.items()}, str(path))
        return path

    def load(self, run_dir: str | Path) -> LineEncoder:
        from safetensors.numpy import load_file

        self.centroids = dict(load_file(str(Path(run_dir) / CODEBOOK_FILE)))
        return self
