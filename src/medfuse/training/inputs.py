"""Assemble the fusion model's inputs for every cohort admission: note vectors, lab tokens, labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfuse.data.cohort import LAB_AGGREGATES, Cohort


@dataclass
class FusionData:
    """Everything the fusion model and its baselines see, one row per cohort admission (cohort order).

    ``lab_x`` holds normalised lab values (0 where not observed) and ``lab_observed`` the mask, for an
    encoder trained with the fusion model; ``lab_tokens`` / ``lab_pooled`` are the frozen pretrained
    MLTM encoder's output on them, computed once and shared by every model of a comparison.
    ``lab_values`` [N, T, 5] holds, per test of the MLTM vocabulary, its normalised ``last``, ``mean``,
    ``min`` and ``max`` (0 where not measured) and a measured flag: the skip around the encoder
    (``train.lab_values``).
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

    @property
    def lab_missing(self) -> np.ndarray:
        return ~self.lab_observed.any(axis=1)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def tensors(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """The model inputs of ``rows`` as tensors on ``device`` (keys match the model's forward)."""
        return {
            "note": torch.from_numpy(self.note[rows]).to(device),
            "note_missing": torch.from_numpy(self.note_missing[rows]).to(device),
            "lab_x": torch.from_numpy(self.lab_x[rows]).to(device),
            "lab_observed": torch.from_numpy(self.lab_observed[rows]).to(device),
            "lab_tokens": torch.from_numpy(self.lab_tokens[rows]).to(device),
            "lab_pooled": torch.from_numpy(self.lab_pooled[rows]).to(device),
            "lab_values": torch.from_numpy(self.lab_values[rows]).to(device),
            "lab_missing": torch.from_numpy(self.lab_missing[rows]).to(device),
        }


def lab_value_channels(cohort: Cohort, keys: list[str]) -> np.ndarray:
    """``[N, len(keys), 5]`` float32: each test's normalised last, mean, min, max (0 where not measured)
    and a measured flag; tests of ``keys`` that the cohort lacks are all zeros (never measured)."""
    position = {k: i for i, k in enumerate(cohort.lab_keys)}
    take = [position.get(k, -1) for k in keys]
    z = np.stack([cohort.lab_values(None, a) for a in LAB_AGGREGATES], axis=-1)  # [N, T_cohort, 4]
    z = np.concatenate([z, np.full_like(z[:, :1], np.nan)], axis=1)[:, take]  # index -1: an all-NaN column
    measured = ~np.isnan(z[..., :1])
    return np.concatenate([np.nan_to_num(z, nan=0.0), measured], axis=-1).astype(np.float32)


def load_fusion_data(cohort: str | Path | Cohort, labs_run: str | Path, notes_run: str | Path,
                     device: str = "auto", batch_size: int = 1024) -> FusionData:
    """Join a cohort with an MLTM run (``pretrain-labs``) and a note-embedding run (``embed-notes``).

    Note vectors are standardised per dimension with training-split statistics (missing rows stay 0).
    """
    from medfuse.labs import LabEmbedder
    from medfuse.notes.pipeline import load_note_embeddings

    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    hadm_ids = cohort.hadm_ids
    ids, vectors, missing = load_note_embeddings(notes_run)
    position = {h: i for i, h in enumerate(ids)}
    absent = [h for h in hadm_ids if h not in position]
    if absent:
        raise ValueError(f"{notes_run}: no note embedding for {len(absent)} cohort admissions (e.g. {absent[0]}); "
                         "re-run embed-notes on this cohort")
    take = np.fromiter((position[h] for h in hadm_ids), dtype=np.int64, count=len(hadm_ids))

    note = vectors[take].astype(np.float32)
    note_missing = missing[take].astype(bool)
    fit_rows = (cohort.split == "train") & ~note_missing
    if fit_rows.any():  # standardise each dimension with training statistics: embeddings are tiny after L2
        mean, std = note[fit_rows].mean(axis=0), note[fit_rows].std(axis=0) + 1e-6
        note = np.where(note_missing[:, None], 0.0, (note - mean) / std).astype(np.float32)

    embedder = LabEmbedder.load(labs_run, device=device)
    raw = embedder.cohort_values(cohort)
    z = embedder.normalize(raw).astype(np.float32)
    observed = ~np.isnan(z)
    pooled, tokens = embedder.embed(raw, batch_size=batch_size, numpy=True)
    return FusionData(
        hadm_ids=hadm_ids,
        subject_ids=cohort.table("admissions").column("subject_id").to_numpy(),
        split=cohort.split,
        y=cohort.labels(),
        label_names=cohort.label_names,
        note=note,
        note_missing=note_missing,
        lab_x=np.nan_to_num(z, nan=0.0),
        lab_observed=observed,
        lab_tokens=np.asarray(tokens, dtype=np.float32),
        lab_pooled=np.asarray(pooled, dtype=np.float32),
        lab_values=lab_value_channels(cohort, embedder.keys),
    )
