"""End-to-end runs: train and evaluate, reusing the outputs of earlier stages (compare and demo build on these).

A run folder (``medfuse train COHORT --out RUN``) holds:

``run.json``          cohort, lab and note runs used, the full configuration, ``world_size``, ``backend``, ``device``
``labs/``             the MLTM run (``pretrain-labs``), unless ``train.labs_run`` names one
``notes/``            the note-embedding run (``embed-notes``), unless ``train.notes_run`` names one
``inputs/``           the fusion inputs as memory-mapped .npy files (rebuilt when a run they came from changes)
``model.safetensors`` best weights; ``checkpoint.safetensors`` the last epoch's full state
``history.json``      per-epoch BCE, MI estimate, validation macro-AUPRC
``thresholds.json``   per-label decision thresholds tuned on the validation split
``predictions_<split>.parquet``, ``metrics_<split>.json``  written by ``evaluate``
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medfuse.config import EvaluateConfig, MedfuseConfig, TrainConfig
from medfuse.data.cohort import Cohort
from medfuse.progress import ProgressFn, no_progress
from medfuse.training.inputs import lab_encoder, run_inputs

RUN_FILE = "run.json"
THRESHOLDS_FILE = "thresholds.json"


def load_run_data(run_dir: Path):
    """``(FusionData, run.json content)`` of a trained run (its inputs memory-mapped from ``RUN/inputs``)."""
    from medfuse.training.inputs import STORE_DIR, load_fusion_data

    info = json.loads((run_dir / RUN_FILE).read_text())
    return load_fusion_data(info["cohort"], info["labs_run"], info["notes_run"], store=run_dir / STORE_DIR), info


def train_run(cohort_path: str | Path, run_dir: str | Path, cfg: MedfuseConfig, resume: bool = False,
              progress: ProgressFn | None = None) -> dict:
    """Run what is missing of ``pretrain-labs`` / ``embed-notes``, then train and tune thresholds on val.

    Under torchrun every rank runs it (each stage shares its work out); rank 0 alone writes ``run_dir``.
    """
    from medfuse import distributed
    from medfuse.evaluation.thresholds import rule_from_config, tune_thresholds
    from medfuse.torch_utils import resolve_device
    from medfuse.training.trainer import fit, load_net, predict

    progress = progress or no_progress
    run_dir = Path(run_dir)
    cohort, labs_run, notes_run, data = run_inputs(cohort_path, run_dir, cfg, progress)
    info = {"cohort": str(cohort.path.resolve()), "labs_run": str(labs_run.resolve()),
            "notes_run": str(notes_run.resolve()), "config": cfg.model_dump(mode="json"),
            "world_size": distributed.world_size(), "backend": distributed.backend(),
            "device": str(distributed.rank_device(resolve_device(cfg.train.device)))}  # rank 0's
    if distributed.is_main():
        (run_dir / RUN_FILE).write_text(json.dumps(info, indent=2))
    summary = fit(data, run_dir, cfg.train, lab_encoder(cfg.train.labs_encoder, labs_run, cfg.train.seed),
                  resume=resume, progress=progress)
    if distributed.is_main():
        net = load_net(run_dir, data, lab_encoder(cfg.train.labs_encoder, labs_run, cfg.train.seed))
        device = resolve_device(cfg.train.device)
        val = data.rows("val")
        thresholds = tune_thresholds(data.y[val], predict(net.to(device), data, val, device),
                                     **rule_from_config(cfg.evaluate))
        (run_dir / THRESHOLDS_FILE).write_text(json.dumps(dict(zip(data.label_names, map(float, thresholds))),
                                                          indent=2))
    distributed.barrier()
    return {**summary, "run": str(run_dir)}


def evaluate_run(run_dir: str | Path, split: str = "test", n_resamples: int = 1000,
                 progress: ProgressFn | None = None) -> dict:
    """Predict ``split`` with a trained run; write ``predictions_<split>.parquet`` and ``metrics_<split>.json``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medfuse.evaluation.metrics import evaluate_predictions
    from medfuse.evaluation.subgroups import cohort_subgroups
    from medfuse.evaluation.thresholds import rule_from_config
    from medfuse.torch_utils import resolve_device
    from medfuse.training.trainer import load_net, predict

    progress = progress or no_progress
    run_dir = Path(run_dir)
    data, info = load_run_data(run_dir)
    train_cfg = TrainConfig.model_validate(info["config"]["train"])
    net = load_net(run_dir, data, lab_encoder(train_cfg.labs_encoder, Path(info["labs_run"]), train_cfg.seed))
    device = resolve_device(train_cfg.device)
    rows = data.rows(split)
    prob = predict(net.to(device), data, rows, device)
    thresholds = np.array([json.loads((run_dir / THRESHOLDS_FILE).read_text())[n] for n in data.label_names])
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
    (run_dir / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=2))
    columns = {"hadm_id": data.hadm_ids[rows], "subject_id": data.subject_ids[rows]}
    for j, name in enumerate(data.label_names):
        columns[f"{name}__prob"] = prob[:, j]
        columns[f"{name}__pred"] = prob[:, j] >= thresholds[j]
        columns[f"{name}__true"] = data.y[rows, j].astype(np.int8)
    pq.write_table(pa.table(columns), run_dir / f"predictions_{split}.parquet")
    progress(f"evaluate {split}", 1.0)
    return metrics
