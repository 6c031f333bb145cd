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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfuse import distributed
from medfuse.data.cohort import Cohort
from medfuse.notes.embed import NoteEmbedder
from medfuse.notes.lines import LineEncoder
from medfuse.notes.text import DEFAULT_TEMPLATE, build_texts, template_fields
from medfuse.progress import ProgressFn, no_progress

EMBEDDINGS_FILE = "note_embeddings.parquet"
CONFIG_FILE = "embed_config.json"


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


def write_note_embeddings(out: str | Path, hadm_ids: np.ndarray, vectors: np.ndarray, missing: np.ndarray,
                          split: np.ndarray | None = None, config: dict[str, Any] | None = None) -> Path:
    """Write ``note_embeddings.parquet`` (+ ``embed_config.json``) atomically into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    d = vectors.shape[1]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d)
    cols = {"hadm_id": pa.array(np.asarray(hadm_ids, dtype=np.int64))}
    if split is not None:
        cols["split"] = pa.array([str(s) for s in split], pa.string())
    cols["missing"] = pa.array(np.asarray(missing, dtype=bool))
    cols["embedding"] = emb
    table = pa.table(cols)
    tmp = out / f".{EMBEDDINGS_FILE}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / EMBEDDINGS_FILE)
    if config is not None:
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    return out / EMBEDDINGS_FILE


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
                 adapter: str | Path | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Embed every admission of every split of a cohort into ``out``; returns a summary."""
    from medfuse.config import NotesConfig

    cfg = cfg or NotesConfig()
    progress = progress or no_progress
    t0 = time.perf_counter()
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    template = cfg.template or DEFAULT_TEMPLATE
    nt = build_texts(cohort, template)
    progress("read notes", 1.0)
    embedder = embedder_from_config(cfg, model=model, adapter=adapter)
    unit = adapter_unit(adapter) if adapter else cfg.unit  # an adapter embeds the unit it was trained on
    clusters = cfg.line_clusters
    rows = np.flatnonzero(nt.has_text)
    t1 = time.perf_counter()
    if unit == "lines":
        lines = LineEncoder(embedder, template_fields(template), clusters, seed=cfg.seed, max_blocks=cfg.line_max)
        vectors = np.zeros((len(nt), lines.dim), dtype=np.float32)
        if len(rows):
            vectors[rows] = lines.fit_transform([nt.values[i] for i in rows], nt.split[rows] == "train", progress)
        Path(out).mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            lines.save(out)
    else:
        vectors = np.zeros((len(nt), embedder.dim), dtype=np.float32)
        if len(rows):
            vectors[rows] = embedder.embed([nt.texts[i] for i in rows], progress=progress)
    embed_s = time.perf_counter() - t1
    stats = dict(embedder.last_stats)
    settings = embedder.settings()
    config = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "cohort": str(cohort.path.resolve()),
        "model": embedder.model_name,
        "model_path": str(embedder.model_path),
        "adapter": str(Path(adapter).resolve()) if adapter else None,
        **{k: settings[k] for k in ("model_identity", "adapter_identity", "family", "pooling", "max_length",
                                    "stride", "normalize", "dtype")},
        "cache_namespace": embedder.identity,
        "template": template,
        "unit": unit,
        "fields": template_fields(template) if unit == "lines" else None,
        "line_clusters": clusters if unit == "lines" else None,
        "line_max": cfg.line_max if unit == "lines" else None,
        "dim": int(vectors.shape[1]),
        "admissions": len(nt),
        "embedded": int(nt.has_text.sum()),
        "missing": int((~nt.has_text).sum()),
        "without_note": int((~nt.has_note).sum()),
        "cached": int(stats.get("cached", 0)),
        "computed": int(stats.get("computed", 0)),
        "windows": int(stats.get("windows", 0)),
        **(lines.stats if unit == "lines" else {}),
        "long_texts": int(stats.get("long_texts", 0)),
        "embed_seconds": round(embed_s, 3),
    }
    path = Path(out) / EMBEDDINGS_FILE
    if distributed.is_main():  # under torchrun every rank holds the same vectors; rank 0 writes them
        write_note_embeddings(out, nt.hadm_ids, vectors, ~nt.has_text, nt.split, config)
        config["seconds"] = round(time.perf_counter() - t0, 3)
        config["output"] = str(path)
        (Path(out) / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    distributed.barrier()
    progress("embed notes", 1.0)
    return config
