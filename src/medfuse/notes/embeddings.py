"""Cohort-level note embedding (``medfuse embed-notes``) and the file the fusion stage reads.

``RUN/note_embeddings.parquet`` has one row per cohort admission, in cohort row order:
``hadm_id`` (int64), ``split`` (train/val/test), ``missing`` (bool: neither a note nor lab text, so
nothing was embedded) and ``embedding`` (fixed-size list of float32; all zeros where ``missing``).
``RUN/embed_config.json`` records the model, its identity hash, pooling, windowing, template, unit and counts.

With ``unit = "lines"`` (the default) every line of every field the template names is embedded on its
own and pooled per field (:mod:`medfuse.notes.lines`: max-pool plus a bag of line clusters whose
codebook, fitted on the training split, is saved as ``RUN/line_codebook.safetensors``). With
``unit = "text"`` the templated text is embedded whole (``hidden`` wide). An adapter from
``finetune-notes`` embeds the unit it was trained on (``finetune_config.json``'s ``unit``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfuse import distributed
from medfuse.data.cohort import Cohort
from medfuse.notes.embed import NoteEmbedder, embed_counts
from medfuse.notes.lines import LineEncoder
from medfuse.notes.text import DEFAULT_TEMPLATE, NoteTexts, iter_texts, template_fields
from medfuse.progress import ProgressFn, no_progress, part_progress

EMBEDDINGS_FILE = "note_embeddings.parquet"
CONFIG_FILE = "embed_config.json"
CHUNK_ADMISSIONS = 4096  # admissions held at once: about 38 kB each (texts, lines, their vectors as written)


def embedder_from_config(cfg: Any = None, model: str | Path | None = None,
                         adapter: str | Path | None = None) -> NoteEmbedder:
    """A :class:`NoteEmbedder` from a ``NotesConfig`` (``model``/``adapter`` win over it).

    With an adapter and no explicit ``model``, the adapter's own base model is used.
    """
    if cfg is None:
        from medfuse.config import NotesConfig

        cfg = NotesConfig()
    if model is None and not adapter:
        model = cfg.model
    cache: Any = False if not cfg.cache else (cfg.cache_dir or None)
    return NoteEmbedder(model=model, pooling=cfg.pooling, adapter=adapter, max_length=cfg.max_length or None,
                        stride=cfg.stride, batch_tokens=cfg.batch_tokens or None,
                        batch_size=cfg.batch_size or None, normalize=cfg.normalize, cache_dir=cache,
                        device=cfg.device, dtype=cfg.dtype)


def adapter_unit(adapter: str | Path) -> str:
    """The unit (``text`` or ``lines``) a ``finetune-notes`` run was trained on (``text`` for a bare peft folder)."""
    meta = Path(adapter) / "finetune_config.json"
    return json.loads(meta.read_text()).get("unit", "text") if meta.is_file() else "text"


class EmbeddingsWriter:
    """Write ``note_embeddings.parquet`` a block of admissions at a time (one row group each), atomically:
    the file appears under its name only when the ``with`` block ends without an error."""

    def __init__(self, out: str | Path, dim: int, with_split: bool = True):
        self.path = Path(out) / EMBEDDINGS_FILE
        self.tmp = self.path.with_name(f".{EMBEDDINGS_FILE}.{os.getpid()}.tmp")  # two writers never share it
        fields = [("hadm_id", pa.int64()), *([("split", pa.string())] if with_split else []),
                  ("missing", pa.bool_()), ("embedding", pa.list_(pa.float32(), dim))]
        self.schema, self.dim = pa.schema(fields), int(dim)

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        return self

    def write(self, hadm_ids: np.ndarray, vectors: np.ndarray, missing: np.ndarray,
              split: np.ndarray | None = None) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(hadm_ids), self.dim)
        cols = {"hadm_id": pa.array(np.asarray(hadm_ids, dtype=np.int64))}
        if "split" in self.schema.names:
            cols["split"] = pa.array([str(s) for s in split], pa.string())
        cols["missing"] = pa.array(np.asarray(missing, dtype=bool))
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim)
        self.writer.write_table(pa.table(cols, schema=self.schema))

    def __exit__(self, kind, *_) -> None:
        try:
            self.writer.close()
            if kind is None:
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


def write_note_embeddings(out: str | Path, hadm_ids: np.ndarray, vectors: np.ndarray, missing: np.ndarray,
                          split: np.ndarray | None = None, config: dict[str, Any] | None = None) -> Path:
    """Write ``note_embeddings.parquet`` (+ ``embed_config.json``) atomically into ``out``."""
    with EmbeddingsWriter(out, np.shape(vectors)[1], with_split=split is not None) as writer:
        writer.write(hadm_ids, vectors, missing, split)
    if config is not None:
        (Path(out) / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    return writer.path


def load_note_embeddings(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hadm_ids [N] int64, X [N, d] float32, missing [N] bool)`` from an ``embed-notes`` run folder.

    Rows are in cohort row order; ``X`` is all zeros where ``missing`` (no note and no lab text).
    """
    path = Path(run_dir)
    path = path / EMBEDDINGS_FILE if path.is_dir() else path
    t = pq.read_table(path, columns=["hadm_id", "missing", "embedding"])
    emb = t.column("embedding").combine_chunks()
    d = emb.type.list_size
    x = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(t), d)
    return (t.column("hadm_id").to_numpy().astype(np.int64), x,
            t.column("missing").to_numpy(zero_copy_only=False).astype(bool))


