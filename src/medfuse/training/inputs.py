"""Assemble the fusion model's inputs for every cohort admission: note vectors, lab tokens, labels; the lab and
note stages are run first where their runs are missing (:func:`run_inputs`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfuse import distributed
from medfuse.config import MedfuseConfig
from medfuse.data.cohort import LAB_AGGREGATES, Cohort
from medfuse.progress import ProgressFn


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


def note_statistics(note: np.ndarray, note_missing: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (+1e-6) of the training split's note vectors (0 and 1
    when no training admission has one): note vectors are tiny after L2 normalisation."""
    fit_rows = (split == "train") & ~note_missing
    if not fit_rows.any():
        return np.zeros(note.shape[1], np.float32), np.ones(note.shape[1], np.float32)
    return note[fit_rows].mean(axis=0), note[fit_rows].std(axis=0) + np.float32(1e-6)


def assemble_fusion_data(cohort: Cohort, note: np.ndarray, note_missing: np.ndarray, embedder,
                         note_mean: np.ndarray, note_std: np.ndarray, batch_size: int = 1024) -> FusionData:
    """The fusion inputs of every cohort admission from its note vectors (cohort row order), a
    :class:`~medfuse.labs.LabEmbedder` and the note standardisation: training and prediction both call it."""
    note = note.astype(np.float32)
    note = np.where(note_missing[:, None], 0.0, (note - note_mean) / note_std).astype(np.float32)
    raw = embedder.cohort_values(cohort)
    z = embedder.normalize(raw).astype(np.float32)
    pooled, tokens = embedder.embed(raw, batch_size=batch_size, numpy=True)
    return FusionData(
        hadm_ids=cohort.hadm_ids,
        subject_ids=cohort.table("admissions").column("subject_id").to_numpy(),
        split=cohort.split,
        y=cohort.labels(),
        label_names=cohort.label_names,
        note=note,
        note_missing=note_missing.astype(bool),
        lab_x=np.nan_to_num(z, nan=0.0),
        lab_observed=~np.isnan(z),
        lab_tokens=np.asarray(tokens, dtype=np.float32),
        lab_pooled=np.asarray(pooled, dtype=np.float32),
        lab_values=lab_value_channels(cohort, embedder.keys),
    )


def aligned_note_embeddings(cohort: Cohort, notes_run: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, missing)`` of an ``embed-notes`` run in the cohort's row order."""
    from medfuse.notes.pipeline import load_note_embeddings

    hadm_ids = cohort.hadm_ids
    ids, vectors, missing = load_note_embeddings(notes_run)
    position = {h: i for i, h in enumerate(ids)}
    absent = [h for h in hadm_ids if h not in position]
    if absent:
        raise ValueError(f"{notes_run}: no note embedding for {len(absent)} cohort admissions (e.g. {absent[0]}); "
                         "re-run embed-notes on this cohort")
    take = np.fromiter((position[h] for h in hadm_ids), dtype=np.int64, count=len(hadm_ids))
    return vectors[take].astype(np.float32), missing[take].astype(bool)


def load_fusion_data(cohort: str | Path | Cohort, labs_run: str | Path, notes_run: str | Path,
                     device: str = "auto", batch_size: int = 1024) -> FusionData:
    """Join a cohort with an MLTM run (``pretrain-labs``) and a note-embedding run (``embed-notes``).

    Note vectors are standardised per dimension with training-split statistics (missing rows stay 0).
    """
    from medfuse.labs import LabEmbedder

    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    note, note_missing = aligned_note_embeddings(cohort, notes_run)
    mean, std = note_statistics(note, note_missing, cohort.split)
    return assemble_fusion_data(cohort, note, note_missing, LabEmbedder.load(labs_run, device=device), mean, std,
                                batch_size)


RECONSTRUCTION_FILE = "reconstruction.json"


def ensure_labs_run(cohort: Cohort, run_dir: Path, cfg: MedfuseConfig, progress: ProgressFn) -> Path:
    """The MLTM run to use: ``train.labs_run`` if set, else ``run_dir/labs`` (pretrained when absent)."""
    from medfuse.labs import pretrain
    from medfuse.labs.evaluate import reconstruction_table
    from medfuse.labs.train import MODEL_FILE

    path = Path(cfg.train.labs_run) if cfg.train.labs_run else run_dir / "labs"
    if not (path / MODEL_FILE).exists():
        if cfg.train.labs_run:
            raise FileNotFoundError(f"{path}: not a pretrain-labs run (no {MODEL_FILE})")
        pretrain(cohort, path, cfg.labs, progress=progress)
    if distributed.is_main() and not (path / RECONSTRUCTION_FILE).exists():
        (path / RECONSTRUCTION_FILE).write_text(json.dumps(reconstruction_table(cohort, path), indent=2))
    return path


def ensure_notes_run(cohort: Cohort, run_dir: Path, cfg: MedfuseConfig, progress: ProgressFn) -> Path:
    """The note-embedding run to use: ``train.notes_run`` if set, else ``run_dir/notes`` (embedded when absent).

    With ``notes.finetune`` the note model is first fine-tuned with LoRA on the training split into
    ``run_dir/finetune`` (kept when already there, so ``--resume`` passes it) and the notes are embedded with it.
    """
    from medfuse.notes.finetune import FINETUNE_CONFIG, finetune_notes
    from medfuse.notes.pipeline import EMBEDDINGS_FILE, embed_cohort

    path = Path(cfg.train.notes_run) if cfg.train.notes_run else run_dir / "notes"
    if not (path / EMBEDDINGS_FILE).exists():
        if cfg.train.notes_run:
            raise FileNotFoundError(f"{path}: not an embed-notes run (no {EMBEDDINGS_FILE})")
        adapter = None
        if cfg.notes.finetune:
            adapter = run_dir / "finetune"
            if not (adapter / FINETUNE_CONFIG).exists():
                finetune_notes(cohort, adapter, cfg.notes, progress=progress)
        embed_cohort(cohort, path, cfg.notes, model=None if adapter else cfg.notes.model, adapter=adapter,
                     progress=progress)
    return path


def lab_encoder(mode: str, labs_run: Path, seed: int):
    """The MLTM encoder the fusion model trains with: None (frozen), the pretrained one, or a fresh one."""
    if mode == "frozen":
        return None
    import torch

    from medfuse.labs import LabEmbedder
    from medfuse.labs.model import MLTM

    model = LabEmbedder.load(labs_run, device="cpu").model
    if mode == "scratch":
        torch.manual_seed(seed)
        model = MLTM(model.cfg)
    return model.train()


def run_inputs(cohort_path: str | Path, run_dir: Path, cfg: MedfuseConfig, progress: ProgressFn):
    """``(cohort, labs_run, notes_run, FusionData)`` for ``run_dir``: steps 2-3 are run where missing."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cohort = Cohort(cohort_path)
    labs_run = ensure_labs_run(cohort, run_dir, cfg, progress)
    notes_run = ensure_notes_run(cohort, run_dir, cfg, progress)
    distributed.barrier()  # under torchrun: rank 0 has written both runs
    return cohort, labs_run, notes_run, load_fusion_data(cohort, labs_run, notes_run)
