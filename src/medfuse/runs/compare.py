"""Baselines, ablations and the lambda sweep on one split, several seeds, one table.

Every neural model is trained by the same :func:`~medfuse.training.fusion.fit` with the same
budget, schedule and early-stopping rule (validation macro-AUPRC) and gets the same tuning: each
combination of ``compare.grid`` is trained with the first seed and the best on validation macro-AUPRC
is kept for every seed (MEDFuse's ablations and lambda sweep reuse MEDFuse's choice). The classical
models choose their hyper-parameters on the same validation split. Thresholds are tuned on validation
for every model (``evaluate.threshold_rule``), then frozen for test.

MEDFuse is compared with every other row by a paired patient-level bootstrap of the test difference
(MEDFuse minus the row) in macro-AUPRC and macro-F1, both models' first seed, on the same resamples.
The first seed's validation and test probabilities of every row are kept in
``models/<slug>/predictions_seed0.parquet`` so the differences can be recomputed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfuse.config import MedfuseConfig
from medfuse.evaluation.comparison import HEADLINE, comparison_markdown, settings_text
from medfuse.progress import ProgressFn, no_progress
from medfuse.runs.layout import COMPARE_FILE, embed_config

if TYPE_CHECKING:
    from medfuse.data import Cohort
    from medfuse.notes.text import NoteTexts
    from medfuse.training.inputs import FusionData

SINGLE_MODALITY = ("labs_only", "notes_only")
INHERITS_MEDFUSE = ("ablation", "lambda sweep")  # groups that reuse MEDFuse's tuned settings
PREDICTIONS_FILE = "predictions_seed0.parquet"


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a neural model (``train`` overrides) or a classical one (``classical``)."""

    name: str
    group: str
    train: dict = field(default_factory=dict)
    classical: str = ""
    frozen_notes: bool = False  # with a fine-tuned note model: this row reads the frozen model's note vectors


FINETUNED_ROWS = (  # added when the notes are embedded by a fine-tuned model (notes.finetune): the paper's
    # baseline, and the frozen note model's rows beside the fine-tuned ones
    Variant("Fine-tuned language model (notes)", "notes only", classical="finetuned_lm"),
    Variant("Note embedding + MLP (notes, frozen model)", "frozen note model", {"kind": "notes_only"},
            frozen_notes=True),
    Variant("MEDFuse (frozen note model)", "frozen note model", {"kind": "medfuse"}, frozen_notes=True),
)


def variants(mi_weights: list[float], finetuned: bool = False) -> list[Variant]:
    """Baselines, MEDFuse, its ablations and the lambda sweep (MEDFuse's default lambda is 0.1); with
    ``finetuned`` also :data:`FINETUNED_ROWS`."""
    rows = [
        Variant("LightGBM (labs)", "labs only", classical="lightgbm"),
        Variant("MLTM + MLP (labs)", "labs only", {"kind": "labs_only"}),
        Variant("TF-IDF + logistic regression (notes)", "notes only", classical="tfidf"),
        Variant("Note embedding + MLP (notes)", "notes only", {"kind": "notes_only"}),
        Variant("Concatenation + MLP", "fusion", {"kind": "concat"}),
        Variant("Tensor Fusion Network", "fusion", {"kind": "tfn"}),
        Variant("MEDFuse", "MEDFuse", {"kind": "medfuse"}),
        Variant("MEDFuse w/o MI loss", "ablation", {"kind": "medfuse", "mi_weight": 0.0}),
        Variant("MEDFuse w/o Kronecker term", "ablation", {"kind": "medfuse", "use_kronecker": False}),
        Variant("MEDFuse w/o MLTM pre-training", "ablation", {"kind": "medfuse", "labs_encoder": "scratch"}),
        Variant("MEDFuse w/o cross-attention", "ablation", {"kind": "medfuse", "use_cross_attention": False}),
    ]
    if finetuned:  # the note-only rows after the note-embedding MLP, frozen MEDFuse after MEDFuse
        notes_only, medfuse = FINETUNED_ROWS[:2], FINETUNED_ROWS[2:]
        at = [r.name for r in rows].index("MEDFuse") + 1
        rows[at:at] = medfuse
        at = next(i for i, r in enumerate(rows) if r.train.get("kind") == "notes_only") + 1
        rows[at:at] = notes_only
    covered = {0.0, 0.1}
    rows += [Variant(f"MEDFuse lambda={w:g}", "lambda sweep", {"kind": "medfuse", "mi_weight": w})
             for w in mi_weights if w not in covered]
    return rows


