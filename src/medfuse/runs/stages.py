"""The stages that read and write run folders (:mod:`medfuse.runs.layout`): the MLTM and note runs a training
run needs (run where missing), its fusion inputs, training with thresholds tuned on validation, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medfuse import distributed
from medfuse.config import EvaluateConfig, MedfuseConfig
from medfuse.data.cohort import Cohort
from medfuse.progress import ProgressFn, no_progress
from medfuse.runs.layout import RunFolder, is_finetune_run, is_labs_run, is_notes_run, labs_reconstruction


def ensure_labs_run(cohort: Cohort, run_dir: Path, cfg: MedfuseConfig, progress: ProgressFn) -> Path:
    """The MLTM run to use: ``train.labs_run`` if set, else ``run_dir/labs`` (pretrained when absent)."""
    from medfuse.labs import pretrain
    from medfuse.labs.evaluate import reconstruction_table

    path = Path(cfg.train.labs_run) if cfg.train.labs_run else RunFolder(run_dir).labs
    if not is_labs_run(path):
        if cfg.train.labs_run:
            raise FileNotFoundError(f"{path}: not a pretrain-labs run (no model)")
        pretrain(cohort, path, cfg.labs, progress=progress)
    reconstruction = labs_reconstruction(path)
    if distributed.is_main() and not reconstruction.exists():
        reconstruction.write_text(json.dumps(reconstruction_table(cohort, path), indent=2))
    return path


def ensure_notes_run(cohort: Cohort, run_dir: Path, cfg: MedfuseConfig, progress: ProgressFn) -> Path:
    """The note-embedding run to use: ``train.notes_run`` if set, else ``run_dir/notes`` (embedded when absent).

    With ``notes.finetune`` the note model is first fine-tuned with LoRA on the training split into
    ``run_dir/finetune`` (kept when already there, so ``--resume`` passes it) and the notes are embedded with it.
    """
    from medfuse.notes.embeddings import embed_cohort
    from medfuse.notes.finetune import finetune_notes

    run = RunFolder(run_dir)
    path = Path(cfg.train.notes_run) if cfg.train.notes_run else run.notes
    if not is_notes_run(path):
        if cfg.train.notes_run:
            raise FileNotFoundError(f"{path}: not an embed-notes run (no embeddings)")
        adapter = None
        if cfg.notes.finetune:
            adapter = run.finetune
            if not is_finetune_run(adapter):
                finetune_notes(cohort, adapter, cfg.notes, progress=progress)
        embed_cohort(cohort, path, cfg.notes, model=None if adapter else cfg.notes.model, adapter=adapter,
                     progress=progress)
    return path


def run_inputs(cohort_path: str | Path, run_dir: Path, cfg: MedfuseConfig, progress: ProgressFn):
    """``(cohort, labs_run, notes_run, FusionData)`` for ``run_dir``: the MLTM and note runs are made where
    missing and the fusion inputs are built into (or reused from) ``run_dir/inputs``."""
    from medfuse.training.inputs import load_fusion_data

    run_dir.mkdir(parents=True, exist_ok=True)
    cohort = Cohort(cohort_path)
    labs_run = ensure_labs_run(cohort, run_dir, cfg, progress)
    notes_run = ensure_notes_run(cohort, run_dir, cfg, progress)
    distributed.barrier()  # under torchrun: rank 0 has written both runs
    data = load_fusion_data(cohort, labs_run, notes_run, store=RunFolder(run_dir).inputs, progress=progress)
    return cohort, labs_run, notes_run, data


def load_run_data(run_dir: Path):
    """``(FusionData, run.json content)`` of a trained run (its inputs memory-mapped from ``RUN/inputs``)."""
    from medfuse.training.inputs import load_fusion_data

    run = RunFolder(run_dir)
    info = run.info()
    return load_fusion_data(info["cohort"], info["labs_run"], info["notes_run"], store=run.inputs), info


def train_run(cohort_path: str | Path, run_dir: str | Path, cfg: MedfuseConfig, resume: bool = False,
              progress: ProgressFn | None = None) -> dict:
    """Run what is missing of ``pretrain-labs`` / ``embed-notes``, then train and tune thresholds on val.

    Under torchrun every rank runs it (each stage shares its work out); rank 0 alone writes ``run_dir``.
    """
    from medfuse.evaluation.thresholds import rule_from_config, tune_thresholds
    from medfuse.torch_utils import resolve_device
    from medfuse.training.fusion import fit, lab_encoder, load_net, predict

    progress = progress or no_progress
    run = RunFolder(run_dir)
    cohort, labs_run, notes_run, data = run_inputs(cohort_path, run.root, cfg, progress)
    device = resolve_device(cfg.train.device)
    info = {"cohort": str(cohort.path.resolve()), "labs_run": str(labs_run.resolve()),
            "notes_run": str(notes_run.resolve()), "config": cfg.model_dump(mode="json"),
            "world_size": distributed.world_size(), "backend": distributed.backend(),
            "device": str(distributed.rank_device(device))}  # rank 0's
    if distributed.is_main():
        run.info_file.write_text(json.dumps(info, indent=2))
    encoder = lab_encoder(cfg.train.labs_encoder, labs_run, cfg.train.seed)
    summary = fit(data, run.root, cfg.train, encoder, resume=resume, progress=progress)
    if distributed.is_main():
        net = load_net(run.root, encoder).to(device)  # the best epoch's weights, the encoder's included
        val = data.rows("val")
        thresholds = tune_thresholds(data.y[val], predict(net, data, val, device), **rule_from_config(cfg.evaluate))
        run.thresholds.write_text(json.dumps(dict(zip(data.label_names, map(float, thresholds))), indent=2))
    distributed.barrier()
    return {**summary, "run": str(run.root)}


def evaluate_run(run_dir: str | Path, split: str = "test", n_resamples: int = 1000,
                 progress: ProgressFn | None = None) -> dict:
    """Predict ``split`` with a trained run; write ``predictions_<split>.parquet`` and ``metrics_<split>.json``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medfuse.evaluation.metrics import evaluate_predictions
    from medfuse.evaluation.subgroups import cohort_subgroups
    from medfuse.evaluation.thresholds import rule_from_config
    from medfuse.torch_utils import resolve_device
    from medfuse.training.fusion import lab_encoder, load_net, predict, read_model_config

    progress = progress or no_progress
    run = RunFolder(run_dir)
    data, info = load_run_data(run.root)
    train_cfg, _ = read_model_config(run.root)
    net = load_net(run.root, lab_encoder(train_cfg.labs_encoder, Path(info["labs_run"]), train_cfg.seed))
    device = resolve_device(train_cfg.device)
    rows = data.rows(split)
    prob = predict(net.to(device), data, rows, device)
    thresholds = np.array([json.loads(run.thresholds.read_text())[n] for n in data.label_names])
    progress(f"evaluate {split}", 0.3, f"{n_resamples} bootstrap resamples")
    subgroups, not_available = cohort_subgroups(Cohort(info["cohort"]).table("admissions"), rows,
                                                data.note_missing[rows], data.lab_missing[rows])
    tuned_with = info["config"].get("evaluate", {})  # runs trained before threshold rules used f1_max
    rule = rule_from_config(EvaluateConfig.model_validate(tuned_with)) if "threshold_rule" in tuned_with else {"rule": "f1_max"}
    metrics = evaluate_predictions(data.y[rows], prob, thresholds, groups=data.subject_ids[rows],
                                   label_names=data.label_names, subgroups=subgroups, n_resamples=n_resamples, seed=0,
                                   threshold_rule=rule)
    metrics["subgroups_not_available"] = not_available
    metrics["split"] = split
    run.metrics(split).write_text(json.dumps(metrics, indent=2))
    columns = {"hadm_id": data.hadm_ids[rows], "subject_id": data.subject_ids[rows]}
    for j, name in enumerate(data.label_names):
        columns[f"{name}__prob"] = prob[:, j]
        columns[f"{name}__pred"] = prob[:, j] >= thresholds[j]
        columns[f"{name}__true"] = data.y[rows, j].astype(np.int8)
    pq.write_table(pa.table(columns), run.predictions(split))
    progress(f"evaluate {split}", 1.0)
    return metrics