def embed_cohort(cohort: str | Path | Cohort, out: str | Path, cfg: Any = None, *, model: str | Path | None = None,
                 adapter: str | Path | None = None, progress: ProgressFn | None = None,
                 chunk: int = CHUNK_ADMISSIONS) -> dict[str, Any]:
    """Embed every admission of every split of a cohort into ``out``; returns a summary.

    Admissions go ``chunk`` at a time (texts built, embedded, written as one row group), so memory grows
    with the number of distinct lines, not of admissions. Under torchrun every rank takes part in the
    embedding (:class:`NoteEmbedder` shards it) and rank 0 writes.
    """
    from medfuse.config import NotesConfig

    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 admission, got {chunk}")
    cfg = cfg or NotesConfig()
    progress = progress or no_progress
    t0 = time.perf_counter()
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    template = cfg.template or DEFAULT_TEMPLATE
    embedder = embedder_from_config(cfg, model=model, adapter=adapter)
    unit = adapter_unit(adapter) if adapter else cfg.unit  # an adapter embeds the unit it was trained on
    total = -(-len(cohort.hadm_ids) // chunk)
    chunks: list[NoteTexts] = []  # each chunk's texts, kept only until its vectors are written

    def texts() -> Iterator[tuple[list[dict[str, str | None]], np.ndarray]]:
        for _, nt in iter_texts(cohort, template, chunk):
            chunks.append(nt)
            rows = np.flatnonzero(nt.has_text)
            yield [nt.values[i] for i in rows], nt.split[rows] == "train"
            nt.values, nt.texts = [], []

    if unit == "lines":
        encoder = LineEncoder(embedder, template_fields(template), cfg.line_clusters, seed=cfg.seed,
                              max_blocks=cfg.line_max)
        dim, blocks = encoder.dim, encoder.fit_transform_chunks(texts(), progress, total)
    else:
        encoder, dim, stats = None, embedder.dim, dict.fromkeys(embed_counts(embedder), 0)

        def embed_texts() -> Iterator[np.ndarray]:
            for c, _ in enumerate(texts()):
                nt = chunks[-1]
                yield embedder.embed([nt.texts[i] for i in np.flatnonzero(nt.has_text)],
                                     progress=part_progress(progress, c, total))
                stats.update({k: stats[k] + v for k, v in embed_counts(embedder).items()})

        blocks = embed_texts()
    main = distributed.is_main()  # every rank computes the same vectors; rank 0 writes them
    if main:  # the Parquet file is the mark of a finished run: it is renamed into place last
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / EMBEDDINGS_FILE).unlink(missing_ok=True)
    with EmbeddingsWriter(out, dim) if main else nullcontext() as writer:
        for c, block in enumerate(blocks):
            nt = chunks[c]
            if main:
                vectors = np.zeros((len(nt), dim), dtype=np.float32)
                vectors[nt.has_text] = block
                writer.write(nt.hadm_ids, vectors, ~nt.has_text, nt.split)
            progress("write embeddings", (c + 1) / max(total, 1))
        has_text, has_note = (np.concatenate([getattr(nt, k) for nt in chunks] or [np.zeros(0, bool)])
                              for k in ("has_text", "has_note"))
        settings = embedder.settings()
        config = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "cohort": str(cohort.path.resolve()),
            "model": embedder.model_name,
            "model_path": str(embedder.model_path),
            "device": embedder.device_used,
            "adapter": str(Path(adapter).resolve()) if adapter else None,
            **{k: settings[k] for k in ("model_identity", "adapter_identity", "family", "pooling", "max_length",
                                        "stride", "normalize", "dtype")},
            "cache_namespace": embedder.identity,
            "template": template,
            "unit": unit,
            "fields": template_fields(template) if unit == "lines" else None,
            "line_clusters": cfg.line_clusters if unit == "lines" else None,
            "line_max": cfg.line_max if unit == "lines" else None,
            "dim": int(dim),
            "admissions": len(has_text),
            "embedded": int(has_text.sum()),
            "missing": int((~has_text).sum()),
            "without_note": int((~has_note).sum()),
            **(encoder.stats if encoder is not None else stats),
            "chunk_admissions": int(chunk),
            "world_size": distributed.world_size(),
            "seconds": round(time.perf_counter() - t0, 3),
            "output": str(Path(out) / EMBEDDINGS_FILE),
        }
        if main:
            if encoder is not None:
                encoder.save(out)
            (Path(out) / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    distributed.barrier()
    progress("embed notes", 1.0)
    return config