def headline(metrics: dict) -> dict[str, float]:
    """The HEADLINE figures of a :func:`~medfuse.evaluation.metrics.compute_metrics` result, e.g. ``macro_f1``."""
    return {m: metrics[m.split("_")[0]][m.split("_")[1]] for m in HEADLINE}


def tuning_grid(grid: dict[str, list], kind: str) -> list[dict]:
    """Every combination of ``grid``'s values that can change a model of ``kind``, the first values first.

    ``modality_dropout`` is left out for single-modality models, which ignore it.
    """
    keys = [k for k in grid if not (k == "modality_dropout" and kind in SINGLE_MODALITY)]
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _inherits(v: Variant, chosen: list[Variant]) -> bool:
    """Whether ``v`` reuses MEDFuse's tuned settings: an ablation or lambda row, with MEDFuse in the run."""
    return v.group in INHERITS_MEDFUSE and any(c.name == "MEDFuse" for c in chosen)


def slug(name: str) -> str:
    """A row's folder name under ``models/``: ``"Concatenation + MLP"`` -> ``"concatenation-mlp"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class Job:
    """One training of the comparison: a grid point (``tune`` = its index) or a seed run of a row."""

    variant: Variant
    settings: dict
    seed: int
    tune: int | None
    index: int  # the row's place in the table, for ordering
    label: str

    @property
    def key(self) -> tuple:
        """``(row name, "tune", grid index)`` or ``(row name, "seed", seed)``."""
        return (self.variant.name, "seed", self.seed) if self.tune is None else (self.variant.name, "tune", self.tune)

    def run_dir(self, out: Path) -> Path:
        return out / "models" / slug(self.variant.name) / (f"seed{self.seed}" if self.tune is None else f"tune{self.tune}")


@dataclass
class JobInputs:
    """What every job reads: the config, cohort, MLTM run folder, fusion inputs, note texts and output folder."""

    cfg: MedfuseConfig
    cohort: Cohort
    labs_run: Path
    data: FusionData
    notes: NoteTexts
    out: Path
    adapter: Path | None = None  # the fine-tuned note model's run (finetune-notes), when the notes used one
    frozen_data: FusionData | None = None  # the fusion inputs with the frozen note model's vectors


def run_job(inputs: JobInputs, job: Job, report: ProgressFn) -> tuple[np.ndarray, float]:
    """Train one job on one thread; its probabilities for every cohort row (val and test filled for neural
    rows) and seconds. ``report(fraction, info)`` gets the training's progress below 1.

    One thread (torch, OpenMP, BLAS) always, in a worker or not: float sums, hence the last digits, depend on
    the thread count; and these small models are no faster on more, while idle threads that spin for work
    slow everything else down when the cores are shared.
    """
    import torch
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return _train(inputs, job, report)
    finally:
        torch.set_num_threads(threads)


def _train(inputs: JobInputs, job: Job, report: ProgressFn) -> tuple[np.ndarray, float]:
    from medfuse.runs.baselines import lightgbm_labs, tfidf_logreg
    from medfuse.torch_utils import resolve_device
    from medfuse.training.fusion import fit, lab_encoder, load_net, predict

    t0 = time.perf_counter()
    v, data = job.variant, inputs.data
    if v.classical == "lightgbm":
        return lightgbm_labs(inputs.cohort, seed=job.seed), round(time.perf_counter() - t0, 2)
    if v.classical == "tfidf":
        return tfidf_logreg(inputs.cohort, inputs.notes.texts, seed=job.seed), round(time.perf_counter() - t0, 2)
    if v.classical == "finetuned_lm":
        from medfuse.notes.finetune import head_probabilities

        prob = head_probabilities(inputs.adapter, inputs.notes, inputs.cohort.label_names, inputs.cfg.notes)
        return prob, round(time.perf_counter() - t0, 2)
    if v.frozen_notes:
        data = inputs.frozen_data
    train = inputs.cfg.train
    tcfg = train.model_validate({**train.model_dump(), **job.settings, **v.train, "seed": job.seed})
    run_dir, device = job.run_dir(inputs.out), resolve_device(tcfg.device)
    encoder = lab_encoder(tcfg.labs_encoder, inputs.labs_run, job.seed)
    fit(data, run_dir, tcfg, encoder, progress=lambda s, f, info="": report(f, info) if f < 1 else None)
    net = load_net(run_dir, encoder).to(device)
    val, test = data.rows("val"), data.rows("test")
    prob = np.zeros_like(data.y)
    prob[val], prob[test] = predict(net, data, val, device), predict(net, data, test, device)
    return prob, round(time.perf_counter() - t0, 2)


def worker_count(requested: int, device) -> int:
    """Parallel trial processes: ``requested``, 0 = one per usable CPU core; 1 on a GPU and off Linux (no fork)."""
    if device.type != "cpu" or sys.platform != "linux":
        return 1
    return requested or len(os.sched_getaffinity(0))


_WORKER: dict = {}  # set in the parent before the workers fork: inputs and the progress queue


def _run_in_worker(job: Job, stage: str) -> tuple[np.ndarray, float]:
    queue = _WORKER["queue"]
    return run_job(_WORKER["inputs"], job, lambda f, info="": queue.put((stage, f, info)))


def run_jobs(inputs: JobInputs, jobs: list[Job], on_done, workers: int, total: int, progress: ProgressFn) -> None:
    """Run ``jobs`` and the jobs ``on_done(job, prob, seconds)`` returns, ``workers`` at a time.

    With ``workers > 1`` each runs in a forked worker process (the parent schedules, relays progress and
    scores finished rows; an error stops the workers at once); otherwise in this process. Ready jobs start
    MEDFuse-kind ones first (the longest, and MEDFuse's tuning unlocks its ablations), then classical ones,
    then the rest, each in table order.
    """
    import queue

    from medfuse.trainer import macro_auprc

    ready, running, started, pool, reports = list(jobs), 0, 0, None, None
    finished: queue.Queue = queue.Queue()  # (job, stage, result or None, exception or None)
    val = inputs.data.rows("val")
    if workers > 1:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        reports = context.SimpleQueue()  # written synchronously: a job's reports arrive before its result
        _WORKER.update(inputs=inputs, queue=reports)
        pool = context.Pool(workers)
    try:
        while ready or running:
            while ready and running < workers:
                ready.sort(key=lambda j: (j.variant.train.get("kind") != "medfuse", not j.variant.classical, j.index,
                                          j.tune if j.tune is not None else 0, j.seed))
                job, started, running = ready.pop(0), started + 1, running + 1
                stage = f"compare {started}/{total}"
                progress(stage, 0.0, job.label)
                if pool is None:
                    finished.put((job, stage, run_job(inputs, job, lambda f, info="", s=stage: progress(s, f, info)),
                                  None))
                else:
                    pool.apply_async(_run_in_worker, (job, stage),
                                     callback=lambda r, j=job, s=stage: finished.put((j, s, r, None)),
                                     error_callback=lambda e, j=job, s=stage: finished.put((j, s, None, e)))
            try:
                job, stage, result, error = finished.get(timeout=0.25)
            except queue.Empty:
                job = None
            while reports is not None and not reports.empty():
                progress(*reports.get())
            if job is None:
                continue
            if error is not None:
                raise error
            running -= 1
            prob, seconds = result
            progress(stage, 1.0, f"{job.label}: val macro-AUPRC {macro_auprc(inputs.data.y[val], prob[val]):.3f}")
            ready += on_done(job, prob, seconds)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        _WORKER.clear()


def frozen_note_inputs(cohort: Cohort, labs_run: Path, out: Path, cfg: MedfuseConfig, progress: ProgressFn):
    """Fusion inputs with the frozen note model (``notes.model``, no adapter), embedded into
    ``out/notes-frozen`` when absent."""
    from medfuse.notes.embeddings import EMBEDDINGS_FILE, embed_cohort
    from medfuse.training.inputs import load_fusion_data

    path = out / "notes-frozen"
    if not (path / EMBEDDINGS_FILE).exists():
        embed_cohort(cohort, path, cfg.notes, model=cfg.notes.model, progress=progress)
    return load_fusion_data(cohort, labs_run, path)


def compare(cohort_path: str | Path, out: str | Path, cfg: MedfuseConfig, progress: ProgressFn | None = None) -> dict:
    """Train and evaluate every variant with every seed; write ``compare.json`` and ``compare.md``.

    Jobs run ``compare.workers`` at a time (:func:`run_jobs`); every job's numbers depend only on its row,
    settings and seed, so the table is the same for any number of workers.
    """
    from medfuse.evaluation.metrics import compute_metrics, evaluate_predictions
    from medfuse.evaluation.thresholds import rule_from_config, tune_thresholds
    from medfuse.notes.text import build_texts
    from medfuse.runs.stages import run_inputs
    from medfuse.torch_utils import resolve_device
    from medfuse.trainer import macro_auprc

    progress = progress or no_progress
    out = Path(out)
    cohort, labs_run, notes_run, data = run_inputs(cohort_path, out, cfg, progress)
    inputs = JobInputs(cfg, cohort, labs_run, data, build_texts(cohort, cfg.notes.template), out)
    adapter = embed_config(notes_run).get("adapter")
    if adapter:  # the paper's configuration: the frozen note model's rows go beside the fine-tuned ones
        inputs.adapter, inputs.frozen_data = Path(adapter), frozen_note_inputs(cohort, labs_run, out, cfg, progress)
    val, test = data.rows("val"), data.rows("test")
    seeds = cfg.compare.seeds
    chosen = [v for v in variants(cfg.compare.mi_weights, finetuned=bool(adapter))
              if not cfg.compare.models or v.name in cfg.compare.models]
    grids = {v.name: [] if v.classical or _inherits(v, chosen) else tuning_grid(cfg.compare.grid, v.train["kind"])
             for v in chosen}
    total = sum(len(seeds) + max(len(grids[v.name]) - 1, 0) for v in chosen)
    rule = rule_from_config(cfg.evaluate)
    outputs: dict[tuple, tuple[np.ndarray, float]] = {}  # job key -> (probabilities, seconds)
    tunings: dict[str, dict] = {}
    rows: dict[str, dict] = {}  # row name -> its finished table row
    first_seed: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # row name -> (probabilities, thresholds)

    def seed_jobs(v: Variant, settings: dict) -> list[Job]:
        """The row's seed runs still to train (a tuned row's first seed is its chosen grid point)."""
        return [Job(v, settings, seed, None, chosen.index(v), f"{v.name}, seed {seed}")
                for k, seed in enumerate(seeds) if not (k == 0 and grids[v.name])]

    def finish_row(v: Variant) -> dict:
        """Thresholds on validation, test metrics per seed, the first seed's bootstrap and saved predictions."""
        runs = []
        for k, seed in enumerate(seeds):
            prob, seconds = outputs[(v.name, "seed", seed)]
            thresholds = tune_thresholds(data.y[val], prob[val], **rule)
            metrics = compute_metrics(data.y[test], prob[test], thresholds, data.label_names)
            runs.append({"seed": seed, "seconds": seconds, **headline(metrics)})
            if k == 0:
                first_seed[v.name] = (prob, thresholds)
                save_predictions(out / "models" / slug(v.name) / PREDICTIONS_FILE, data, prob, thresholds, (val, test))
                boot = evaluate_predictions(data.y[test], prob[test], thresholds, groups=data.subject_ids[test],
                                            label_names=data.label_names, n_resamples=cfg.compare.n_resamples,
                                            seed=0)["at_tuned_thresholds"]["bootstrap"]
        summary = {m: {"mean": float(np.mean([r[m] for r in runs])), "std": float(np.std([r[m] for r in runs]))}
                   for m in HEADLINE}
        return {"name": v.name, "group": v.group, "train": v.train, "classical": v.classical,
                "tuning": tunings.get(v.name), "runs": runs, "summary": summary,
                "bootstrap_seed0": {m: boot.get(m) for m in HEADLINE}}

    def on_done(job: Job, prob: np.ndarray, seconds: float) -> list[Job]:
        v, grid, new = job.variant, grids[job.variant.name], []
        outputs[job.key] = (prob, seconds)
        if job.tune is not None and all((v.name, "tune", i) in outputs for i in range(len(grid))):
            tuned = [outputs[(v.name, "tune", i)] for i in range(len(grid))]
            trials = [{"settings": trial, "val_macro_auprc": macro_auprc(data.y[val], p[val]), "seconds": secs}
                      for trial, (p, secs) in zip(grid, tuned)]
            best = int(np.argmax([t["val_macro_auprc"] for t in trials]))  # ties: the earlier trial
            settings = trials[best]["settings"]
            outputs[(v.name, "seed", seeds[0])] = outputs[(v.name, "tune", best)]  # trained with the first seed
            tunings[v.name] = {"settings": settings, "inherited_from": None, "trials": trials}
            new += seed_jobs(v, settings)
            if v.name == "MEDFuse":  # its ablations and lambda sweep reuse its choice
                for u in chosen:
                    if _inherits(u, chosen):
                        tunings[u.name] = {"settings": settings, "inherited_from": "MEDFuse", "trials": []}
                        new += seed_jobs(u, settings)
        if all((v.name, "seed", seed) in outputs for seed in seeds):
            rows[v.name] = finish_row(v)
        return new

    jobs = [Job(v, trial, seeds[0], i, chosen.index(v), f"{v.name}, tuning {i + 1}/{len(grids[v.name])}: "
                f"{settings_text(trial)}") for v in chosen for i, trial in enumerate(grids[v.name])]
    jobs += [j for v in chosen if v.classical for j in seed_jobs(v, {})]
    run_jobs(inputs, jobs, on_done, worker_count(cfg.compare.workers, resolve_device(cfg.train.device)), total,
             progress)
    results = [rows[v.name] for v in chosen]
    if "MEDFuse" in first_seed:
        from medfuse.evaluation.metrics import paired_bootstrap_difference

        p_med, t_med = first_seed["MEDFuse"]
        for r in results:
            if r["name"] != "MEDFuse":
                p_row, t_row = first_seed[r["name"]]
                r["vs_medfuse"] = paired_bootstrap_difference(
                    data.y[test], p_med[test], p_row[test], t_med, t_row, data.subject_ids[test],
                    n_resamples=cfg.compare.n_resamples, seed=0, label_names=data.label_names)
    table = {"cohort": str(cohort.path.resolve()), "split": "test", "seeds": seeds,
             "n_resamples": cfg.compare.n_resamples, "threshold_rule": rule, "grid": cfg.compare.grid,
             "models": results}
    (out / COMPARE_FILE).write_text(json.dumps(table, indent=2))
    (out / "compare.md").write_text(comparison_markdown(table))
    return table


def save_predictions(path: Path, data, prob: np.ndarray, thresholds: np.ndarray, splits: tuple) -> None:
    """The validation and test rows of one model as Parquet: ids, split, and per label prob / pred / true."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = np.concatenate(splits)
    columns = {"hadm_id": data.hadm_ids[rows], "subject_id": data.subject_ids[rows],
               "split": np.repeat(["val", "test"], [len(s) for s in splits])}
    for j, name in enumerate(data.label_names):
        columns[f"{name}__prob"] = prob[rows, j]
        columns[f"{name}__pred"] = prob[rows, j] >= thresholds[j]
        columns[f"{name}__true"] = data.y[rows, j].astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
