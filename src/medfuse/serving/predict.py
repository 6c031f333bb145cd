"""Predict new patients with a model bundle: records -> the shared transforms -> the trained model.

:class:`Predictor` loads a bundle once (``Predictor.load``) and predicts batches of
:class:`~medfuse.serving.records.PatientRecord`. The path is the training path: records become an
in-memory cohort (:mod:`medfuse.serving.features`), note texts are built and embedded by the notes
stage's code with the bundle's line codebook, lab and note inputs are assembled by
:func:`medfuse.training.inputs.assemble_fusion_data` with the frozen statistics, and the fusion model
predicts. ``evaluate`` on a cohort and this path agree to 1e-5 (tests/serving).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.serving.bundle import BundleError, read_bundle
from medfuse.serving.card import card
from medfuse.serving.features import Vocabulary, records_to_cohort, vocabulary_connection
from medfuse.serving.records import PatientRecord


@dataclass
class Prepared:
    """One batch on its way through the model: the in-memory cohort, its inputs, notes and warnings."""

    cohort: Any
    data: Any  # FusionData
    texts: Any  # NoteTexts
    warnings: list[list[str]]


class Predictor:
    """A loaded model bundle (sklearn-like ``predict``); not thread-safe: call it from one thread."""

    def __init__(self, path: Path, bundle: dict, device: str = "cpu", cache_dir: str | Path | bool | None = None,
                 memory_cache: int = 0):
        import pyarrow.parquet as pq
        import torch

        from medfuse.labs import LabEmbedder
        from medfuse.training.fusion import lab_encoder, load_net, load_note_standardisation

        self.path, self.bundle = path, bundle
        self.version: str = bundle["model_version"]
        self.label_names: list[str] = list(bundle["labels"])
        t = bundle["transform"]
        self.vocab = Vocabulary(pq.read_table(path / "vocabulary" / "lab_tests.parquet"), self.label_names,
                                t["source"], float(t["lab_hours_before_admission"]), float(t["window_hours"]),
                                float(t["lab_clip"]))
        self.labs = LabEmbedder.load(path / "labs", device=device)
        self._con = None  # DuckDB connection with the vocabulary's tables, made on first use
        self.note_mean, self.note_std = load_note_standardisation(path / "fusion")
        self.embedder, self.lines = self._note_encoder(device, cache_dir)
        self.embedder.keep_in_memory(memory_cache)
        self.thresholds = np.array([bundle["thresholds"][n] for n in self.label_names], dtype=np.float64)
        train = bundle["train"]
        self.net = load_net(path / "fusion", lab_encoder(train["labs_encoder"], path / "labs", int(train["seed"] or 0)))
        self.device = torch.device(device)
        self.net.to(self.device)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", cache_dir: str | Path | bool | None = None,
             memory_cache: int = 0, verify: bool = True) -> Predictor:
        """Load a bundle folder written by ``medfuse export`` (file hashes checked with ``verify``).

        ``cache_dir``: the line-embedding cache (None = the default folder, False = no cache). A line
        embedded before has exactly its cached vector; a new one is computed. ``memory_cache``: line vectors
        also kept in memory (at most this many; 0 = none), as the service does instead of a disk cache.
        """
        path = Path(path)
        return cls(path, read_bundle(path, verify=verify), device, cache_dir, memory_cache)

    def _note_encoder(self, device: str, cache_dir: str | Path | bool | None):
        from medfuse.config import NotesConfig
        from medfuse.notes.embeddings import embedder_from_config
        from medfuse.notes.lines import LineEncoder

        tm = self.bundle["text_model"]
        cfg = NotesConfig.model_validate({**self.bundle["notes_config"], "device": device, "cache": cache_dir is not False,
                                          "cache_dir": str(cache_dir) if cache_dir not in (None, False, True) else ""})
        finetune = self.path / "notes" / "finetune"
        try:
            embedder = embedder_from_config(cfg, model=tm["model"], adapter=finetune if finetune.is_dir() else None)
            identity = embedder.settings()["model_identity"]
        except (OSError, ValueError) as e:
            raise BundleError(f"{self.path}: the text model {tm['model']!r} cannot be loaded here ({e})") from None
        if identity != tm["model_identity"]:
            raise BundleError(f"{self.path}: the text model {tm['model']!r} found here (identity {identity[:12]}) is "
                              f"not the one the model was trained with ({tm['model_identity'][:12]})")
        lines = None
        if tm["unit"] == "lines":
            lines = LineEncoder(embedder, tm["fields"], tm["line_clusters"], max_blocks=tm["line_max"])
            lines.load(self.path / "notes")
        return embedder, lines

    def meds_config(self):
        """The ``[prepare.meds]`` mapping the training cohort was read with (MEDS-trained bundles), else the default."""
        from medfuse.config import MedsConfig

        return MedsConfig.model_validate(self.bundle["transform"].get("meds") or {})

    def card(self) -> dict:
        """The model card as JSON."""
        return card(self.bundle)

    def prepare(self, records: list[PatientRecord]) -> Prepared:
        """Records -> model inputs (the transforms of ``prepare``, the notes stage and the training inputs)."""
        if self._con is None:
            self._con = vocabulary_connection(self.vocab)
        cohort, warnings = records_to_cohort(records, self.vocab, self._con)
        return self.prepare_cohort(cohort, warnings)

    def prepare_cohort(self, cohort, warnings: list[list[str]] | None = None) -> Prepared:
        """An (in-memory) cohort over the bundle's vocabulary -> model inputs."""
        from medfuse.notes.text import build_texts
        from medfuse.training.inputs import assemble_fusion_data

        texts = build_texts(cohort, self.bundle["text_model"]["template"])
        rows = np.flatnonzero(texts.has_text)
        dim = self.lines.dim if self.lines is not None else self.embedder.dim
        note = np.zeros((len(texts), dim), np.float32)
        if len(rows) and self.lines is not None:
            note[rows] = self.lines.transform([texts.values[i] for i in rows])
        elif len(rows):
            note[rows] = self.embedder.embed([texts.texts[i] for i in rows])
        data = assemble_fusion_data(cohort, note, ~texts.has_text, self.labs, self.note_mean, self.note_std)
        return Prepared(cohort, data, texts, warnings or [[] for _ in range(len(texts))])

    def probabilities(self, prepared: Prepared) -> np.ndarray:
        """``[N, labels]`` probabilities of a prepared batch."""
        from medfuse.training.fusion import predict

        return predict(self.net, prepared.data, np.arange(len(prepared.data.hadm_ids)), self.device)

    def predict(self, records: list[PatientRecord], explain: bool = False) -> list[dict]:
        """One result per record, in order: probabilities, decisions at the frozen thresholds, warnings
        and, with ``explain``, the lab tests and note lines that pushed each positive label most."""
        if not records:
            return []
        times = [r.admittime.isoformat() if r.admittime else None for r in records]
        return self.results(self.prepare(records), [r.id for r in records], times, explain)

    def predict_cohort(self, cohort, explain: bool = False) -> list[dict]:
        """One result per admission of an in-memory cohort over the bundle's vocabulary (``cohort_chunks``)."""
        adm = cohort.table("admissions")
        times = [t.isoformat() if t else None for t in adm.column("admittime").to_pylist()] \
            if "admittime" in adm.column_names else [None] * adm.num_rows
        return self.results(self.prepare_cohort(cohort), [int(h) for h in cohort.hadm_ids], times, explain)

    def results(self, prepared: Prepared, ids: list, admittimes: list[str | None], explain: bool) -> list[dict]:
        """The result dicts of a prepared batch (``ids`` and ``admittimes`` are echoed back)."""
        prob = self.probabilities(prepared)
        explanations = None
        if explain:
            from medfuse.serving.explain import explain_batch

            explanations = explain_batch(self, prepared, prob)
        out = []
        for i, (record_id, admittime) in enumerate(zip(ids, admittimes, strict=True)):
            result = {
                "id": record_id,
                "admittime": admittime,
                "probabilities": {n: float(p) for n, p in zip(self.label_names, prob[i], strict=True)},
                "decisions": {n: bool(p >= t) for n, p, t in zip(self.label_names, prob[i], self.thresholds,
                                                                 strict=True)},
                "model_version": self.version,
                "warnings": prepared.warnings[i],
            }
            if explanations is not None:
                result["explanations"] = explanations[i]
            out.append(result)
        return out
